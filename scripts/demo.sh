#!/usr/bin/env bash
# dmnet demo (`make demo`): the whole pipeline on an embedded default, the SYNTHETIC phantom
# cohort of `dmnet-prep synth`: ingest → train DMNet and the supervised variant on the same
# split → evaluate on the test split → export to ONNX (verified against tch) → infer with ONNX
# Runtime on a NIfTI volume, a DICOM series and the test shards.
#
#   make demo                                   synthetic phantom (about 4 min on 2 cores)
#   DATA=../shared/data/la2018 make demo        a real dataset instead (layout detected)
#   DATA=… PREP_PIPELINE=pipelines/kits19.toml  the pipeline that matches that dataset
#   DEMO_OUT=dir  EPOCHS=n                      where to write, how long to train
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="${DEMO_OUT:-demo-out}"
epochs="${EPOCHS:-40}"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "build (dev profile, shared with make test)"
cargo build --locked --bins
bin=target/debug
rm -rf "$out" && mkdir -p "$out"
# patient keys: a private salt for this demo run (README "Patient keys"; kept to resume)
export DMNET_SALT="${DMNET_SALT:-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')}"

if [[ -n "${DATA:-}" ]]; then
  input="$DATA"
  prep_pipeline="${PREP_PIPELINE:-pipelines/la2018.toml}"
  step "ingest $DATA with $prep_pipeline at 64×64"
  "$bin/dmnet-prep" ingest --input "$input" --out "$out/shards" --pipeline "$prep_pipeline" --size 64 --layout auto
  volume="$(find "$input" -name '*.nii.gz' -path '*images*' | sort | tail -n 1)"
  dicom=""
else
  step "synthesize the SYNTHETIC phantom cohort (60 CT patients + 1 DICOM series)"
  "$bin/dmnet-prep" synth --out "$out/data" --patients 60 --dicom-patients 1 --seed 0 --size 96
  step "ingest (pipelines/demo.toml: the paper's protocol, 1 labeled + 2 unlabeled slices per patient)"
  "$bin/dmnet-prep" ingest --input "$out/data/kits19" --out "$out/shards" --pipeline pipelines/demo.toml
  volume="$out/data/kits19/case_00059/imaging.nii.gz"
  dicom="$out/data/dicom/case_00060"
fi
"$bin/dmnet-prep" inspect "$out/shards" | head -n 20

step "train DMNet and the supervised variant on the same split ($epochs epochs each), evaluate on test"
"$bin/dmnet-train" grid --shards "$out/shards" --out "$out/runs" --pipeline pipelines/demo.toml \
  --variants dmnet,supervised --fractions 100% --seeds 0 --epochs "$epochs" | tee "$out/results.md"

step "export DMNet to ONNX and verify it against the tch checkpoint"
run="$out/runs/dmnet-100pct-seed0"
"$bin/dmnet-export" --run "$run" --out "$out/model/dmnet.onnx" --verify --shards "$out/shards"

step "infer with ONNX Runtime"
"$bin/dmnet-infer" --model "$out/model/dmnet.onnx" --input "$volume" --out "$out/masks"
[[ -n "$dicom" ]] && "$bin/dmnet-infer" --model "$out/model/dmnet.onnx" --input "$dicom" --out "$out/masks-dicom"
"$bin/dmnet-infer" --model "$out/model/dmnet.onnx" --input "$out/shards" --split test --out "$out/eval-onnx"

step "results"
cat "$out/results.md" | sed -n '/best-on-validation/,/last checkpoint/p' | grep '^|'
printf '\nONNX Runtime on the test shards: '
grep -o '"miou": [0-9.]*' "$out/eval-onnx/metrics.json" | head -n 1
cat <<EOT

Artifacts (under $out/):
  data/          the ${DATA:+input is $DATA; }SYNTHETIC cohort (KiTS19 layout + DICOM), if generated
  shards/        Parquet slice shards, manifest.json, splits.json (schemas/shard-v1.md)
  runs/          one run dir per variant (config.json, metrics.jsonl, curves.png, checkpoints/),
                 grid.md + grid.json (the table above)
  model/         dmnet.onnx + dmnet.json sidecar (schemas/model-sidecar-v1.md)
  masks*/        uint8 NIfTI masks in the input's geometry
  eval-onnx/     predictions.parquet + metrics.json from the test shards
EOT
