"""jukics.cli."""
