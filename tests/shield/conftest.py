"""Shield test helpers: small synthetic clips (a shape moving over a flat background) and MP4s via PyAV.

They imitate the built-in world without importing garrison.video, so these tests exercise the shield alone.
"""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import pytest


def moving_clip(height: int = 64, width: int = 64, frames: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    bg = rng.integers(10, 120, size=3)
    fg = rng.integers(140, 250, size=3)
    out = np.empty((frames, height, width, 3), dtype=np.uint8)
    out[:] = bg
    size = max(4, min(height, width) // 3)
    y = int(rng.integers(0, height - size))
    for t in range(frames):
        x = int(round(t / max(frames - 1, 1) * (width - size)))
        out[t, y : y + size, x : x + size] = fg
    return out


def encode_mp4(frames: np.ndarray, crf: int = 18, fps: int = 8) -> bytes:
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


def decode_mp4(data: bytes) -> np.ndarray:
    with av.open(io.BytesIO(data)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(container.streams.video[0])])


def h264_roundtrip(frames: np.ndarray, crf: int) -> np.ndarray:
    return decode_mp4(encode_mp4(frames, crf))


@pytest.fixture
def garrison_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty GARRISON_HOME for one test."""
    home = tmp_path / "home"
    monkeypatch.setenv("GARRISON_HOME", str(home))
    monkeypatch.delenv("GARRISON_WATERMARK_KEY", raising=False)
    return home
