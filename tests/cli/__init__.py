"""The convtrack command (src/convtrack/cli)."""
