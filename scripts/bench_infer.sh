#!/usr/bin/env bash
# bench infer (not a timed test): slices/s of the exported model under ONNX Runtime (CPU)
# against the tch forward of the same checkpoint on the same input batch, with the ratio, and
# the end-to-end throughput of `dmnet-infer` on a real NIfTI volume (reading, preprocessing,
# inference, resize back, writing the mask). PyTorch eager (an independent torch.nn.functional
# implementation, scripts/bench_infer_torch.py) is timed too, and its probabilities are compared
# with ONNX Runtime's on the same input, when a Python with a working `import torch` exists:
# TORCH_PYTHON, else $DMNET_BENCH_PYTHON, else .venv-ref/bin/python (the reference venv of
# scripts/setup.sh --reference; the project venv's torch lacks its CUDA deps).
#
# Usage: scripts/bench_infer.sh [WORKDIR]
#   env: PROFILE=release|dev (release), SIZE=224, ENCODER=resnet18, WIDTH=1.0, BATCH=8,
#        ITERS=5, THREADS=<all cores>, CASES=10, DATA=../shared/data/la2018, TORCH_PYTHON
# Output: WORKDIR/bench-infer.json and a table on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-target/bench-infer}
PROFILE=${PROFILE:-release}
SIZE=${SIZE:-224} ENCODER=${ENCODER:-resnet18} WIDTH=${WIDTH:-1.0}
BATCH=${BATCH:-8} ITERS=${ITERS:-5} CASES=${CASES:-10}
THREADS=${THREADS:-$(nproc)}
DATA=${DATA:-../shared/data/la2018}
PY=${DMNET_PYTHON:-.dmnet/python}
[ -d "$DATA" ] || { echo "bench_infer: $DATA not found (real LA data lives in ../shared/data)" >&2; exit 1; }

flag=(); [ "$PROFILE" = release ] && flag=(--release)
cargo build -q "${flag[@]}" --bins --example bench_infer
BIN=target/$([ "$PROFILE" = release ] && echo release || echo debug)
mkdir -p "$WORK"

# A small MSD-layout copy of the first CASES LA volumes, shards at SIZE, a one-step run.
if [ ! -f "$WORK/run/checkpoints/best/model.safetensors" ]; then
  rm -rf "$WORK/la" "$WORK/shards" "$WORK/run"
  mkdir -p "$WORK/la/imagesTr" "$WORK/la/labelsTr"
  "$PY" - "$DATA" "$WORK/la" "$CASES" <<'PY'
import json, os, sys
src, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
d = json.load(open(os.path.join(src, "dataset.json")))
d["training"] = d["training"][:n]; d["numTraining"] = n
for t in d["training"]:
    for k in ("image", "label"):
        rel = t[k].lstrip("./")
        os.symlink(os.path.abspath(os.path.join(src, rel)), os.path.join(dst, rel))
json.dump(d, open(os.path.join(dst, "dataset.json"), "w"))
PY
  "$BIN/dmnet-prep" ingest -q --input "$WORK/la" --out "$WORK/shards" --pipeline pipelines/la2018.toml --size "$SIZE"
  "$BIN/dmnet-train" -q --shards "$WORK/shards" --out "$WORK/run" --encoder "$ENCODER" --width "$WIDTH" \
    --size "$SIZE" --epochs 1 --max-steps-per-epoch 1 --labeled-batch 2 --unlabeled-batch 2 --device cpu
fi
"$BIN/dmnet-export" -q --run "$WORK/run" --out "$WORK/model/model.onnx" --verify --shards "$WORK/shards"

# Same weights, same batch: ONNX Runtime vs tch.
"$BIN/examples/bench_infer" "$WORK/model/model.onnx" "$WORK/run" "$BATCH" "$ITERS" "$THREADS" > "$WORK/forward.json"

# End to end on one real volume.
VOL=$(ls "$WORK"/la/imagesTr/*.nii.gz | head -1)
"$BIN/dmnet-infer" -q --device cpu --batch "$BATCH" --model "$WORK/model/model.onnx" --input "$VOL" \
  --out "$WORK/masks" > "$WORK/infer.json"

# PyTorch eager (optional).
TORCH_PYTHON=${TORCH_PYTHON:-${DMNET_BENCH_PYTHON:-.venv-ref/bin/python}}
if "$TORCH_PYTHON" -c "import torch" 2>/dev/null; then
  "$TORCH_PYTHON" scripts/bench_infer_torch.py "$WORK/model/model.json" "$BATCH" "$ITERS" "$THREADS" \
    "$WORK/pytorch" > "$WORK/torch.json"
  "$PY" - "$WORK" <<'PY'
import json, os, sys
import numpy as np, onnxruntime as ort
w = sys.argv[1]
ld = lambda n: np.fromfile(f"{w}/pytorch-{n}.f32", "<f4").reshape(json.load(open(f"{w}/pytorch-{n}.json")))
s = ort.InferenceSession(f"{w}/model/model.onnx", providers=["CPUExecutionProvider"])
d = float(np.abs(s.run(["probabilities"], {"image": ld("input")})[0] - ld("probabilities")).max())
t = json.load(open(f"{w}/torch.json")); t["max_abs_diff_vs_onnxruntime"] = d
json.dump(t, open(f"{w}/torch.json", "w"))
PY
else
  echo '{"skipped": "no Python with a working import torch (set TORCH_PYTHON)"}' > "$WORK/torch.json"
fi

"$PY" - "$WORK" <<'PY'
import json, os, sys
w = sys.argv[1]
f = json.load(open(os.path.join(w, "forward.json")))
e = json.load(open(os.path.join(w, "infer.json")))
t = json.load(open(os.path.join(w, "torch.json")))
out = {"forward": f, "dmnet_infer": e, "pytorch_eager": t}
json.dump(out, open(os.path.join(w, "bench-infer.json"), "w"), indent=2)
print(f"model {f['encoder']} width {f['width']} S={f['size']} batch {f['batch']} threads {f['threads']}")
print(f"{'engine':<34}{'slices/s':>10}{'vs tch':>8}")
tch = f["tch_cpu_slices_per_s"]
rows = [("ONNX Runtime (CPU), forward", f["ort_cpu_slices_per_s"]),
        ("tch forward (CPU)", tch),
        ("dmnet-infer end to end (1 volume)", e["slices_per_second"])]
if "slices_per_s" in t:
    rows.append(("PyTorch eager (CPU)", t["slices_per_s"]))
for name, v in rows:
    print(f"{name:<34}{v:>10.1f}{v / tch:>8.2f}")
if "skipped" in t:
    print("PyTorch eager: skipped (" + t["skipped"] + ")")
else:
    print(f"PyTorch eager vs ONNX Runtime, same input: max |Δ probabilities| = {t['max_abs_diff_vs_onnxruntime']:.2e}")
PY
