"""The store's exceptions. Bad arguments raise ValueError (the caller's input); these are about the data."""

from __future__ import annotations


class StoreError(Exception):
    """The store cannot do what was asked: the database is unreachable, locked too long, or of a newer schema."""


class NotFound(StoreError, LookupError):
    """No such row (or not visible to the tenant asking, or deleted)."""


class Conflict(StoreError):
    """The request contradicts what is stored: a duplicate name, an idempotency key reused with other parameters."""
