"""Ingest and its HTTP plumbing (src/convtrack/collect)."""
