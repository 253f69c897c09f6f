"""The lent-GPU fine-tune of the built-in model (scripts/gpu/session.sh runs it): garrison's own train() with the
GPU recipe. Rendering, not the H100, limits the rate, so 14 processes render ahead and each batch serves 3 steps.

    python3 scripts/gpu/train_cuda.py RUN_DIR MINUTES [DEVICE]
"""

from __future__ import annotations

import json
import os
import sys
import time

from garrison.video.training.train import TrainConfig, train


def main() -> None:
    run, minutes = sys.argv[1], float(sys.argv[2])
    device = sys.argv[3] if len(sys.argv) > 3 else "cuda"
    cfg = TrainConfig(
        out_dir=run,
        steps=1_000_000,  # the wall-time budget ends the run
        batch_tokens=16384,
        max_batch=256,
        lr=5e-4,
        warmup_steps=200,
        late_from_step=0,  # the 0.5 clamp throughout: the shipped weights already know colour and background
        device=device,
        render_workers=14 if device == "cuda" else 2,
        echo=3,
        max_wall_s=minutes * 60,
        cooldown_wall_s=min(90.0, minutes * 60 / 4),
        init_from=os.environ.get("INIT_FROM", "src/garrison/video/weights/builtin"),
        log_every=50,
        checkpoint_every=1000,
    )
    start = time.time()

    def on_step(step: int, loss: float) -> None:
        if step % 200 == 0:
            print(json.dumps({"step": step, "loss": round(loss, 4), "elapsed_s": round(time.time() - start, 1)}))

    summary = train(cfg, resume=False, on_step=on_step)
    summary.pop("log")
    print(json.dumps({"summary": summary, "config": {k: str(v) for k, v in vars(cfg).items()}}), flush=True)


if __name__ == "__main__":
    main()
