"""Tensors of a safetensors file as NumPy arrays over a memory map of it, with nothing copied into process memory.

Why hand-written: the `safetensors` package reads a tensor into a fresh buffer (its NumPy and torch loaders copy), so
two processes that load the same file hold two private copies. Over a map, the pages live in the page cache and are
shared by every process that maps the file (the API server's prompt policy and the serving workers' text encoder
map the same MiniLM checkpoint). The format is a little-endian u64 header length, a JSON header of names, dtypes,
shapes and data offsets, then the data.
"""

from __future__ import annotations

import json
from typing import Literal

import numpy as np

_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64}


def map_safetensors(path: str, mode: Literal["r", "c"] = "r") -> dict[str, np.ndarray]:
    """Every tensor of `path` as an array over one map of the file: "r" read-only, "c" copy-on-write (writable
    views, which torch.from_numpy needs; a write would copy only the page it touches)."""
    with open(path, "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(header_len))
    data = np.memmap(path, dtype=np.uint8, mode=mode, offset=8 + header_len)
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        tensors[name] = data[begin:end].view(_DTYPES[info["dtype"]]).reshape(info["shape"])
    return tensors
