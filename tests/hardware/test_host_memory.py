import sys

import pytest

from garrison.hardware.host_memory import release_freed_memory


def _rss_kb() -> int:
    for line in open("/proc/self/status").read().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc_trim")
def test_freed_heap_memory_goes_back_to_the_os():
    # 80 MB of blocks on the heap (too small for their own mmap), every 64th kept: the heap cannot shrink from the
    # top, so free() keeps the pages in between until they are trimmed
    blocks = [bytearray(4000) for _ in range(20_000)]
    kept = blocks[::64]
    del blocks
    before = _rss_kb()
    assert release_freed_memory()
    assert _rss_kb() < before - 40_000, (before, _rss_kb())
    assert len(kept) == 313
