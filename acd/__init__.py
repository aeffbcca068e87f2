"""Automatic call distribution (issue 3)."""
