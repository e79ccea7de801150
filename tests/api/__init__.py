"""The HTTP API around ingest (src/convtrack/api)."""
