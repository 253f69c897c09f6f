"""Give the host memory a process has freed back to the operating system.

glibc's malloc keeps freed heap memory for reuse rather than returning it: after a one-off burst of large
temporaries (the prompt policy encoding its exemplar sentences, a worker generating and encoding a video) an idle
process can hold tens of MB it no longer uses (20-40 MB in the API server after the policy's warm-up,
benchmarks/server_idle_memory.py). `malloc_trim(0)` hands the free pages back. Elsewhere (musl, macOS) it is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def _libc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def release_freed_memory() -> bool:
    """Return the heap memory malloc holds free to the OS; True when some was released."""
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False
