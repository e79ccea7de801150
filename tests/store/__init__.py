"""The hot store, rejects, quarantine, dead letters and the lake (src/convtrack/store)."""
