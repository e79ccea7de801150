"""The durable event log between the collector and every later stage."""
