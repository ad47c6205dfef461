"""Fixtures for tests/netns; the helpers live in firewall_lab.py (a unique module name, so the
tests can import them without clashing with other directories' conftest modules)."""

from firewall_lab import filters, lab

__all__ = ["filters", "lab"]
