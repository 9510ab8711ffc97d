"""Editing over inversions: edit, interpolate, attention injection, and editing recipes."""
