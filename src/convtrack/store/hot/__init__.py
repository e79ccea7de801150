"""The hot store: live counters, sessions and the dedup set."""
