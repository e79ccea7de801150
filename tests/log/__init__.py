"""The event and processed logs on SQLite and Kafka (src/convtrack/log)."""
