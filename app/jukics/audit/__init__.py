"""jukics.audit."""
