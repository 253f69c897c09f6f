"""The serving worker: a process that pulls videos from the store's queue and generates them.

    python -m garrison.governor.executors.serving_worker --store URL --worker-id W --device cpu:0 --content-dir DIR

The loop, a handful of lines in `run_worker`: read the quality level the governor set, claim the oldest queued
video, generate it under an energy window at that rung of the ladder, watermark, encode and sign it, write
`<content_dir>/<video_id>.mp4` with a JPEG thumbnail and spritesheet, and complete it in the store with the energy
fields. While a video runs a heartbeat thread extends its lease and reports progress; when the store says the
worker no longer owns the video (cancelled, deleted, or requeued after the lease lapsed) generation stops early.

Nothing is lost when a worker dies: its lease lapses and `Store.recover_expired` requeues the video (or fails it
explicitly after too many attempts). Idle workers call it, so a fleet without a governor still heals itself.
Completion is fenced by the store (only the owner can complete), so no video completes twice.

Signals: the first SIGTERM or SIGINT finishes the current video and exits; a second one stops generation at the
next step, requeues the video and exits.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from garrison.core.fleet import QUALITY_LADDER, QualityLevel
from garrison.hardware.host_memory import release_freed_memory

log = logging.getLogger("garrison.worker")

# Files of a video in the content folder; names are made here from the video id only.
CONTENT_SUFFIXES: dict[str, str] = {"video": ".mp4", "thumbnail": ".thumbnail.jpg", "spritesheet": ".spritesheet.jpg"}
CONTENT_MEDIA_TYPES: dict[str, str] = {"video": "video/mp4", "thumbnail": "image/jpeg", "spritesheet": "image/jpeg"}
SPRITESHEET_FRAMES = 8
SPRITESHEET_COLUMNS = 4
SPRITESHEET_TILE_W = 160
JPEG_QUALITY = 85
PROGRESS_EVERY_S = 0.5
GENERATION_SHARE = 90  # progress 0..90 is denoising; encoding, signing and writing take it to 99


class Abandoned(Exception):
    """The worker stopped generating a video it no longer owns or was told to give back."""


def content_path(content_dir: str | Path, video_id: str, variant: str = "video") -> Path:
    """Where a video's file lives: `<content_dir>/<video_id><suffix>`, the suffix fixed by `variant`."""
    if variant not in CONTENT_SUFFIXES:
        raise ValueError(f"unknown content variant {variant!r}; use one of {', '.join(CONTENT_SUFFIXES)}")
    if "/" in video_id or "\\" in video_id or video_id.startswith("."):
        raise ValueError(f"not a video id: {video_id!r}")
    return Path(content_dir) / f"{video_id}{CONTENT_SUFFIXES[variant]}"


def default_content_dir() -> Path:
    """$GARRISON_HOME/content (GARRISON_HOME defaults to ~/.garrison)."""
    return Path(os.environ.get("GARRISON_HOME") or Path.home() / ".garrison") / "content"


def parse_size(size: str) -> tuple[int, int]:
    width, _, height = size.partition("x")
    return int(width), int(height)


def rung(level: Any) -> QualityLevel:
    """The quality ladder rung for a stored setting, clamped to the ladder (a bad setting must not stop serving)."""
    try:
        index = int(level)
    except (TypeError, ValueError):
        index = 0
    return QUALITY_LADDER[min(max(index, 0), len(QUALITY_LADDER) - 1)]


# --- the files ---------------------------------------------------------------------------------------------------


def _atomic_jpeg(image: Any, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        image.save(tmp, format="JPEG", quality=JPEG_QUALITY)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_previews(frames: np.ndarray, thumbnail: Path, spritesheet: Path) -> None:
    """A JPEG of the middle frame and a JPEG grid of frames spread over the clip, each written atomically."""
    from PIL import Image

    _atomic_jpeg(Image.fromarray(frames[len(frames) // 2]), thumbnail)
    picks = np.linspace(0, len(frames) - 1, SPRITESHEET_FRAMES).round().astype(int)
    height, width = frames.shape[1:3]
    tile_w = min(SPRITESHEET_TILE_W, width)
    tile_h = max(1, round(height * tile_w / width))
    rows = -(-SPRITESHEET_FRAMES // SPRITESHEET_COLUMNS)
    sheet = Image.new("RGB", (tile_w * SPRITESHEET_COLUMNS, tile_h * rows))
    for n, index in enumerate(picks):
        tile = Image.fromarray(frames[index]).resize((tile_w, tile_h), Image.Resampling.BILINEAR)
        sheet.paste(tile, ((n % SPRITESHEET_COLUMNS) * tile_w, (n // SPRITESHEET_COLUMNS) * tile_h))
    _atomic_jpeg(sheet, spritesheet)


@dataclass
class RenderedClip:
    """A generated, watermarked, signed clip at a temporary path, and what it took."""

    tmp_path: Path
    frames: np.ndarray
    provenance: dict[str, Any]
    energy: dict[str, Any]
    flops: float
    wall_s: float
    native_size: str
    scaled: bool
    model: str


def render_signed_clip(
    pipeline: Any,
    spec: Any,
    meter: Any,
    device: Any,
    out_dir: Path,
    request_id: str,
    progress: Callable[[int, int], None] | None = None,
) -> RenderedClip:
    """Generate `spec` under an energy window, watermark it, encode it as MP4 and sign it (the generate path).

    The MP4 is written to a temporary file in `out_dir`; the caller moves it into place. Raises what the pipeline,
    the encoder or the shield raise; the temporary file is removed then.
    """
    from garrison.energy.report import energy_fields
    from garrison.shield.verify import protect, sign_and_register
    from garrison.video.io import write_mp4

    window = f"video-{request_id}-{time.monotonic_ns()}"
    meter.begin_window(window)
    try:
        result = pipeline(spec, progress)
    finally:
        measurement = meter.end_window(window)
    protected = protect(result.clip.frames, result.clip.fps, spec.prompt, result.model, request_id)
    result.clip.frames = protected.frames
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{request_id}.", suffix=".mp4")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write_mp4(result.clip, tmp_path)
        provenance = sign_and_register(tmp_path, protected)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    dtype = "bf16" if getattr(pipeline, "bf16", False) else "fp32"
    return RenderedClip(
        tmp_path=tmp_path,
        frames=protected.frames,
        provenance=provenance,
        energy=energy_fields(measurement, result.flops, device, dtype=dtype),
        flops=float(result.flops),
        wall_s=result.wall_s,
        native_size=result.native_size,
        scaled=result.scaled,
        model=result.model,
    )


# --- one video ---------------------------------------------------------------------------------------------------


class _Heartbeat(threading.Thread):
    """Extends the lease and reports progress every `interval_s`; sets `lost` when the store says it is not ours."""

    def __init__(self, store: Any, video_id: str, worker_id: str, lease_s: float) -> None:
        super().__init__(name=f"heartbeat-{video_id}", daemon=True)
        self.store, self.video_id, self.worker_id, self.lease_s = store, video_id, worker_id, lease_s
        self.interval_s = max(0.05, min(lease_s / 3.0, 2.0))
        self.progress = 0
        self.lost = threading.Event()
        self.done = threading.Event()
        self._sent = -1

    def beat(self) -> bool:
        progress = self.progress
        try:
            owned = self.store.heartbeat(self.video_id, self.worker_id, progress, self.lease_s)
        except Exception:  # a transient database error: the lease has slack for the next beat
            log.warning("heartbeat of %s failed", self.video_id, exc_info=True)
            return True
        if not owned:
            self.lost.set()
        self._sent = progress
        return owned

    def run(self) -> None:
        last_s = time.monotonic()
        # Progress is reported at most every PROGRESS_EVERY_S; the lease is extended at least every interval_s.
        while not self.done.wait(min(PROGRESS_EVERY_S, self.interval_s)):
            if self._sent != self.progress or time.monotonic() - last_s >= self.interval_s:
                if not self.beat():
                    return
                last_s = time.monotonic()


class ServingWorker:
    """One worker's state: the store, the loaded pipeline, the meter, and its stop flags."""

    def __init__(
        self,
        store: Any,
        worker_id: str,
        device_id: str,
        content_dir: Path,
        pipeline: Any,
        *,
        lease_s: float = 30.0,
        stop: threading.Event | None = None,
        abort: threading.Event | None = None,
    ) -> None:
        from garrison.energy.meters import get_meter
        from garrison.hardware.devices import core_device, core_index, cpu_device

        self.store = store
        self.worker_id = worker_id
        self.device_id = device_id
        self.content_dir = Path(content_dir)
        self.pipeline = pipeline
        self.lease_s = lease_s
        self.stop = stop or threading.Event()
        self.abort = abort or threading.Event()  # give the current video back now
        # The built-in pipeline runs on the CPU. On a core slot ("core:N", the executor pins this process there) a
        # video is charged its own core's energy, as a GPU worker's would be its GPU's, not the whole machine's.
        core = core_index(device_id)
        self.meter = get_meter(cores=None if core is None else [core])
        # RAPL counts the package whatever the scope asked: its joules then describe the whole CPU
        self.device = core_device(core) if core is not None and self.meter.source == "estimate" else cpu_device()

    def process(self, video: Any, level: QualityLevel) -> bool:
        """Generate one claimed video; True when it completed. Failures are recorded, never raised."""
        from garrison.core.types import InvalidSpecError, VideoSpec
        from garrison.video.pipelines.builtin import check_spec

        try:
            width, height = parse_size(video.size)
            spec = VideoSpec(
                video.prompt,
                seconds=int(video.seconds),
                width=width,
                height=height,
                steps=level.steps_for(int(video.steps)),
                guidance=float(video.guidance),
                seed=int(video.seed),
                native_scale=level.native_scale,
            )
            check_spec(spec)
        except (InvalidSpecError, ValueError) as e:
            self.store.fail_video(video.id, self.worker_id, "invalid_request", f"cannot generate this request: {e}")
            return False

        heartbeat = _Heartbeat(self.store, video.id, self.worker_id, self.lease_s)
        heartbeat.start()

        def on_step(step: int, total: int) -> None:
            if heartbeat.lost.is_set():
                raise Abandoned("the store no longer gives this video to this worker")
            if self.abort.is_set():
                raise Abandoned("worker stopping")
            heartbeat.progress = min(GENERATION_SHARE, GENERATION_SHARE * step // max(total, 1))

        rendered: RenderedClip | None = None
        try:
            rendered = render_signed_clip(
                self.pipeline, spec, self.meter, self.device, self.content_dir, video.id, on_step
            )
            heartbeat.progress = 95
            thumbnail = content_path(self.content_dir, video.id, "thumbnail")
            write_previews(rendered.frames, thumbnail, content_path(self.content_dir, video.id, "spritesheet"))
            heartbeat.done.set()
            heartbeat.join()
            # Last fence before the file takes the final name: a worker whose lease lapsed must not overwrite the
            # file of the worker that now owns the video.
            if not heartbeat.beat():
                raise Abandoned("lost the video before writing it")
            final = content_path(self.content_dir, video.id, "video")
            os.replace(rendered.tmp_path, final)
            energy = rendered.energy
            completed = self.store.complete_video(
                video.id,
                self.worker_id,
                path=str(final),
                thumbnail_path=str(thumbnail),
                seconds_wall=rendered.wall_s,
                joules=energy["joules"],
                energy_source=energy["energy_source"],
                cost_usd=energy["cost_usd"],
                co2_g=energy["co2_g"],
                flops=rendered.flops,
                steps_used=spec.steps,
                native_size=rendered.native_size,
                scaled=rendered.scaled,
                provenance={
                    **rendered.provenance,
                    "model": rendered.model,
                    # what the joules cover: "cores N" (this slot's core), "machine", or the counter's own scope
                    "energy": {**_energy_summary(energy), "meter_scope": getattr(self.meter, "scope", None)},
                },
            )
            if not completed:
                self._discard_if_gone(video.id)
                log.warning("video %s was taken from this worker before completion; result discarded", video.id)
                return False
            log.info(
                "completed %s in %.2f s, %.1f J (%s)",
                video.id,
                rendered.wall_s,
                energy["joules"],
                energy["energy_source"],
            )
            return True
        except Abandoned as e:
            if not heartbeat.lost.is_set():  # we still own it: give it back to the queue
                self.store.requeue_video(video.id, f"{self.worker_id}: {e}")
            log.info("gave up %s: %s", video.id, e)
            return False
        except Exception as e:  # a generation error fails this video only; the worker goes on
            log.exception("generation of %s failed", video.id)
            self.store.fail_video(video.id, self.worker_id, "generation_error", f"{type(e).__name__}: {e}"[:500])
            return False
        finally:
            heartbeat.done.set()
            if rendered is not None:
                rendered.tmp_path.unlink(missing_ok=True)

    def _discard_if_gone(self, video_id: str) -> None:
        """Remove the files of a video that was deleted or cancelled while this worker made it."""
        from garrison.store import NotFound

        try:
            row = self.store.get_video(video_id)
        except NotFound:
            row = None
        if row is None or str(row.status) == "failed":
            for variant in CONTENT_SUFFIXES:
                content_path(self.content_dir, video_id, variant).unlink(missing_ok=True)


def _energy_summary(energy: dict[str, Any]) -> dict[str, Any]:
    keys = ("wh", "usd_per_kwh", "tariff", "g_co2_per_kwh", "region", "chip", "min_joules", "efficiency_vs_limit")
    return {k: energy.get(k) for k in keys}


ALIVE_EVERY_S = 2.0


def _report_alive(store: Any, worker_id: str, stop: threading.Event, abort: threading.Event) -> None:
    """Write `worker.<id>.seen` (unix seconds) every ALIVE_EVERY_S: the governor marks a worker that stops reporting
    (hung, stopped, partitioned from the store) as lost and requeues its work."""
    while not (stop.is_set() or abort.is_set()):
        try:
            store.set_setting(f"worker.{worker_id}.seen", time.time())
        except Exception as exc:  # a store hiccup must not kill the worker; the next beat retries
            log.warning("worker %s could not report alive: %s", worker_id, exc)
        abort.wait(ALIVE_EVERY_S)


def run_worker(
    store_url: str | None,
    worker_id: str,
    device_id: str,
    content_dir: Path,
    *,
    stop: threading.Event | None = None,
    lease_s: float = 30,
    poll_s: float = 0.2,
    max_videos: int | None = None,
    abort: threading.Event | None = None,
) -> int:
    """Serve videos from the store until `stop` is set (or `max_videos` completed); returns how many completed.

    Args:
        store_url: the store's SQLAlchemy URL, the database the server writes (None: GARRISON_DB_URL or the default).
        worker_id: this worker's name in the store (leases and the `worker.<id>.drain` setting).
        device_id: the device it generates on, recorded on each video ("cpu:0", or "core:N" on a core slot, whose
            energy is then metered on that core alone).
        content_dir: where the MP4s and previews go; created if missing.
        stop: set it to finish the current video and return.
        lease_s: how long a claim holds without a heartbeat.
        poll_s: how long to wait when the queue is empty.
        max_videos: return after this many completed videos (None: run until stopped).
        abort: set it to give the current video back to the queue at the next step and return.
    """
    from garrison.store import open_store
    from garrison.video.pipelines.builtin import BuiltinPipeline

    stop = stop or threading.Event()
    abort = abort or threading.Event()
    content_dir = Path(content_dir)
    content_dir.mkdir(parents=True, exist_ok=True)
    store = open_store(store_url)
    alive = threading.Thread(target=_report_alive, args=(store, worker_id, stop, abort), daemon=True)
    alive.start()  # before the model loads: the governor knows the worker is up from its first seconds
    worker = ServingWorker(
        store, worker_id, device_id, content_dir, BuiltinPipeline.load(), lease_s=lease_s, stop=stop, abort=abort
    )
    completed = 0
    last_recover_s = 0.0
    idle = False
    log.info("worker %s serving on %s, content in %s", worker_id, device_id, content_dir)
    while not stop.is_set() and not abort.is_set() and (max_videos is None or completed < max_videos):
        if store.get_setting(f"worker.{worker_id}.drain", False):  # the governor is reclaiming this device
            stop.wait(poll_s)
            continue
        if store.get_setting("admission.mode", "open") != "open":  # the power cap: finish what runs, start nothing
            stop.wait(poll_s)
            continue
        level = rung(store.get_setting("serving.quality_level", 0))
        video = store.claim_video(worker_id, device_id, lease_s, level.level)
        if video is None:
            if not idle:  # just went idle: give the OS back what loading or the last video freed
                release_freed_memory()
                idle = True
            if time.monotonic() - last_recover_s >= lease_s / 2:
                for video_id, outcome in store.recover_expired():
                    log.warning("video %s of a lost worker: %s", video_id, outcome)
                last_recover_s = time.monotonic()
            stop.wait(poll_s)
            continue
        idle = False
        completed += worker.process(video, level)
    log.info("worker %s stopping after %d videos", worker_id, completed)
    return completed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="garrison serving worker: pulls videos from the store's queue.")
    parser.add_argument("--store", default=None, help="Store URL (default: GARRISON_DB_URL or the embedded SQLite).")
    parser.add_argument("--worker-id", required=True)
    parser.add_argument("--device", default="cpu:0")
    parser.add_argument("--content-dir", type=Path, default=None, help="Default: $GARRISON_HOME/content.")
    parser.add_argument("--lease-s", type=float, default=30.0)
    parser.add_argument("--poll-s", type=float, default=0.2)
    parser.add_argument("--max-videos", type=int, default=None)
    args = parser.parse_args(argv)
    if args.lease_s <= 0 or args.poll_s <= 0:
        parser.error("--lease-s and --poll-s must be positive")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if os.environ.get("GARRISON_TORCH_THREADS"):  # the executor pins this worker to its device's cores
        import torch

        torch.set_num_threads(int(os.environ["GARRISON_TORCH_THREADS"]))

    stop, abort = threading.Event(), threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        # First signal: finish the current video. Second: give it back now.
        (abort if stop.is_set() else stop).set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    run_worker(
        args.store,
        args.worker_id,
        args.device,
        args.content_dir or default_content_dir(),
        stop=stop,
        abort=abort,
        lease_s=args.lease_s,
        poll_s=args.poll_s,
        max_videos=args.max_videos,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
