"""The collector: the HTTP API that takes events and makes them durable before answering."""
