"""Pure data and pure functions: events, validation, codes. No I/O here."""
