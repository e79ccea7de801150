"""The ``convtrack`` command line."""
