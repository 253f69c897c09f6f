"""Append-only, hash-chained audit log of policy decisions, generations and verifications.

One JSON record per line. Each record holds its sequence number, time, event type, data, the hash of the previous
record and its own hash: ``hash = sha256(canonical JSON of {seq, ts, event, data, prev})``. Editing a record
changes its hash and breaks the next record's ``prev``; inserting or deleting a record breaks the sequence numbers
and the chain. Cutting records off the end leaves a valid shorter chain, so the head (last seq and hash) is also
written to ``<log>.head`` on every append: ``verify()`` checks the log reaches it. (An attacker who can rewrite
both files can rewrite history; ship the head to a second place -- the store, a log service -- to rule that out.)

Appends from several processes are serialised with an exclusive ``flock``.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GENESIS = "0" * 64


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def record_hash(seq: int, ts: str, event: str, data: dict[str, Any], prev: str) -> str:
    return hashlib.sha256(_canonical({"seq": seq, "ts": ts, "event": event, "data": data, "prev": prev})).hexdigest()


@dataclass
class AuditReport:
    """Result of checking the whole log."""

    ok: bool
    records: int
    head: str
    problems: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "records": self.records, "head": self.head, "problems": self.problems}


class AuditLog:
    """The audit log at `path` (created on first append)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.head_path = self.path.with_name(self.path.name + ".head")
        self.lock_path = self.path.with_name(self.path.name + ".lock")

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read_head(self) -> tuple[int, str]:
        if self.head_path.is_file():
            head = json.loads(self.head_path.read_text())
            return int(head["seq"]), str(head["hash"])
        return -1, GENESIS

    def append(self, event: str, data: dict[str, Any]) -> dict[str, Any]:
        """Add one record; returns it (with its hash)."""
        data = json.loads(_canonical(data))  # what is hashed is exactly what is stored
        with self._locked():
            last_seq, prev = self._read_head()
            seq = last_seq + 1
            ts = dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")
            record = {
                "seq": seq,
                "ts": ts,
                "event": event,
                "data": data,
                "prev": prev,
                "hash": record_hash(seq, ts, event, data, prev),
            }
            with open(self.path, "ab") as f:
                f.write(_canonical(record) + b"\n")
                f.flush()
                os.fsync(f.fileno())
            tmp = self.head_path.with_name(self.head_path.name + ".tmp")
            tmp.write_text(json.dumps({"seq": seq, "hash": record["hash"]}))
            os.replace(tmp, self.head_path)
        return record

    def records(self) -> Iterator[dict[str, Any]]:
        if not self.path.is_file():
            return
        with open(self.path, "rb") as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    yield {"_unparseable_line": line_no}

    def verify(self) -> AuditReport:
        """Walk the chain; report every record that was edited, inserted or deleted, and a cut-off tail."""
        problems: list[dict[str, Any]] = []
        prev, expected_seq, count = GENESIS, 0, 0
        for record in self.records():
            count += 1
            if "_unparseable_line" in record:
                problems.append({"line": record["_unparseable_line"], "problem": "not a JSON record"})
                continue
            seq = record.get("seq")
            if seq != expected_seq:
                problems.append(
                    {
                        "seq": seq,
                        "problem": f"sequence number {seq}, expected {expected_seq}: "
                        "a record was inserted or deleted here",
                    }
                )
            if record.get("prev") != prev:
                problems.append({"seq": seq, "problem": "prev does not match the previous record's hash"})
            recomputed = record_hash(
                seq, record.get("ts", ""), record.get("event", ""), record.get("data", {}), record.get("prev", "")
            )
            if recomputed != record.get("hash"):
                problems.append({"seq": seq, "problem": "hash does not match the record's content: edited"})
            prev = record.get("hash", "")
            expected_seq = (seq if isinstance(seq, int) else expected_seq) + 1
        head_seq, head_hash = self._read_head()
        if head_seq >= 0 and (head_seq != expected_seq - 1 or head_hash != prev):
            problems.append(
                {
                    "seq": head_seq,
                    "problem": f"log ends at seq {expected_seq - 1} but the head file "
                    f"records seq {head_seq}: records were removed or replaced",
                }
            )
        return AuditReport(ok=not problems, records=count, head=prev, problems=problems)
