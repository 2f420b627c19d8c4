#!/usr/bin/env bash
# bench/gpu.sh [extra bench_gpu.py arguments]: the one prepared command for a lent H100/H200.
# Runs bench/bench_gpu.py on conf/aishell_conformer.yaml: bf16, torch.compile, fused Adam, the largest batch that
# fits; times the step and a short (300-step) training; writes bench/results/gpu.json (frames/s, peak memory, FLOPs
# per step, MFU against the card's dense bf16 peak; target MFU >= 0.35). About 5 minutes, most of it compiling.
# Never part of CI or the tests (tests/test_bench_gpu.py runs the same script on CPU with --tiny).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
"$PY" - <<'PYEOF'
import sys, torch
if not torch.cuda.is_available():
    sys.exit("gpu.sh: error: no CUDA device visible to torch (this benchmark is for a lent H100/H200)")
print("gpu.sh:", torch.cuda.get_device_name(0), "torch", torch.__version__, flush=True)
PYEOF
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit --format=csv 2>/dev/null || true
exec "$PY" bench/bench_gpu.py --device cuda --config conf/aishell_conformer.yaml --dtype bf16 --compile auto \
  --out "${OUT_JSON:-bench/results/gpu.json}" "$@"
