"""Helpers the benchmarks that start garrison servers share: a free loopback port, and stopping a child process.

Imported as `from _processes import ...`: a benchmark runs as `python benchmarks/NAME.py`, so this folder is on
sys.path.
"""

from __future__ import annotations

import socket
import subprocess


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 30 s."""
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
