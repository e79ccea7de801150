"""Wiring, roles and health (src/convtrack/runtime)."""
