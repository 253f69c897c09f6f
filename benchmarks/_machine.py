"""The machine facts every benchmark prints beside its figure (imported as `from _machine import machine_facts`: a
benchmark runs as `python benchmarks/NAME.py`, so this folder is on sys.path)."""

from __future__ import annotations

import os
import platform
from typing import Any

from garrison.hardware.cpu import cpu_model_name


def machine_facts() -> dict[str, Any]:
    """CPU model, core count, Python version, and the 1-minute load average (other work on the machine)."""
    return {
        "cpu": cpu_model_name(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
