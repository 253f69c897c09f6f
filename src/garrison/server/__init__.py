"""FastAPI service (see issue: the service)."""
