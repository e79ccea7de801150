"""Delivery and each destination (src/convtrack/deliver)."""
