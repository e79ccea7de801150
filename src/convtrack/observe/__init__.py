"""Metrics, structured logs and latency measurement."""
