"""Provenance registry: watermark id and perceptual fingerprint of every output -> the request that made it.

A re-encode strips the C2PA manifest but keeps the watermark, so `verify` finds the originating request by the
watermark's 64-bit id; when even the watermark is unreadable, a perceptual fingerprint of the video (robust to
re-encoding and rescaling) is the fallback. SQLite through SQLAlchemy 2.x by default; any SQLAlchemy URL works.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import BigInteger, DateTime, Integer, String, create_engine, select
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

FINGERPRINT_BITS = 128
# Hamming distance (of 128 bits) under which two fingerprints are the same video. Re-encoding at CRF 28 or a 0.5x
# downscale moves a fingerprint by a few bits; most pairs of different clips of this project's world differ by 20
# or more, but near-identical prompts make near-identical clips, so a match must also be unambiguous.
FINGERPRINT_MATCH_BITS = 8
FINGERPRINT_MARGIN_BITS = 4
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


class _Base(DeclarativeBase):
    pass


class ProvenanceRecord(_Base):
    """One generated output."""

    __tablename__ = "shield_provenance"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(128), index=True)
    watermark_payload: Mapped[str] = mapped_column(String(16), index=True)  # 16 hex digits
    fingerprint: Mapped[str] = mapped_column(String(FINGERPRINT_BITS // 4))  # hex
    fingerprint_hi: Mapped[int] = mapped_column(BigInteger)  # signed 64-bit halves, for future SQL-side search
    fingerprint_lo: Mapped[int] = mapped_column(BigInteger)
    model: Mapped[str] = mapped_column(String(128))
    prompt_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


@dataclass(frozen=True)
class FingerprintNeighbours:
    """Registered clips within FINGERPRINT_MATCH_BITS + FINGERPRINT_MARGIN_BITS of a fingerprint, nearest first:
    (distance, record id, request id, watermark id). Farther ones decide nothing: a match must be within
    FINGERPRINT_MATCH_BITS and lead any other request by FINGERPRINT_MARGIN_BITS."""

    near: list[tuple[int, int, str, int]]

    def payloads(self, max_distance: int = FINGERPRINT_MATCH_BITS, limit: int = 16) -> list[int]:
        """Watermark ids within `max_distance`, nearest first, each once, at most `limit`."""
        ids = (payload for d, _, _, payload in self.near if d <= max_distance)
        return list(dict.fromkeys(ids))[:limit]

    def unambiguous_match(self) -> tuple[str | None, int | None]:
        """The nearest clip's request and distance, if within FINGERPRINT_MATCH_BITS and FINGERPRINT_MARGIN_BITS
        nearer than any clip of another request; else (None, None)."""
        if not self.near or self.near[0][0] > FINGERPRINT_MATCH_BITS:
            return None, None
        distance, _, request_id, _ = self.near[0]
        runner_up = next((d for d, _, other, _ in self.near if other != request_id), None)
        if runner_up is not None and runner_up - distance < FINGERPRINT_MARGIN_BITS:
            return None, None
        return request_id, distance


@dataclass(frozen=True)
class RegistryMatch:
    match: bool
    request_id: str | None = None
    by: str | None = None  # "watermark" | "fingerprint"
    distance_bits: int | None = None

    def to_dict(self) -> dict[str, object]:
        return {"match": self.match, "request_id": self.request_id, "by": self.by}


def _resample(n_in: int, n_out: int) -> np.ndarray:
    edges = np.linspace(0, n_in, n_out + 1)
    px = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(edges[1:, None], px + 1) - np.maximum(edges[:-1, None], px), 0, None)
    return (overlap / overlap.sum(1, keepdims=True)).astype(np.float32)


def fingerprint(frames: np.ndarray, max_frames: int = 32) -> str:
    """128-bit perceptual fingerprint of uint8 RGB frames (T, H, W, 3), as 32 hex digits.

    Bits 0-63: the time-averaged luma at 8x8, each cell compared with the image mean (where the scene is bright,
    and the path the moving object swept). Bits 64-127: four time segments x a 4x4 grid of mean luma, each compared
    with the mean over all of them (where things are, and when). Both are computed in normalised coordinates, so
    the fingerprint survives rescaling and re-encoding; thresholds at the mean keep the bits balanced on the flat
    scenes of the built-in world, where gradient hashes are all zeros.
    """
    if frames.ndim != 4 or frames.shape[0] == 0:
        raise ValueError(f"frames must be (T, H, W, 3) with T >= 1, got {frames.shape}")
    t = frames.shape[0]
    idx = np.unique(np.linspace(0, t - 1, min(t, max_frames)).round().astype(np.int64))
    luma = frames[idx].astype(np.float32) @ _LUMA
    h, w = luma.shape[1:]
    mean_image = (_resample(h, 8) @ luma @ _resample(w, 8).T).mean(0)
    spatial = mean_image > mean_image.mean()
    grid = _resample(h, 4) @ luma @ _resample(w, 4).T  # (T', 4, 4)
    segments = np.array_split(np.arange(len(idx)), 4)
    seg = np.stack([grid[s].mean(0) if len(s) else grid.mean(0) for s in segments]).reshape(-1)
    temporal = seg > seg.mean()
    bits = np.concatenate([spatial.reshape(-1), temporal]).astype(np.uint8)
    return f"{int(''.join(map(str, bits)), 2):032x}"


def hamming_bits(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


def _signed64(x: int) -> int:
    return x - (1 << 64) if x >= 1 << 63 else x


def default_registry_url(home: Path) -> str:
    return f"sqlite:///{home / 'registry.sqlite'}"


class Registry:
    """The provenance registry behind `garrison verify`.

    Args:
        url: a SQLAlchemy URL, or a filesystem path for SQLite.
    """

    def __init__(self, url: str | Path) -> None:
        url = str(url)
        if "://" not in url:
            Path(url).parent.mkdir(parents=True, exist_ok=True)
            url = f"sqlite:///{url}"
        self.engine = create_engine(url)
        try:
            _Base.metadata.create_all(self.engine)
        except (OperationalError, ProgrammingError, IntegrityError):
            # Two processes opening a new registry at once (two serving workers' first videos): both saw no table,
            # one created it first, and the other's CREATE TABLE failed ("table ... already exists"). The check is
            # repeated once; it now finds the tables. A second failure is a real error.
            _Base.metadata.create_all(self.engine)

    def register(
        self, request_id: str, watermark_payload: str, fingerprint_hex: str, model: str, prompt_sha256: str
    ) -> int:
        """Record one output; returns its row id."""
        value = int(fingerprint_hex, 16)
        record = ProvenanceRecord(
            request_id=request_id,
            watermark_payload=watermark_payload.lower(),
            fingerprint=fingerprint_hex,
            fingerprint_hi=_signed64(value >> 64),
            fingerprint_lo=_signed64(value & ((1 << 64) - 1)),
            model=model,
            prompt_sha256=prompt_sha256,
            created_at=dt.datetime.now(dt.UTC),
        )
        with Session(self.engine) as session, session.begin():
            session.add(record)
            session.flush()
            return int(record.id)

    def by_watermark(self, payload_hex: str) -> ProvenanceRecord | None:
        with Session(self.engine) as session:
            stmt = select(ProvenanceRecord).where(ProvenanceRecord.watermark_payload == payload_hex.lower())
            return session.scalars(stmt.order_by(ProvenanceRecord.id.desc())).first()

    def neighbours(self, fingerprint_hex: str) -> FingerprintNeighbours:
        """The registered clips whose fingerprint is near this one, from one linear scan of (id, fingerprint,
        request, watermark id) columns (fine to ~10^6 outputs): what `lookup` and the watermark's shortlist
        (`watermark.fit_registry`) both need, so `garrison verify` scans once."""
        reach = FINGERPRINT_MATCH_BITS + FINGERPRINT_MARGIN_BITS
        near: list[tuple[int, int, str, int]] = []
        columns = select(
            ProvenanceRecord.id,
            ProvenanceRecord.fingerprint,
            ProvenanceRecord.request_id,
            ProvenanceRecord.watermark_payload,
        )
        with Session(self.engine) as session:
            for record_id, fp, request_id, payload_hex in session.execute(columns):
                d = hamming_bits(fp, fingerprint_hex)
                if d < reach:
                    near.append((d, int(record_id), request_id, int(payload_hex, 16)))
        near.sort()
        return FingerprintNeighbours(near)

    def nearest_payloads(
        self, fingerprint_hex: str, max_distance: int = FINGERPRINT_MATCH_BITS, limit: int = 16
    ) -> list[int]:
        """The watermark ids of the registered clips whose fingerprint is within `max_distance` bits of this one,
        nearest first, at most `limit` (the shortlist of `watermark.fit_registry`)."""
        return self.neighbours(fingerprint_hex).payloads(max_distance, limit)

    def payloads(self, batch: int = 65536) -> Iterator[int]:
        """Every registered watermark id, as ints, streamed in id order (for `watermark.match_payload`)."""
        last = 0
        with Session(self.engine) as session:
            while True:
                rows = session.execute(
                    select(ProvenanceRecord.id, ProvenanceRecord.watermark_payload)
                    .where(ProvenanceRecord.id > last)
                    .order_by(ProvenanceRecord.id)
                    .limit(batch)
                ).all()
                if not rows:
                    return
                for _, payload_hex in rows:
                    yield int(payload_hex, 16)
                last = rows[-1][0]

    def lookup(
        self,
        watermark_payload: str | None,
        fingerprint_hex: str | None,
        neighbours: FingerprintNeighbours | None = None,
    ) -> RegistryMatch:
        """Find the originating request: by watermark id first, then by fingerprint (from `neighbours`, when the
        caller has already scanned for this fingerprint)."""
        if watermark_payload:
            record = self.by_watermark(watermark_payload)
            if record is not None:
                return RegistryMatch(True, record.request_id, "watermark", None)
        if fingerprint_hex:
            near = neighbours if neighbours is not None else self.neighbours(fingerprint_hex)
            request_id, distance = near.unambiguous_match()
            if request_id is not None:
                return RegistryMatch(True, request_id, "fingerprint", distance)
        return RegistryMatch(False)

    def count(self) -> int:
        with Session(self.engine) as session:
            return len(session.scalars(select(ProvenanceRecord.id)).all())
