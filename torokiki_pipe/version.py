"""The gateway's version: the package metadata (setup.cfg) and the User-Agent read it here."""

__version__ = "0.1.0"
