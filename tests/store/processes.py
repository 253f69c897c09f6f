"""Helper processes for the store tests (not a test module): each mode opens the store in a fresh interpreter.

python tests/store/processes.py open URL                  open (and migrate) the store, print "opened"
python tests/store/processes.py claim URL WORKER_ID       claim until the queue is empty, print each video id
python tests/store/processes.py hold URL VIDEO_ID         start a write transaction, print "inside", wait to be killed
python tests/store/processes.py create URL TENANT_ID      create videos until killed, print each id once committed
"""

from __future__ import annotations

import sys
import time

from garrison.store import open_store
from garrison.store.models import events, settings, videos


def main(mode: str, url: str, *args: str) -> None:
    if mode == "open":
        open_store(url).close()
        print("opened", flush=True)
    elif mode == "claim":
        (worker_id,) = args
        store = open_store(url)
        print("ready", flush=True)
        sys.stdin.readline()  # start together with the other claimers
        while (video := store.claim_video(worker_id, f"{worker_id}:dev", 60.0, 0)) is not None:
            print(video.id, flush=True)
            # A worker works between claims: without this, on a loaded 2-core machine the first claimer to get the
            # CPU could empty the queue before the others were scheduled at all.
            time.sleep(0.005)
    elif mode == "hold":
        (video_id,) = args
        store = open_store(url)
        # The store's own write transaction, left open: many statements done, none committed.
        with store._write() as conn:
            conn.execute(videos.update().where(videos.c.id == video_id).values(status="in_progress", worker_id="ghost"))
            conn.execute(
                events.insert(), [{"ts": time.time(), "kind": "ghost", "subject_id": video_id, "data": {}}] * 100
            )
            conn.execute(settings.insert().values(key="ghost", value=1, updated_at=time.time()))
            print("inside", flush=True)
            time.sleep(600)
    elif mode == "create":
        (tenant_id,) = args
        store = open_store(url)
        n = 0
        while True:
            video, _ = store.create_video(
                tenant_id, prompt=f"clip {n}", model="m", seconds=2, size="64x64", steps=12, guidance=4.0, seed=n,
                idempotency_key=f"key-{n}", policy={"n": n, "padding": "x" * 2000},
            )  # fmt: skip
            print(video.id, flush=True)
            n += 1
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(*sys.argv[1:])
