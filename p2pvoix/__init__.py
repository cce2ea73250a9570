"""p2pvoix: live voice rooms with no server."""

__version__ = "0.1.0"
