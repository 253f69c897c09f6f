"""MP4 encode and decode through PyAV (H.264, yuv420p).

Writes go to a temporary file in the target folder and are renamed into place, so a failed or interrupted
encode never leaves a half-written MP4 behind.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import av
import numpy as np

from garrison.core.types import Clip

DEFAULT_CRF = 18  # visually lossless for flat-colour clips; the judge reads colours after this encode


class VideoIOError(RuntimeError):
    """The file cannot be written or read; the message says which and why."""


def check_writable(path: Path) -> None:
    """Fail before any work starts if `path` cannot be created."""
    parent = path.resolve().parent
    if path.is_dir():
        raise VideoIOError(f"{path} is a directory, not a file path")
    if not parent.is_dir():
        raise VideoIOError(f"folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise VideoIOError(f"folder {parent} is not writable")


def write_mp4(clip: Clip, path: str | Path, crf: int = DEFAULT_CRF) -> Path:
    path = Path(path)
    check_writable(path)
    if clip.width % 2 or clip.height % 2:
        raise VideoIOError(f"H.264 with yuv420p needs even sizes, got {clip.width}x{clip.height}")
    fd, tmp = tempfile.mkstemp(dir=path.resolve().parent, prefix=f".{path.stem}.", suffix=".mp4")
    os.close(fd)
    try:
        with av.open(tmp, mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=clip.fps)
            stream.width, stream.height = clip.width, clip.height
            stream.pix_fmt = "yuv420p"
            # bt709 tags so players and our decoder agree on the colour matrix.
            stream.codec_context.options = {"crf": str(crf), "preset": "medium", "colorprim": "bt709"}
            stream.codec_context.color_range = 1  # MPEG (limited) range, what players expect
            for frame in clip.frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
            container.mux(stream.encode())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a video is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_mp4(path: str | Path) -> Clip:
    path = Path(path)
    if not path.is_file():
        raise VideoIOError(f"{path} does not exist")
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            fps = int(round(float(stream.average_rate or stream.guessed_rate or 8)))
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    except (av.error.FFmpegError, IndexError) as e:
        raise VideoIOError(f"{path} is not a readable video: {e}") from e
    if not frames:
        raise VideoIOError(f"{path} has no frames")
    return Clip(np.stack(frames), fps)
