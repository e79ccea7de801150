"""convtrack: a self-hosted real-time conversion tracking pipeline."""

__version__ = "0.1.0"

__all__ = ["__version__"]
