"""Whole servers and crashes: real processes, killed and restarted, counts
reconciled (all marked slow)."""
