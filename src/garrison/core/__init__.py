"""Plain types every layer shares. Imports nothing else from garrison."""

from garrison.core.types import Clip, VideoSpec

__all__ = ["Clip", "VideoSpec"]
