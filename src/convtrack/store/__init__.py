"""Where processed and rejected events are kept: hot counters, the cold lake, rejects."""
