"""The local Kafka, Redis and S3 servers (src/convtrack/devservices)."""
