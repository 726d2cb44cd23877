"""speaches: a self-hosted, OpenAI-API-compatible speech server."""

__version__ = "0.1.0"
