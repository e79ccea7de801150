"""The test doubles convtrack ships (src/convtrack/testing)."""
