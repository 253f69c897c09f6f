"""Plain types every layer shares. Imports nothing else from garrison."""

from garrison.core.types import ENERGY_SOURCES, Clip, Device, Measurement, VideoSpec

__all__ = ["ENERGY_SOURCES", "Clip", "Device", "Measurement", "VideoSpec"]
