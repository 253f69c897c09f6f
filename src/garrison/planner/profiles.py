"""Cost profiles: how long one generation takes on one chip and how many joules it draws.

`CostProfile.predict(model, chip, batch, width, height, frames, steps)` answers from measurements:

- Open models (Wan 2.1 1.3B and 14B, CogVideoX 2B and 1.5 5B, HunyuanVideo) on H100 and B200: the ML.ENERGY
  Leaderboard v3 text-to-video runs (shared/data/mlenergy_text_to_video.csv, from ml-energy/leaderboard,
  `public/data/tasks/text-to-video.json`), one GPU per video. Batch latency is fitted as `overhead_s + per_video_s *
  batch` by least squares per (model, chip); those runs show batching buys no throughput (latency grows linearly),
  so a batch of b takes b times one video. Energy is the runs' mean joules per video; power their mean watts.
- garrison's built-in model on a CPU core slot (`cpu-core`): docs/measurements.md (0.30 s for a 2 s 64x64 clip,
  0.68 s for a 4 s 112x64 clip, 12 steps, two threads), or a `garrison demo` run's measured videos
  (`calibrate_builtin`), which supersede them. On an H100 (`h100-sxm`): NVML runs on a lent H100
  (`builtin_h100_from_docs`), where a step costs the same at every clip size.
- Wan 2.1 1.3B as garrison serves it (`wan2.1-1.3b-garrison`, stock diffusers through garrison's backend) on an H100:
  garrison's own measurement (`garrison_wan_h100`), 31% faster and 30% fewer joules than ML.ENERGY's older run of
  the same clip.

Interpolation off the measured points: time and energy scale linearly in denoising steps and in pixels x frames
(the DiT's token count; attention makes the true growth somewhat faster, so longer or larger clips than measured
are under-predicted). A point may say that part of each step does not grow with the pixels
(`step_overhead_fraction`, measured for the built-in model on a CPU core: a step of that small model pays Python and
small-tensor overheads whatever its size, so a 0.5x native size saves far less than three quarters of a step;
`benchmarks/builtin_rung_cost.py`): a step then costs `f + (1 - f) x pixels / reference pixels` of a reference step. Chips without measurements are scaled from the nearest measured chip (H100 SXM for the
open models) by peak FLOP/s (time) and by peak FLOP per joule (energy). Custom chips follow from their base chip.

The errors, computed from the data when the table loads (`fit_errors()`): leave-one-batch-out on the batch fit, and
the cross-chip step (H100 -> B200 by FLOP/s ratio against the B200 measurements). Hand-written: a least-squares
line per group is a few lines of numpy; no library fits this particular table.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from garrison.core.fleet import QUALITY_LADDER
from garrison.hardware.catalog import Chip

MLENERGY_CSV = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "mlenergy_text_to_video.csv"
MLENERGY_CSV_ENV = "GARRISON_MLENERGY_CSV"
MLENERGY_CHIP_KEYS = {"H100": "h100-sxm", "B200": "b200"}
MODEL_KEYS = {
    "Wan 2.1 1.3B": "wan2.1-1.3b",
    "Wan 2.1 14B": "wan2.1-14b",
    "CogVideoX 2B": "cogvideox-2b",
    "CogVideoX 1.5 5B": "cogvideox1.5-5b",
    "HunyuanVideo": "hunyuanvideo",
}
BUILTIN_MODEL = "builtin"
CPU_CHIP = "cpu-core"


class ProfileError(ValueError):
    """A (model, chip) pair with no measurement to stand on, or a request the profile cannot price."""


@dataclass(frozen=True)
class MeasuredPoint:
    """What one (model, chip) pair was measured to do at its reference clip.

    Attributes:
        model: model key ("wan2.1-1.3b").
        chip: catalog key of the measured chip.
        width, height, frames, steps: the reference clip.
        fps: the model's native frame rate (frames per clip second).
        per_video_s: device-seconds per video (slope of batch latency).
        overhead_s: fixed seconds per batch.
        joules_per_video: measured joules per video.
        power_w: mean device power while generating.
        loo_error: mean relative error of leave-one-batch-out prediction of batch latency (NaN with < 3 batches).
        source: where the numbers come from.
        joules_include_overhead: whether joules_per_video already holds the fixed overhead's energy.
        step_overhead_fraction: the share of a reference-size denoising step that does not scale with pixels x
            frames (0: all of it does).
    """

    model: str
    chip: str
    width: int
    height: int
    frames: int
    steps: int
    fps: float
    per_video_s: float
    overhead_s: float
    joules_per_video: float
    power_w: float
    loo_error: float
    source: str
    joules_include_overhead: bool = True
    step_overhead_fraction: float = 0.0

    def work(self, width: float, height: float, frames: float, steps: float) -> float:
        """A clip's denoising work relative to the reference clip: steps x (the fixed share of a step + the share
        that grows with pixels x frames)."""
        f = self.step_overhead_fraction
        pixels = (width * height * frames) / (self.width * self.height * self.frames)
        return steps / self.steps * (f + (1.0 - f) * pixels)


def _fit_line(batches: np.ndarray, latency_s: np.ndarray) -> tuple[float, float]:
    """overhead, slope of latency = overhead + slope * batch (overhead clipped at 0)."""
    if len(batches) >= 2 and np.ptp(batches) > 0:
        design = np.stack([np.ones_like(batches), batches], axis=1)
        (overhead, slope), *_ = np.linalg.lstsq(design, latency_s, rcond=None)
        if overhead >= 0 and slope > 0:
            return float(overhead), float(slope)
    return 0.0, float(latency_s.sum() / batches.sum())


def _loo_error(batches: np.ndarray, latency_s: np.ndarray) -> float:
    if len(batches) < 3:
        return math.nan
    errors = []
    for i in range(len(batches)):
        keep = np.arange(len(batches)) != i
        overhead, slope = _fit_line(batches[keep], latency_s[keep])
        errors.append(abs(overhead + slope * batches[i] - latency_s[i]) / latency_s[i])
    return float(np.mean(errors))


def mlenergy_csv_path() -> Path:
    import os

    return Path(os.environ.get(MLENERGY_CSV_ENV) or MLENERGY_CSV)


@lru_cache(maxsize=4)
def load_mlenergy(path: Path | None = None) -> tuple[MeasuredPoint, ...]:
    """The single-GPU ML.ENERGY runs, fitted per (model, chip). Empty when the CSV is not beside this checkout."""
    path = path or mlenergy_csv_path()
    if not path.is_file():
        return ()
    groups: dict[tuple[str, str], list[dict[str, str]]] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            if (
                row["num_gpus"] != "1"
                or row["nickname"] not in MODEL_KEYS
                or row["gpu_model"] not in MLENERGY_CHIP_KEYS
            ):
                continue
            groups.setdefault((MODEL_KEYS[row["nickname"]], MLENERGY_CHIP_KEYS[row["gpu_model"]]), []).append(row)
    points = []
    for (model, chip), rows in sorted(groups.items()):
        batches = np.array([float(r["batch_size"]) for r in rows])
        latency = np.array([float(r["batch_latency_s"]) for r in rows])
        overhead, slope = _fit_line(batches, latency)
        first = rows[0]
        points.append(
            MeasuredPoint(
                model=model,
                chip=chip,
                width=int(first["video_width"]),
                height=int(first["video_height"]),
                frames=int(first["num_frames"]),
                steps=int(first["inference_steps"]),
                fps=float(first["fps"]),
                per_video_s=slope,
                overhead_s=overhead,
                joules_per_video=float(np.mean([float(r["energy_per_video_joules"]) for r in rows])),
                power_w=float(np.mean([float(r["avg_power_watts"]) for r in rows])),
                loo_error=_loo_error(batches, latency),
                source=f"ML.ENERGY Leaderboard v3 text-to-video, {len(rows)} single-GPU runs ({path.name})",
            )
        )
    return tuple(points)


# Wan 2.1 1.3B as garrison serves it (stock diffusers 0.42.1, torch 2.11: its SDPA runs cuDNN attention), measured on
# a lent H100 (docs/measurements.md, "Open models through diffusers", 2026-11-27; docs/gpu-2026-11-27/wan.json):
# 832x480, 81 frames, 50 steps, guidance 5, batch 1, text encoding and VAE decode included; NVML joules.
GARRISON_WAN_MODEL = "wan2.1-1.3b-garrison"
GARRISON_WAN_H100 = {"seconds": 65.664, "joules": 45565.342, "step_s": 1.2648}


def garrison_wan_h100() -> MeasuredPoint:
    """garrison's own stack on an H100, beside ML.ENERGY's `wan2.1-1.3b` (95.4 s, 64.7 kJ for the same clip, an
    older harness): a scenario that plans for garrison's serving path names this model. One run, batch 1, so no
    batch fit: the whole video is `per_video_s` and `loo_error` is NaN."""
    m = GARRISON_WAN_H100
    return MeasuredPoint(
        model=GARRISON_WAN_MODEL,
        chip="h100-sxm",
        width=832,
        height=480,
        frames=81,
        steps=50,
        fps=16.0,
        per_video_s=m["seconds"],
        overhead_s=0.0,
        joules_per_video=m["joules"],
        power_w=m["joules"] / m["seconds"],
        loo_error=math.nan,
        source="garrison's diffusers backend on a lent H100, 2026-11-27 (docs/gpu-2026-11-27/wan.json, stock mode)",
    )


# docs/measurements.md, "The built-in model (CPU)": 2 s 64x64 in 0.30 s, 4 s 112x64 in 0.68 s, 12 steps, 2 threads.
# One core slot has one of the two threads, so a slot takes twice as long (calibrate_builtin replaces this with a
# demo run's own measurements). Power: the estimate meter's 5.6 W active per core (CpuPowerModel).
BUILTIN_FPS = 8.0
_BUILTIN_POINTS = ((2 * 8 * 64 * 64 * 12, 0.30 * 2), (4 * 8 * 112 * 64 * 12, 0.68 * 2))
BUILTIN_ACTIVE_W_PER_CORE = 5.6
BUILTIN_IDLE_W_PER_CORE = 1.7
# The share of a 64x64 (16-frame) denoising step of the built-in model that does not shrink with the native size:
# benchmarks/builtin_rung_cost.py, 2026-11-26, 2-core AMD EPYC VM, one pinned core, one thread, process CPU time
# (seconds = steps x (0.0127 + 0.0171 x native_scale^2), fixed part -0.002 s): every rung of the ladder within 5% of
# its measured ratio to rung 0, where steps x pixels alone put the 0.5x rung at 0.042 of rung 0 against 0.088
# measured.
BUILTIN_STEP_OVERHEAD_FRACTION = 0.426


def _builtin_point(
    per_work_s: float,
    overhead_s: float,
    power_w: float,
    source: str,
    step_overhead_fraction: float = 0.0,
) -> MeasuredPoint:
    ref_work = 2 * 8 * 64 * 64 * 12
    per_video_s = per_work_s * ref_work  # the part that scales with the clip; overhead_s is fixed per request
    return MeasuredPoint(
        model=BUILTIN_MODEL,
        chip=CPU_CHIP,
        width=64,
        height=64,
        frames=16,
        steps=12,
        fps=BUILTIN_FPS,
        per_video_s=per_video_s,
        overhead_s=overhead_s,
        joules_per_video=per_video_s * power_w,
        power_w=power_w,
        loo_error=math.nan,
        source=source,
        joules_include_overhead=False,
        step_overhead_fraction=step_overhead_fraction,
    )


def builtin_from_docs() -> MeasuredPoint:
    """The 2 s 64x64 clip as the reference; with the measured per-step overhead (BUILTIN_STEP_OVERHEAD_FRACTION) it
    predicts the 4 s 112x64 clip at 1.46 s against the measured 1.36 s (7% over; scaling every step with pixels x
    frames put it at 2.10 s, 54% over)."""
    (w1, s1), _ = _BUILTIN_POINTS
    return _builtin_point(
        s1 / w1,
        0.0,
        BUILTIN_ACTIVE_W_PER_CORE,
        "docs/measurements.md (built-in model, CPU)",
        BUILTIN_STEP_OVERHEAD_FRACTION,
    )


# The built-in model on one H100 (docs/measurements.md, "NVML on a lent H100 again", 2026-11-27): (clip seconds, width,
# height, steps) -> (seconds per video, NVML joules per video), each the mean of 5 videos at guidance 3.
BUILTIN_H100_RUNS = {
    (2, 64, 64, 24): (0.3191, 41.78),
    (4, 112, 64, 24): (0.2961, 39.87),
    (12, 112, 64, 24): (0.3305, 43.98),
    (4, 112, 64, 12): (0.1792, 23.58),
}


def builtin_h100_from_docs() -> MeasuredPoint:
    """The built-in model on an H100: a step costs the same whatever the clip (0.30-0.33 s at 24 steps from 2 s
    64x64 to 12 s 112x64: a few small kernels bound by their launches), so the point's step is all fixed share
    (`step_overhead_fraction` 1); time and joules are least-squares lines in steps over the measured runs.
    Scaling this model's GPU cost by FLOPs, as the planner does for a chip with no measurement, would put a 2 s clip
    at microseconds."""
    steps = np.array([k[3] for k in BUILTIN_H100_RUNS], dtype=float)
    seconds = np.array([v[0] for v in BUILTIN_H100_RUNS.values()])
    joules = np.array([v[1] for v in BUILTIN_H100_RUNS.values()])
    s_per_step, overhead_s = np.polyfit(steps, seconds, 1)
    j_per_step, _ = np.polyfit(steps, joules, 1)
    power_w = float(joules.sum() / seconds.sum())
    return MeasuredPoint(
        model=BUILTIN_MODEL,
        chip="h100-sxm",
        width=64,
        height=64,
        frames=16,
        steps=12,
        fps=BUILTIN_FPS,
        per_video_s=float(s_per_step * 12),
        overhead_s=float(overhead_s),
        joules_per_video=float(j_per_step * 12),
        power_w=power_w,
        loo_error=math.nan,
        source="docs/measurements.md (built-in model, NVML on an H100, 2026-11-27)",
        joules_include_overhead=False,
        step_overhead_fraction=1.0,
    )


def calibrate_builtin(
    work_and_seconds: list[tuple[float, float]], power_w: float, source: str, step_overhead_fraction: float = 0.0
) -> MeasuredPoint:
    """A built-in-model point from measured (pixels x frames x steps, seconds) pairs, e.g. a demo run's videos.

    The pairs' work is taken as pixels x frames x steps at the reference size; `step_overhead_fraction` is stored on
    the point for predictions at other sizes (it changes nothing among clips of the reference size)."""
    if not work_and_seconds:
        raise ProfileError("calibrate_builtin needs at least one measured video")
    work = np.array([w for w, _ in work_and_seconds], dtype=float)
    seconds = np.array([s for _, s in work_and_seconds], dtype=float)
    overhead, slope = _fit_line(work, seconds)
    return _builtin_point(slope, overhead, power_w, source, step_overhead_fraction)


@dataclass(frozen=True)
class Prediction:
    """One generation's predicted cost on one device: seconds, joules, and the device's power while it runs.

    `fixed_s` is the part of `seconds` that does not scale with the clip (the point's per-batch overhead: text
    encoding, watermarking, encoding, signing for the built-in model): a quality rung with fewer steps or a smaller
    native size shortens only `seconds - fixed_s`.
    """

    seconds: float
    joules: float
    power_w: float
    basis: str
    fixed_s: float = 0.0


class CostProfile:
    """Predicts latency and energy of a generation from measured points (see the module docstring)."""

    def __init__(self, points: tuple[MeasuredPoint, ...] | None = None, catalog: dict[str, Chip] | None = None):
        from garrison.hardware.catalog import load_catalog

        self.points = {(p.model, p.chip): p for p in (points if points is not None else default_points())}
        self.catalog = catalog if catalog is not None else load_catalog()

    @property
    def models(self) -> list[str]:
        return sorted({m for m, _ in self.points})

    def with_point(self, point: MeasuredPoint) -> CostProfile:
        return CostProfile(tuple({**self.points, (point.model, point.chip): point}.values()), self.catalog)

    def _reference(self, model: str, chip: str) -> tuple[MeasuredPoint, float, float, str]:
        """The measured point to scale from, and the time and energy factors for `chip`."""
        if (model, chip) in self.points:
            p = self.points[(model, chip)]
            return p, 1.0, 1.0, f"measured on {chip}"
        measured = [p for (m, _), p in self.points.items() if m == model]
        if not measured:
            raise ProfileError(f"no measurements for model {model!r}; known models: {self.models}")
        if chip not in self.catalog:
            raise ProfileError(f"unknown chip {chip!r}; known: {sorted(self.catalog)}")
        target = self.catalog[chip]
        anchors = [p for p in measured if p.chip in self.catalog]
        if not anchors:
            raise ProfileError(f"model {model!r} is only measured on {[p.chip for p in measured]}, not in the catalog")
        preferred = [p for p in anchors if p.chip == "h100-sxm"] or anchors
        p = preferred[0]
        base = self.catalog[p.chip]
        time_factor = base.peak_flops() / target.peak_flops()
        energy_factor = base.flop_per_joule() / target.flop_per_joule()
        return p, time_factor, energy_factor, f"scaled from {p.chip} by peak FLOP/s and FLOP/J"

    def predict(
        self,
        model: str,
        chip: str,
        batch: int = 1,
        width: int | None = None,
        height: int | None = None,
        frames: int | None = None,
        steps: int | None = None,
    ) -> Prediction:
        """Seconds for one batch of `batch` videos and joules per video on one `chip`.

        Raises:
            ProfileError: unknown model, unknown chip, or non-positive sizes.
        """
        p, time_factor, energy_factor, basis = self._reference(model, chip)
        width, height = width or p.width, height or p.height
        frames, steps = frames or p.frames, steps or p.steps
        for name, value in (
            ("batch", batch),
            ("width", width),
            ("height", height),
            ("frames", frames),
            ("steps", steps),
        ):
            if not (isinstance(value, int | float) and value > 0):
                raise ProfileError(f"{name} must be > 0, got {value!r}")
        work = p.work(width, height, frames, steps)
        per_video_s = p.per_video_s * work * time_factor
        seconds = p.overhead_s * time_factor + per_video_s * batch
        # ML.ENERGY's joules per video already include the batch's fixed part; the built-in fit adds it here.
        overhead_j = 0.0 if p.joules_include_overhead else p.overhead_s * p.power_w / batch
        joules = (p.joules_per_video * work + overhead_j) * energy_factor
        power_w = joules * batch / seconds
        fixed_s = p.overhead_s * time_factor
        return Prediction(seconds=seconds, joules=joules, power_w=power_w, basis=basis, fixed_s=fixed_s)

    def rung_factor(self, model: str, chip: str, width: int, height: int, frames: int, steps: int, level: int) -> float:
        """The denoising work of quality rung `level` relative to rung 0 for this clip: the steps the rung keeps,
        each at the rung's native size (a step's fixed share, `step_overhead_fraction`, does not shrink with it)."""
        p, _, _, _ = self._reference(model, chip)
        rung = QUALITY_LADDER[level]
        s = rung.native_scale
        return p.work(width * s, height * s, frames, rung.steps_for(steps)) / p.work(width, height, frames, steps)

    def frames_for(self, model: str, seconds: float) -> int:
        """Frames of a clip of `seconds` at the model's native frame rate."""
        fps = next((p.fps for (m, _), p in self.points.items() if m == model), None)
        if fps is None:
            raise ProfileError(f"no measurements for model {model!r}; known models: {self.models}")
        return max(1, round(seconds * fps))


def default_points() -> tuple[MeasuredPoint, ...]:
    return (*load_mlenergy(), garrison_wan_h100(), builtin_from_docs(), builtin_h100_from_docs())


def fit_errors(points: tuple[MeasuredPoint, ...] | None = None) -> dict[str, float]:
    """The profile's stated errors: mean leave-one-batch-out error of the batch fit, and the error of predicting
    B200 from H100 by the catalog's FLOP/s and FLOP/J ratios (time, energy), over the models measured on both."""
    from garrison.hardware.catalog import load_catalog

    points = points if points is not None else load_mlenergy()
    loo = [p.loo_error for p in points if math.isfinite(p.loo_error)]
    by = {(p.model, p.chip): p for p in points}
    catalog = load_catalog()
    time_err, energy_err = [], []
    for (model, chip), h100 in by.items():
        if chip != "h100-sxm" or (model, "b200") not in by:
            continue
        b200 = by[(model, "b200")]
        t = h100.per_video_s * catalog["h100-sxm"].peak_flops() / catalog["b200"].peak_flops()
        e = h100.joules_per_video * catalog["h100-sxm"].flop_per_joule() / catalog["b200"].flop_per_joule()
        time_err.append(abs(t - b200.per_video_s) / b200.per_video_s)
        energy_err.append(abs(e - b200.joules_per_video) / b200.joules_per_video)
    return {
        "batch_fit_loo_mean_rel_error": float(np.mean(loo)) if loo else math.nan,
        "cross_chip_time_mean_rel_error": float(np.mean(time_err)) if time_err else math.nan,
        "cross_chip_energy_mean_rel_error": float(np.mean(energy_err)) if energy_err else math.nan,
        "groups": len(points),
    }
