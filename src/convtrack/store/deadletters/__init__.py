"""Dead letters: events a destination refused for good or gave up on, kept to be
replayed, and the in-flight markers of destinations that cannot deduplicate."""
