"""jukics.keystore."""
