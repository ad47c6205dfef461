"""jukics.certs."""
