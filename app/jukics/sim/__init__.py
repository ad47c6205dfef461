"""jukics.sim."""
