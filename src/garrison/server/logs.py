"""Structured logs: one JSON object per line on stderr, through the standard `logging` module.

A formatter is all that is needed (python-json-logger would add a dependency for these twenty lines): every record
becomes {"ts", "level", "logger", "msg"} plus the fields passed with `extra={"fields": {...}}`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_STD_LEVEL = logging.INFO


class JsonFormatter(logging.Formatter):
    """Formats a LogRecord as one JSON line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 6),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_json_logging(level: int = _STD_LEVEL, stream: Any = None) -> None:
    """Route garrison's and uvicorn's loggers to one JSON-lines handler (idempotent)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.set_name("garrison-json")
    for name in ("garrison", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers = [h for h in logger.handlers if h.get_name() != "garrison-json"] + [handler]
        logger.setLevel(level)
        logger.propagate = False
    # garrison writes its own access line per request, with the tenant and latency; uvicorn's would duplicate it.
    logging.getLogger("uvicorn.access").disabled = True


def log_fields(logger: logging.Logger, level: int, msg: str, **fields: Any) -> None:
    """Log `msg` with structured `fields` (they become keys of the JSON line)."""
    if logger.isEnabledFor(level):
        logger.log(level, msg, extra={"fields": fields})
