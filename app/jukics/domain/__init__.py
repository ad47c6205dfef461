"""jukics.domain."""
