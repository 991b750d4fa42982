"""The /api/v1 routes."""
