"""The REST API; version 1 lives under /api/v1."""
