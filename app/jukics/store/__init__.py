"""jukics.store."""
