"""Rejected events, kept with their reasons for review."""
