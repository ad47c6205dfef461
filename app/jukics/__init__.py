"""jukics: the municipal CS appliance service (市町村CS)."""

__version__ = "0.1.0"
