"""Model management: /v1/models, /api/ps, health."""
