"""Helpers shared by the im2rec drop-in tests (local and S3)."""
