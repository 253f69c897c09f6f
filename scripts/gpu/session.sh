#!/bin/bash
# The lent-GPU session (run from the repo root on the device machine, which has no PyPI):
#   setup     diffusers wheel and the packed MiniLM (scripts/gpu/minilm_pack.py) into /tmp/site
#   train     fine-tune the built-in model on CUDA for $TRAIN_MINUTES while nvml_calibration measures the counter
#             (limit, period, windows) and a 2-step Wan smoke run checks the full-size path; then joules per video
#             of the built-in model; weights come back in <16 MiB chunks (join with cat)
#   fit       the fine-tune alone (no calibration or smoke run): all of the lent time goes to training
#   wan       benchmarks/diffusers_wan_gpu.py, $WAN_MODES at 50 steps
#   attention benchmarks/diffusers_wan_attention.py: one Wan forward per attention backend, then compiled
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD/src HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
OUT=${OUT:-/tmp/out}
mkdir -p /tmp/site "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
python3 scripts/gpu/minilm_pack.py unpack .gpu/minilm /tmp/site || exit 1
nvidia-smi --query-gpu=name,driver_version,power.draw,power.limit,clocks.sm,temperature.gpu --format=csv
python3 -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__)"

case "${1:-train}" in
train)
  RUN=/tmp/runs/gpu
  python3 scripts/gpu/train_cuda.py "$RUN" "${TRAIN_MINUTES:-7}" > "$OUT/train.log" 2>&1 &
  TRAIN_PID=$!
  sleep 45
  python3 benchmarks/nvml_calibration.py --phases limit,period,windows --set-same --out "$OUT/nvml_calibration.jsonl" 2>&1 | tail -5
  python3 benchmarks/diffusers_wan_gpu.py --modes stock --steps 2 --out /tmp/wan_smoke.json > "$OUT/wan_smoke.log" 2>&1
  echo "wan smoke rc=$?"; tail -3 "$OUT/wan_smoke.log"
  wait $TRAIN_PID
  tail -4 "$OUT/train.log"
  cat $RUN/config.json >> "$OUT/train.log"; cp $RUN/train_log.jsonl "$OUT/"
  split -b 15M -d $RUN/model.safetensors "$OUT/model.safetensors.part"
  python3 benchmarks/nvml_calibration.py --phases builtin --repeats 10 --out "$OUT/nvml_builtin.jsonl" 2>&1 | tail -2
  ;;
fit)
  RUN=/tmp/runs/gpu
  python3 scripts/gpu/train_cuda.py "$RUN" "${TRAIN_MINUTES:-7}" > "$OUT/train.log" 2>&1
  tail -4 "$OUT/train.log"
  cat $RUN/config.json >> "$OUT/train.log"; cp $RUN/train_log.jsonl $RUN/model_card.json "$OUT/" 2>/dev/null
  split -b 15M -d $RUN/model.safetensors "$OUT/model.safetensors.part"
  ;;
wan)
  python3 benchmarks/diffusers_wan_gpu.py --modes "${WAN_MODES:-stock,compiled}" --out "$OUT/wan.json" 2>&1 | tee "$OUT/wan.log" | tail -40
  ;;
attention)
  python3 benchmarks/diffusers_wan_attention.py --out "$OUT/attention.json" 2>&1 | tee "$OUT/attention.log" | tail -8
  ;;
esac
