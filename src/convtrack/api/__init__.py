"""The HTTP API around ingest: the ASGI app and its routing, one module per resource
(stats, reports, attribution, rejects, dead letters, quarantine, conversion tokens,
the lake flush), the landing page and the OpenAPI document."""
