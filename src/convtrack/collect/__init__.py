"""The collector: ingest, which takes events and makes them durable before answering,
and the HTTP plumbing it runs on (requests, keys, CORS, connection guards)."""
