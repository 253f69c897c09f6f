"""The lent-GPU run of the built-in model (scripts/gpu/session.sh runs it): garrison's own train() with the GPU
recipe, for a wall-time budget. Clips render on the GPU itself (render_torch.py): CPU processes rendering ahead
had limited the rate to about 110 fresh clips/s with the GPU mostly idle.

    python3 scripts/gpu/train_cuda.py RUN_DIR MINUTES [DEVICE]

INIT_FROM: the weights a fine-tune starts from (default: the shipped checkpoint); empty for a run from scratch,
which keeps the JiT 0.05 velocity clamp for its first quarter (colour and background), then the 0.5 clamp.
STOP_AT_MINUTES: end this call there with a checkpoint, the schedule unchanged (a call is limited to 10 minutes);
RESUME=1 goes on from the run folder's train state.
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
    init_from = os.environ.get("INIT_FROM", "src/garrison/video/weights/builtin") or None
    budget_s = minutes * 60
    cfg = TrainConfig(
        out_dir=run,
        steps=1_000_000,  # the wall-time budget ends the run
        batch_tokens=16384,
        max_batch=256,
        lr=5e-4,
        warmup_steps=200,
        # a fine-tune keeps the 0.5 clamp throughout: its weights already know colour and background
        late_from_step=0 if init_from else 10**9,
        late_from_wall_s=None if init_from else budget_s / 4,
        device=device,
        render_on_device=True,
        max_wall_s=budget_s,
        cooldown_wall_s=min(90.0, budget_s / 4) if init_from else budget_s / 5,
        init_from=init_from,
        log_every=100,
        checkpoint_every=2000,
        stop_at_wall_s=float(os.environ["STOP_AT_MINUTES"]) * 60 if os.environ.get("STOP_AT_MINUTES") else None,
    )
    start = time.time()

    def on_step(step: int, loss: float) -> None:
        if step % 500 == 0:
            print(json.dumps({"step": step, "loss": round(loss, 4), "elapsed_s": round(time.time() - start, 1)}))

    summary = train(cfg, resume=os.environ.get("RESUME") == "1", on_step=on_step)
    summary.pop("log")
    print(json.dumps({"summary": summary, "config": {k: str(v) for k, v in vars(cfg).items()}}), flush=True)


if __name__ == "__main__":
    main()
