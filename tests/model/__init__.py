"""Pure data: validation, identifiers, money, Segment messages, tokens (src/convtrack/model)."""
