"""jukics.api."""
