"""jukics.auth."""
