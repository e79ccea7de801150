"""The processor: consume the log, check, dedupe, enrich, route, commit."""
