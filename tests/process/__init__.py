"""The processor and its enrichers (src/convtrack/process)."""
