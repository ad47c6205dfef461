"""jukics.backup."""
