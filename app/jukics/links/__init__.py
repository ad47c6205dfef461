"""jukics.links."""
