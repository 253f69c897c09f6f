"""Durable state: tenants, the video request queue, training jobs, the governor's decisions, samples, settings and
events (SQLAlchemy; SQLite by default, PostgreSQL for shared deployments; Alembic migrations run on open).

    from garrison.store import open_store
    store = open_store()            # $GARRISON_DB_URL, else sqlite:///$GARRISON_HOME/garrison.db
"""

from garrison.store.errors import Conflict, NotFound, StoreError
from garrison.store.rows import Decision, Event, Job, QueueStats, Sample, Tenant, Usage, Video
from garrison.store.store import CANCELLED, UNSET, WORKER_LOST, Store, default_url, open_store

__all__ = [
    "CANCELLED",
    "UNSET",
    "WORKER_LOST",
    "Conflict",
    "Decision",
    "Event",
    "Job",
    "NotFound",
    "QueueStats",
    "Sample",
    "Store",
    "StoreError",
    "Tenant",
    "Usage",
    "Video",
    "default_url",
    "open_store",
]
