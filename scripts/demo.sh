#!/usr/bin/env bash
# dmnet demo (`make demo`): the whole pipeline, then DMNet against its supervised variant:
# ingest → train both on the same split → evaluate on the test split → export DMNet to ONNX
# (verified against tch) → infer with ONNX Runtime on a NIfTI volume, a DICOM series (phantom)
# and the test shards.
#
# Data, in this order:
#   DATA=dir                   a dataset you name (layout detected; PREP_PIPELINE=pipelines/….toml)
#   ../shared/data/la2018      when present: real left-atrium MRI, the committed grid's setup
#                              (pipelines/la2018-cpu.toml, 10 % labels, seed 0; about 6 min on
#                              2 cores), the setting where DMNet's gain is measured
#                              (docs/results-la2018.md)
#   otherwise                  the embedded default: the SYNTHETIC phantom cohort of
#                              `dmnet-prep synth` (about 4 min). On the phantom DMNet does not
#                              beat supervised (docs/results-la2018.md, "The phantom").
#   PHANTOM=1                  the phantom even when ../shared is present
#   DEMO_OUT=dir  STEPS=n      where to write; training steps (default: the pipeline's)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="${DEMO_OUT:-demo-out}"
la=../shared/data/la2018
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "build (dev profile, shared with make test)"
cargo build --locked --bins
bin=target/debug
rm -rf "$out" && mkdir -p "$out"
export DMNET_SALT="${DMNET_SALT:-demo-$RANDOM-$RANDOM-$RANDOM}"
dicom=""
grid_args=(--arms dmnet,supervised --seeds 0 --jobs 2)
if [[ -n "${DATA:-}" ]]; then
  input="$DATA"
  pipeline="${PREP_PIPELINE:-pipelines/la2018.toml}"
  step "ingest $DATA with $pipeline at 64×64"
  "$bin/dmnet-prep" ingest --input "$input" --out "$out/shards" --pipeline "$pipeline" --size 64 --layout auto
  volume="$(find "$input" -name '*.nii.gz' -path '*images*' | sort | tail -n 1)"
  grid_args=(--variants dmnet,supervised --fractions 100% --seeds 0 --jobs 2)
elif [[ -d "$la" && -z "${PHANTOM:-}" ]]; then
  input="$la"
  pipeline=pipelines/la2018-cpu.toml
  step "ingest LA2018 ($la) with $pipeline: all slices, 64×64, 20 % of the training patients labeled"
  # the grid's shards: its (public, built-in) salt, hence its patient split, and exact float32
  # images, so that this is seed 0 of the committed grid (docs/results-la2018.md)
  env -u DMNET_SALT "$bin/dmnet-prep" ingest --input "$input" --out "$out/shards" --pipeline "$pipeline" \
    --image-dtype float32 2> >(grep -v 'PUBLIC built-in salt' >&2)
  volume="$(find "$input" -name '*.nii.gz' -path '*imagesTr*' | sort | tail -n 1)"
  grid_args+=(--fractions 10%)
else
  pipeline=pipelines/demo.toml
  step "synthesize the SYNTHETIC phantom cohort (60 CT patients + 1 DICOM series)"
  "$bin/dmnet-prep" synth --out "$out/data" --patients 60 --dicom-patients 1 --seed 0 --size 96
  step "ingest (pipelines/demo.toml: the paper's protocol, 1 labeled + 2 unlabeled slices per patient)"
  "$bin/dmnet-prep" ingest --input "$out/data/kits19" --out "$out/shards" --pipeline "$pipeline"
  volume="$out/data/kits19/case_00059/imaging.nii.gz"
  dicom="$out/data/dicom/case_00060"
  grid_args=(--variants dmnet,supervised --fractions 100% --seeds 0 --jobs 2)
fi
[[ -n "${STEPS:-}" ]] && grid_args+=(--steps "$STEPS")
"$bin/dmnet-prep" inspect "$out/shards" | head -n 20

train_pipeline="$pipeline"
[[ "$pipeline" == pipelines/la2018-cpu.toml ]] || train_pipeline=pipelines/demo.toml
step "train DMNet and the supervised variant on the same split ($train_pipeline), evaluate on test"
"$bin/dmnet-train" grid --shards "$out/shards" --out "$out/runs" --pipeline "$train_pipeline" \
  "${grid_args[@]}" | tee "$out/results.md"

step "export DMNet to ONNX and verify it against the tch checkpoint"
run="$(find "$out/runs" -maxdepth 1 -type d -name 'dmnet-*-seed0' | head -n 1)"
"$bin/dmnet-export" --run "$run" --out "$out/model/dmnet.onnx" --verify --shards "$out/shards"

step "infer with ONNX Runtime"
"$bin/dmnet-infer" --model "$out/model/dmnet.onnx" --input "$volume" --out "$out/masks"
[[ -n "$dicom" ]] && "$bin/dmnet-infer" --model "$out/model/dmnet.onnx" --input "$dicom" --out "$out/masks-dicom"
"$bin/dmnet-infer" --model "$out/model/dmnet.onnx" --input "$out/shards" --split test --out "$out/eval-onnx"

step "results"
# the test mIoU and per-case Dice tables of grid.md, best and last checkpoints
awk '/^\| test (mIoU|per-case Dice) %/ {show = 1} /^$/ {if (show) print ""; show = 0} show' "$out/results.md"
printf '\nONNX Runtime on the test shards: '
grep -o '"miou": [0-9.]*' "$out/eval-onnx/metrics.json" | head -n 1
cat <<EOT

Artifacts (under $out/):
  data/          the ${DATA:+input is $DATA; }SYNTHETIC cohort (KiTS19 layout + DICOM), if generated
  shards/        Parquet slice shards (data/), _manifest.json, _splits.json (schemas/shard-v2.md)
  runs/          one run dir per variant (config.json, metrics.jsonl, curves.png, checkpoints/),
                 grid.md + grid.json (the table above)
  model/         dmnet.onnx + dmnet.json sidecar (schemas/model-sidecar-v1.md)
  masks*/        uint8 NIfTI masks in the input's geometry
  eval-onnx/     predictions.parquet + metrics.json from the test shards
EOT
