"""The prompt policy in its own process, so a create's sentence encoding does not stall the API's other requests.

A create screens its prompt with the shield's policy (shield/policy.py): normalisation, list and fuzzy matching, and
a MiniLM forward in NumPy, about 11 ms of CPU on this project's 2-core VM, most of it Python and small matrix
products that hold the GIL. Run in the API process, that work shares one GIL with the event loop and every other
request: at 200 requests/s with a tenth of them creates, a poll that arrived during a create waited for it
(benchmarks/server_load.py: p99 of all requests 203 ms with the policy in the server's threads, 37-54 ms with it
here). In a child process the encoder uses the second core and the API process only waits on a future.

Why not `concurrent.futures.ProcessPoolExecutor`: its children (spawn or forkserver) re-import the parent's
`__main__`, which here is the whole server app or the CLI; that cost 50 MB more per child than the policy itself
(`benchmarks/server_idle_memory.py`), against a 600 MB budget for the idle service. So each child is a plain
`python -m garrison.server.policy_pool` that imports only the policy, spoken to through two pipes with the
standard library's `multiprocessing.connection.Connection` (length-prefixed pickles). What is written here is the
small part a pool adds: request ids to futures, and a restart.

The child maps the same safetensors file as read-only memory, so its weights are shared pages, not a copy. The
decision is audited in the API process (`Shield.record_policy_decision`), where the audit log's writer lives.

If a child dies (killed, out of memory) or stops answering (`timeout_s`, then it is killed), its pending prompts fail
over: the pool starts a new child and each prompt is tried once more there; only a second failure answers the
request with an error (503), so no accepted request depends on one child's life.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from multiprocessing.connection import Connection

from garrison.shield.policy import PolicyDecision

log = logging.getLogger("garrison.server.policy")

POLICY_PROCESSES_ENV = "GARRISON_POLICY_PROCESSES"
WARM_UP_PROMPT = "a red circle moving right on a black background"
READY = -1  # the request id of the child's first message: policy loaded, warm-up prompt decided
START_TIMEOUT_S = 120.0  # loading the lists and the encoder's weights: ~2 s on the 2-core VM


def policy_processes_from_env(default: int = 1) -> int:
    """Policy child processes for a serving process: GARRISON_POLICY_PROCESSES (0 = screen in the API process)."""
    raw = os.environ.get(POLICY_PROCESSES_ENV, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{POLICY_PROCESSES_ENV} must be a whole number, got {raw!r}") from None
    if value < 0:
        raise ValueError(f"{POLICY_PROCESSES_ENV} must be >= 0, got {value}")
    return value


class PolicyUnavailable(RuntimeError):
    """The policy process could not decide (it died or hung, twice): the create is answered 503, nothing stored."""


class PolicyChildDied(RuntimeError):
    """The child process ended with this prompt pending."""


class _Child:
    """One policy process and the prompts it has not answered yet."""

    def __init__(self, use_embeddings: bool) -> None:
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", __name__, str(to_child_r), str(from_child_w), "1" if use_embeddings else "0"],
                pass_fds=(to_child_r, from_child_w),
                stdin=subprocess.DEVNULL,
            )
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        self._send = Connection(to_child_w, readable=False)
        self._recv = Connection(from_child_r, writable=False)
        self._ids = itertools.count()
        self._pending: dict[int, Future[PolicyDecision]] = {}
        self._lock = threading.Lock()
        self.dead = False
        self.ready = threading.Event()  # set when the child has loaded the policy and decided a first prompt
        self._reader = threading.Thread(target=self._read, name=f"policy-reader-{self.proc.pid}", daemon=True)
        self._reader.start()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def submit(self, prompt: str) -> Future[PolicyDecision]:
        future: Future[PolicyDecision] = Future()
        with self._lock:
            if self.dead:
                raise PolicyChildDied(f"policy process {self.proc.pid} has ended")
            request_id = next(self._ids)
            self._pending[request_id] = future
            try:
                # A prompt is at most a few KB and the child reads continuously, so the pipe does not fill.
                self._send.send((request_id, prompt))
            except OSError as e:
                self._pending.pop(request_id, None)
                raise PolicyChildDied(f"policy process {self.proc.pid}: {e}") from e
        return future

    def _read(self) -> None:
        while True:
            try:
                request_id, decision, error = self._recv.recv()
            except (EOFError, OSError):
                break
            if request_id == READY:
                self.ready.set()
                continue
            with self._lock:
                future = self._pending.pop(request_id, None)
            if future is None or future.done():  # a waiter that timed out cancelled it
                continue
            if error is None:
                future.set_result(decision)
            else:
                future.set_exception(RuntimeError(f"the prompt policy failed: {error}"))
        with self._lock:
            self.dead = True
            pending, self._pending = self._pending, {}
        code = self.proc.wait()
        for future in pending.values():
            if not future.done():
                future.set_exception(PolicyChildDied(f"policy process {self.proc.pid} exited with {code}"))
        self._recv.close()

    def kill(self, why: str) -> None:
        """End a stuck child; its pending prompts fail over (see PolicyPool)."""
        log.warning("killing policy process %d: %s", self.proc.pid, why)
        with self._lock:
            self.dead = True  # the pool replaces it now, not when the reader thread sees the pipe close
        self.proc.kill()

    def close(self, timeout_s: float = 10.0) -> None:
        with self._lock:
            self.dead = True
            self._send.close()  # the child reads EOF and exits
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=timeout_s)


class PolicyPool:
    """Screens prompts in `processes` child processes; started on first use, or by `start()` ahead of traffic."""

    def __init__(self, processes: int = 1, use_embeddings: bool = True, timeout_s: float = 30.0) -> None:
        if processes < 1:
            raise ValueError(f"a policy pool needs at least one process, got {processes}")
        self.processes = processes
        self.use_embeddings = use_embeddings
        # A child that has not answered a prompt in this long is stuck (a prompt takes ~10 ms): it is killed, and
        # the prompt goes to a fresh one.
        self.timeout_s = timeout_s
        self._children: list[_Child] = []
        self._lock = threading.Lock()
        self._closed = False
        self.restarts = 0

    def _least_busy(self) -> _Child:
        with self._lock:
            if self._closed:
                raise PolicyUnavailable("the policy pool is closed")
            alive = [c for c in self._children if not c.dead]
            self.restarts += len(self._children) - len(alive)
            while len(alive) < self.processes:
                alive.append(_Child(self.use_embeddings))
            self._children = alive
            return min(alive, key=lambda c: c.pending)

    def start(self) -> None:
        """Start the children and wait until each has loaded the policy, so the first create is fast."""
        self._least_busy()
        deadline = time.monotonic() + START_TIMEOUT_S
        for child in list(self._children):
            while not child.ready.wait(0.1):
                if child.dead:
                    raise PolicyUnavailable(f"the prompt policy process {child.proc.pid} ended while starting")
                if time.monotonic() > deadline:
                    child.kill(f"not ready in {START_TIMEOUT_S} s")
                    raise PolicyUnavailable(f"the prompt policy process did not start in {START_TIMEOUT_S} s")

    def child_pids(self) -> list[int]:
        return [c.proc.pid for c in self._children if not c.dead]

    def _timeout_for(self, child: _Child) -> float:
        # A child still loading the policy (a fresh one after a restart) gets the start-up allowance as well.
        return self.timeout_s if child.ready.is_set() else self.timeout_s + START_TIMEOUT_S

    async def check(self, prompt: str) -> PolicyDecision:
        """The decision for one prompt, awaited without holding the event loop or a worker thread."""
        for attempt in (1, 2):
            child = self._least_busy()
            timeout_s = self._timeout_for(child)
            try:
                return await asyncio.wait_for(asyncio.wrap_future(child.submit(prompt)), timeout_s)
            except TimeoutError:
                child.kill(f"no answer in {timeout_s} s")
            except PolicyChildDied as e:
                log.warning("%s; trying a new policy process (attempt %d)", e, attempt)
        raise PolicyUnavailable("the prompt policy process failed twice in a row")

    def close(self) -> None:
        with self._lock:
            self._closed = True
            children, self._children = self._children, []
        for child in children:
            child.close()


def _child_main(argv: list[str]) -> int:
    """The child: read (id, prompt), answer (id, decision, error) until the parent closes the pipe."""
    import numpy as np  # noqa: F401 - loads the BLAS that threadpoolctl limits
    from threadpoolctl import threadpool_limits

    from garrison.shield.policy import Policy, PolicyConfig

    # Ctrl-C reaches the whole process group; the parent decides when this child ends (it closes the pipe).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # One BLAS thread: one prompt at a time, and a BLAS pool only spins against the API process for the same cores.
    threadpool_limits(limits=1, user_api="blas")
    requests, answers = Connection(int(argv[0]), writable=False), Connection(int(argv[1]), readable=False)
    policy = Policy(PolicyConfig(use_embeddings=argv[2] == "1"))
    policy.check(WARM_UP_PROMPT)  # loads the lists and the encoder's weights before the first real prompt
    answers.send((READY, None, None))
    while True:
        try:
            request_id, prompt = requests.recv()
        except (EOFError, OSError):
            return 0
        try:
            answer = (request_id, policy.check(prompt), None)
        except Exception as e:  # noqa: BLE001 - the parent turns it into the request's error
            answer = (request_id, None, f"{type(e).__name__}: {e}")
        try:
            answers.send(answer)
        except OSError:  # the parent is gone
            return 0


if __name__ == "__main__":
    raise SystemExit(_child_main(sys.argv[1:]))
