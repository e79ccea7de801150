"""The Python SDK's units (sdk/python)."""
