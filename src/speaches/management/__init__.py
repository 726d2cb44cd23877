"""Model management and operations, one router per resource: /v1/models, /api/ps, /v1/registry, /health, /metrics."""
