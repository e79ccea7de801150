"""Wiring: the one place that picks backends and builds the running pipeline."""
