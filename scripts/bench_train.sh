#!/usr/bin/env bash
# bench train: seconds per training step of dmnet-train (tch) against the same architecture and
# step in PyTorch eager (scripts/bench_train_torch.py), same batch, size and device; prints the
# ratio. Not a timed test.
#
# Usage: scripts/bench_train.sh [--shards DIR] [--encoder 18] [--width 1] [--size 224]
#          [--batch 8] [--steps 10] [--device cpu|cuda] [--release] [--install-torch]
#   --shards DIR     shards to train on (default: ingest 10 LA2018 cases at --size into target/bench/)
#   --release        build and time target/release/dmnet-train (default: the dev build, whose
#                    hot path is libtorch either way)
#   --install-torch  when no torch is found, make the reference venv (.venv-ref, scripts/setup.sh
#                    --reference: torch 2.11.0 from PyPI, ~5 GB) and use it
#                    (CPU wheel for --device cpu, ~200 MB; the CUDA wheel is ~2.6 GB)
# PyTorch's Python: $DMNET_BENCH_PYTHON, else .venv-ref/bin/python (scripts/setup.sh --reference).
# Output: one JSON line {"dmnet_s_per_step", "pytorch_s_per_step", "ratio_dmnet_over_pytorch",
#   "joint_pass_s_per_step" (0.1.0's one-pass step), "ratio_separate_over_joint", ...}.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARDS="" ENC=18 WIDTH=1 SIZE=224 BATCH=8 STEPS=10 DEVICE=cpu PROFILE=debug INSTALL=0
while [ $# -gt 0 ]; do
  case "$1" in
    --shards) SHARDS="$2"; shift 2 ;;
    --encoder) ENC="$2"; shift 2 ;;
    --width) WIDTH="$2"; shift 2 ;;
    --size) SIZE="$2"; shift 2 ;;
    --batch) BATCH="$2"; shift 2 ;;
    --steps) STEPS="$2"; shift 2 ;;
    --device) DEVICE="$2"; shift 2 ;;
    --release) PROFILE=release; shift ;;
    --install-torch) INSTALL=1; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ "$PROFILE" = release ]; then
  cargo build -q --release --bin dmnet-train --bin dmnet-prep
else
  cargo build -q --bin dmnet-train --bin dmnet-prep
fi
BIN=target/$PROFILE
WORK=target/bench
mkdir -p "$WORK"
if [ -z "$SHARDS" ]; then
  SHARDS=$WORK/la2018-$SIZE
  if [ ! -f "$SHARDS/_manifest.json" ]; then
    "$BIN/dmnet-prep" ingest --input ../shared/data/la2018 --out "$SHARDS" \
      --pipeline pipelines/la2018.toml --size "$SIZE" --max-studies 10 -q
  fi
fi
# Two epochs: the second one's steps are timed (warm caches, no first-call overheads). Timed
# twice in the same run: the default step (separate labeled and unlabeled passes) and 0.1.0's
# step (one joint pass), so a change of the step's cost shows as a ratio.
time_step() {
  local run=$WORK/run-$$-$1
  rm -rf "$run"
  "$BIN/dmnet-train" --shards "$SHARDS" --out "$run" --encoder "resnet$ENC" --size "$SIZE" \
    --epochs 2 --max-steps-per-epoch "$STEPS" --labeled-batch "$BATCH" --unlabeled-batch "$BATCH" \
    --unlabeled-pass "$1" --device "$DEVICE" -q >/dev/null --pipeline <(printf '[train.model]\nwidth = %s\n' "$WIDTH")
  python3 -c "import json,sys; r=[json.loads(l) for l in open('$run/metrics.jsonl')][-1]; print(r['train_seconds']/r['steps'], r['steps'])"
  rm -rf "$run"
}
read -r JOINT _ < <(time_step joint)
read -r DMNET STEPS_DONE < <(time_step separate)

PY=${DMNET_BENCH_PYTHON:-.venv-ref/bin/python}
if ! "$PY" -c "import torch" 2>/dev/null; then
  if [ "$INSTALL" = 1 ]; then
    # the project's one reference venv, from the Python registry (download.pytorch.org is not
    # reachable from every machine this runs on)
    bash scripts/setup.sh --reference
    PY=.venv-ref/bin/python
  else
    PY=""
  fi
fi
TORCH=null
if [ -n "$PY" ]; then
  TORCH=$("$PY" scripts/bench_train_torch.py --encoder "$ENC" --width "$WIDTH" --size "$SIZE" \
    --labeled-batch "$BATCH" --unlabeled-batch "$BATCH" --steps "$STEPS_DONE" --device "$DEVICE" \
    | python3 -c "import json,sys; print(json.load(sys.stdin)['s_per_step'])")
fi
python3 - "$DMNET" "$TORCH" <<PY
import json, sys
d = float(sys.argv[1]); t = None if sys.argv[2] == "null" else float(sys.argv[2])
j = float("$JOINT")
print(json.dumps({"dmnet_s_per_step": round(d, 4), "pytorch_s_per_step": None if t is None else round(t, 4),
                  "ratio_dmnet_over_pytorch": None if t is None else round(d / t, 3),
                  "joint_pass_s_per_step": round(j, 4), "ratio_separate_over_joint": round(d / j, 3),
                  "encoder": "resnet$ENC", "width": $WIDTH, "size": $SIZE, "batch": "$BATCH+$BATCH",
                  "device": "$DEVICE", "profile": "$PROFILE", "steps": $STEPS_DONE}))
PY
