"""Clips and attacks shared by the shield benchmarks: rendered clips of the built-in world, H.264 through PyAV.

The clips are the built-in model's world (garrison.video.data.world): one solid shape moving over a flat background
at the native sizes 64x64, 112x64 and 64x112 -- the hardest case for a watermark, since flat regions hide nothing
and H.264 spends almost no bits on them. Benchmarks may import any layer; only src/garrison/shield may not.
"""

from __future__ import annotations

import io
import random

import av
import numpy as np

from garrison.video.data.world import ASPECTS, render, sample_params


def world_clips(
    n: int, seed: int, seconds: tuple[int, ...] = (2, 4), upscale: tuple[int, int] | None = None
) -> list[np.ndarray]:
    """`n` rendered clips (T, H, W, 3) uint8, cycling through the three native aspect ratios."""
    rng = random.Random(seed)
    sizes = list(ASPECTS.values())
    clips = []
    for i in range(n):
        w, h = sizes[i % len(sizes)]
        frames = render(sample_params(rng, rng.choice(seconds), w, h))
        if upscale is not None:
            frames = resize(frames, *upscale)
        clips.append(frames)
    return clips


def h264(frames: np.ndarray, crf: int, fps: int = 8, preset: str = "medium") -> np.ndarray:
    """Encode to H.264 (yuv420p, libx264 at `crf`) in memory and decode back to RGB frames."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.options = {"crf": str(crf), "preset": preset}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())
    buf.seek(0)
    with av.open(buf) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(container.streams.video[0])])


def mp4_bytes(frames: np.ndarray, crf: int = 18, fps: int = 8) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.options = {"crf": str(crf)}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())
    return buf.getvalue()


def resize(frames: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize with swscale: area averaging when shrinking, bicubic when enlarging (what ffmpeg users get)."""
    shrink = width < frames.shape[2]
    out = []
    for frame in frames:
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        out.append(
            vf.reformat(width=width, height=height, interpolation="AREA" if shrink else "BICUBIC").to_ndarray(
                format="rgb24"
            )
        )
    return np.stack(out)


def downscale_half(frames: np.ndarray) -> np.ndarray:
    h, w = frames.shape[1:3]
    return resize(frames, max(2, (w // 2) // 2 * 2), max(2, (h // 2) // 2 * 2))


def crop(frames: np.ndarray, fraction: float, rng: random.Random) -> np.ndarray:
    """Cut `fraction` of each axis away at a random offset (a 10% crop keeps a 90% x 90% window)."""
    h, w = frames.shape[1:3]
    keep_h, keep_w = int(round(h * (1 - fraction))) // 2 * 2, int(round(w * (1 - fraction))) // 2 * 2
    y0, x0 = rng.randint(0, h - keep_h), rng.randint(0, w - keep_w)
    return np.ascontiguousarray(frames[:, y0 : y0 + keep_h, x0 : x0 + keep_w])
