#!/usr/bin/env bash
# bench/peer_setup.sh [VENV]: a separate virtual environment with ESPnet2 (espnet==202511), the peer toolkit the
# speed benchmarks compare against (bench/peer_espnet.py, bench/bench_model.py --peer VENV, bench/peer_train.py).
#
# - VENV defaults to /work/scratch/peer_venv; it never touches the project's .venv.
# - pip is pinned to 25.2: newer pip refuses one of espnet 202511's dependency specifiers.
# - torch is pinned to the project's version (2.11.0) so both toolkits run the same kernels. The CPU wheel comes
#   from PEER_TORCH_INDEX (default https://download.pytorch.org/whl/cpu) when that index answers; otherwise the
#   same version comes from the configured registry (PyPI's build of 2.11.0, the one the project's venv has).
# - Idempotent: a venv where `import espnet2` works and espnet is 202511 is left as it is.
# - Optional extra, never run in CI; it needs the package registry (it says so in one line when offline).
set -euo pipefail
VENV=${1:-/work/scratch/peer_venv}
ESPNET=${PEER_ESPNET:-202511}
TORCH=${PEER_TORCH:-2.11.0}
PIP=${PEER_PIP:-25.2}
TORCH_INDEX=${PEER_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}
PY=${PYTHON:-python3}

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" - "$ESPNET" <<'EOF' 2>/dev/null
import sys, importlib.metadata as md, espnet2, torchaudio, matplotlib, rapidfuzz  # noqa: F401
sys.exit(0 if md.version("espnet") == sys.argv[1] else 1)
EOF
then
  echo "peer_setup: $VENV already has espnet $ESPNET ($("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)'))"
  exit 0
fi

# one look at the registry first, so an offline machine gets one clear line instead of a pip traceback
probe=$(mktemp -d)
if ! "$PY" -m pip download -q --no-deps "espnet==$ESPNET" -d "$probe" >/dev/null 2>&1; then
  rm -rf "$probe"
  echo "peer_setup: error: cannot download espnet==$ESPNET from the package registry (offline?); run this on a machine with network access" >&2
  exit 2
fi
rm -rf "$probe"

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q "pip==$PIP"
if "$VENV/bin/python" -m pip download -q --no-deps "torch==$TORCH+cpu" --index-url "$TORCH_INDEX" -d "$VENV/.torch_wheel" >/dev/null 2>&1; then
  echo "peer_setup: torch $TORCH CPU wheel from $TORCH_INDEX"
  "$VENV/bin/python" -m pip install -q "$VENV"/.torch_wheel/torch-*.whl --extra-index-url "$TORCH_INDEX"
  TORCH_PIN="torch==$TORCH+cpu"
else
  echo "peer_setup: $TORCH_INDEX does not answer; torch==$TORCH from the configured registry"
  "$VENV/bin/python" -m pip install -q "torch==$TORCH"
  TORCH_PIN="torch==$TORCH"
fi
rm -rf "$VENV/.torch_wheel"
# the pin keeps espnet's resolver from replacing the torch installed above
echo "$TORCH_PIN" > "$VENV/peer_constraints.txt"
# torchaudio, rapidfuzz: the peer scripts read our YAML with asr_nb.core, whose decode-method check imports asr_nb.decode
# (asr_nb.features, asr_nb.metrics);
# matplotlib: ESPnet2's trainer plots its statistics after every epoch (espnet's `train` extra, without wandb/tensorboard)
"$VENV/bin/python" -m pip install -q -c "$VENV/peer_constraints.txt" "espnet==$ESPNET" "torchaudio==$TORCH" "matplotlib==3.11.2" "rapidfuzz==3.14.6"
"$VENV/bin/python" -c 'import espnet2, torch, torchaudio, importlib.metadata as md; print("peer_setup: ok: espnet", md.version("espnet"), "torch", torch.__version__)'
