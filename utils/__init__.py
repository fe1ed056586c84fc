"""Shared helpers: user-facing errors, image I/O and resizing, run configuration."""
