"""Forwarding to ad platforms and webhooks, with retries and dead letters."""
