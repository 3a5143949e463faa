"""Fake CosyVoice package for tests (see ../README.md)."""
