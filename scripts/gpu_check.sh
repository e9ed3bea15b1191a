#!/usr/bin/env bash
# gpu_check: prove dmnet on CUDA in one short call on a bare GPU host (issue 15), or rehearse
# every step of that on CPU (CI: `make gpu-rehearsal`). Only the device differs between the two.
#
# Usage: scripts/gpu_check.sh [--device cuda|cpu] [--steps N] [--net paper|small] [--carry DIR]
#                             [--python PY] [--budget SECONDS] [--keep] [OUT_DIR]
#   --device   cuda (default) or cpu (the rehearsal)
#   --steps    timed training steps per run (default 20 on cuda, 2 on cpu)
#   --net      paper: ResNet-101 DMNet with the discriminator, 224, batch 8+8 (default on cuda);
#              small: ResNet-18 at width 0.25, 224, batch 2+2 (default on cpu, where one step
#              of the paper's network takes minutes on 2 cores). Same code path, same steps.
#   --carry    what scripts/carry_for_gpu.sh made: bin/, lib/, data/ (default target/gpu-carry)
#   --python   the host Python whose torch gives libtorch (default $DMNET_CHECK_PYTHON, python3)
#   --budget   seconds for all steps; a step gets at most what is left (default 540 on cuda,
#              none on cpu), so one hang cannot eat the slot
#   --keep     keep the heavy outputs (shards, checkpoints, ONNX, predictions)
#   OUT_DIR    where everything goes (default $OUT, else target/gpu-check-<device>)
#
# Steps (each under its own `timeout`, each recorded in OUT_DIR/steps.jsonl):
#   preflight   host torch's lib/ first on LD_LIBRARY_PATH (the binaries' RUNPATH to the build
#               machine's venv comes after it), libtorch_cpu resolved there, `check-device`
#   prep        dmnet-prep ingest of the carried LA2018 studies at 224 (Parquet shards)
#   train-fp32  dmnet-train (--net), 2N steps with validation rounds of N (--steps 2N
#               --eval-every N); the second (warm) round's training seconds are timed
#   train-amp   the same with --amp
#   torch-eager the same step in PyTorch eager (scripts/bench_train_torch.py), same device
#   eval        dmnet-train eval on the test split
#   export      dmnet-export --verify (ONNX Runtime vs tch on 16 slices; tch runs on CPU there)
#   flops       GFLOP of one training step of the exported network (Conv nodes; needs a Python with
#               the onnx package, else skipped), for the achieved TFLOP/s in the summary
#   infer       dmnet-infer --device <device>; on cuda only with this Python's onnxruntime-gpu,
#               else "not available on this host"; a fallback to another provider fails the step
#   infer-cpu   (cuda only) the CPU provider's throughput with the carried ONNX Runtime
# Then OUT_DIR/summary.json and OUT_DIR/table.md (printed). Exit 0 only when no step failed.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DEVICE=cuda STEPS="" NET="" CARRY=target/gpu-carry PY="${DMNET_CHECK_PYTHON:-python3}" BUDGET="" KEEP=0
DEST=""
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --steps) STEPS="$2"; shift 2 ;;
    --net) NET="$2"; shift 2 ;;
    --carry) CARRY="$2"; shift 2 ;;
    --python) PY="$2"; shift 2 ;;
    --budget) BUDGET="$2"; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) sed -n '2,35p' "$0"; exit 0 ;;
    -*) echo "unknown argument $1" >&2; exit 2 ;;
    *) DEST="$1"; shift ;;
  esac
done
case "$DEVICE" in cuda|cpu) ;; *) echo "--device must be cuda or cpu" >&2; exit 2 ;; esac
if [ "$DEVICE" = cuda ]; then STEPS=${STEPS:-20} BUDGET=${BUDGET:-540} NET=${NET:-paper}
else STEPS=${STEPS:-2} BUDGET=${BUDGET:-0} NET=${NET:-small}; fi
case "$STEPS" in ''|*[!0-9]*|0) echo "--steps must be a positive integer" >&2; exit 2 ;; esac
# The network: dmnet-train's flags and bench_train_torch.py's, the same network in both.
case "$NET" in
  paper) ENC=101 WIDTH=1 NL=8 NU=8 ;;
  small) ENC=18 WIDTH=0.25 NL=2 NU=2 ;;
  *) echo "--net must be paper or small" >&2; exit 2 ;;
esac
DEST=${DEST:-${OUT:-target/gpu-check-$DEVICE}}
mkdir -p "$DEST"
DEST=$(cd "$DEST" && pwd)
WORK=$DEST/work LOGS=$DEST/logs
rm -rf "$WORK" "$LOGS" "$DEST/steps.jsonl" "$DEST/summary.json" "$DEST/table.md"
mkdir -p "$WORK" "$LOGS"
LIB=(python3 scripts/gpu_check_lib.py)
BIN=$WORK/bin   # the carry's bin/, unpacked
SHARDS=$WORK/shards
T0=$(date +%s)

# Per-step time limits (seconds): first the cuda column, then the cpu one (2 slow cores).
declare -A LIMIT_CUDA=([preflight]=60 [prep]=120 [train-fp32]=180 [train-amp]=180
  [torch-eager]=180 [eval]=120 [export]=180 [infer]=120 [infer-cpu]=120)
declare -A LIMIT_CPU=([preflight]=120 [prep]=600 [train-fp32]=1800 [train-amp]=1800
  [torch-eager]=1800 [eval]=900 [export]=900 [infer]=900 [infer-cpu]=900)

say() { printf '[gpu_check %4ss] %s\n' "$(($(date +%s) - T0))" "$*" >&2; }

# limit STEP: its time limit, cut to what is left of --budget (0 = skip: no time left).
limit() {
  local l
  if [ "$DEVICE" = cuda ]; then l=${LIMIT_CUDA[$1]}; else l=${LIMIT_CPU[$1]}; fi
  if [ "$BUDGET" -gt 0 ]; then
    local left=$((BUDGET - ($(date +%s) - T0) - 15))
    [ "$left" -lt 20 ] && { echo 0; return; }
    [ "$left" -lt "$l" ] && l=$left
  fi
  echo "$l"
}

# record STEP STATUS NOTE [RESULT_JSON ...] [--set k=v ...]: one line of steps.jsonl.
record() {
  local step=$1 status=$2 note=$3; shift 3
  "${LIB[@]}" record --out "$DEST" --step "$step" --status "$status" --note "$note" "$@"
  say "$step: $status${note:+ ($note)}"
}

# run STEP CMD...: runs CMD under `timeout` with memory sampling; log LOGS/STEP.log, result
# WORK/STEP.result.json. Returns CMD's status (124/137: timed out; 125: no time left).
run() {
  local step=$1; shift
  local l; l=$(limit "$step")
  if [ "$l" -le 0 ]; then return 125; fi
  say "$step: running (limit ${l}s)"
  "${LIB[@]}" measure --device "$DEVICE" --timeout "$l" --log "$LOGS/$step.log" \
    --result "$WORK/$step.result.json" -- "$@"
  return "$("${LIB[@]}" json "$WORK/$step.result.json" rc)"
}

# fail_or_timeout STEP RC NOTE: records a failed step (or a timed out / unrun one).
fail_or_timeout() {
  local step=$1 rc=$2 note=$3 res=()
  [ -f "$WORK/$step.result.json" ] && res=(--from "$WORK/$step.result.json")
  case "$rc" in
    124|137) record "$step" timeout "killed at its time limit; see logs/$step.log" "${res[@]}" ;;
    125) record "$step" skipped "no time left in --budget $BUDGET" ;;
    *) record "$step" failed "$note; see logs/$step.log" "${res[@]}" ;;
  esac
}

host_info() {
  local gpu=null
  if command -v nvidia-smi >/dev/null; then
    gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader -i 0 2>/dev/null | head -n1)
  fi
  "${LIB[@]}" host --out "$DEST" --device "$DEVICE" --gpu "$gpu" --carry "$CARRY" \
    --torch "$WORK/torch.json" --ort "$WORK/ort.json"
}

# ---- preflight: libraries, binaries, device
preflight() {
  "$PY" "${LIB[1]}" probe-torch > "$WORK/torch.json" 2>/dev/null || echo '{"ok": false}' > "$WORK/torch.json"
  if [ "$("${LIB[@]}" json "$WORK/torch.json" ok)" != True ] && [ "$DEVICE" = cpu ] \
     && [ -x .venv-ref/bin/python ]; then
    PY=.venv-ref/bin/python   # the reference venv (scripts/setup.sh --reference)
    "$PY" "${LIB[1]}" probe-torch > "$WORK/torch.json" 2>/dev/null || echo '{"ok": false}' > "$WORK/torch.json"
  fi
  "$PY" "${LIB[1]}" probe-ort > "$WORK/ort.json" 2>/dev/null || echo '{"cuda_ep": false, "why_not": "probe failed"}' > "$WORK/ort.json"
  TORCH_OK=$("${LIB[@]}" json "$WORK/torch.json" ok)
  local why="" unpacked
  if ! unpacked=$("${LIB[@]}" unpack --carry "$CARRY" --work "$WORK" 2>&1); then
    why="cannot unpack $CARRY (run scripts/carry_for_gpu.sh and carry that folder): ${unpacked##*$'\n'}"
  fi
  for b in dmnet-prep dmnet-train dmnet-export dmnet-infer; do
    [ -x "$BIN/$b" ] || why="${why:-$BIN/$b missing (run scripts/carry_for_gpu.sh and carry $CARRY)}"
  done
  ORT_CPU=$(ls "$WORK"/lib/libonnxruntime.so.1.* 2>/dev/null | head -n1)
  [ -n "$ORT_CPU" ] || why="${why:-no $CARRY/lib/libonnxruntime.so.1.*}"
  local torch_note
  if [ "$TORCH_OK" = True ]; then
    TORCH_LIB=$("${LIB[@]}" json "$WORK/torch.json" lib)
    # The binaries' RUNPATH names the build machine's venv; LD_LIBRARY_PATH is searched first.
    export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    torch_note="torch $("${LIB[@]}" json "$WORK/torch.json" version) at $TORCH_LIB"
  elif [ "$DEVICE" = cuda ]; then
    why="${why:-$PY cannot import torch: $("${LIB[@]}" json "$WORK/torch.json" error)}"
  else
    TORCH_LIB=""
    torch_note="no importable torch; libtorch from the binaries' RUNPATH"
  fi
  host_info
  if [ -n "$why" ]; then record preflight failed "$why"; return 1; fi
  local resolved
  resolved=$(ldd "$BIN/dmnet-train" 2>&1 | awk '$1 == "libtorch_cpu.so" {print $3}')
  if [ -z "$resolved" ] || [ "$resolved" = "not" ]; then
    record preflight failed "libtorch_cpu.so not found by the loader ($torch_note)"; return 1
  fi
  if [ -n "$TORCH_LIB" ] && [ "$(readlink -f "$(dirname "$resolved")")" != "$(readlink -f "$TORCH_LIB")" ]; then
    record preflight failed "libtorch_cpu.so resolves to $resolved, not under $TORCH_LIB"; return 1
  fi
  run preflight bash -c "set -e; for b in dmnet-prep dmnet-train dmnet-export dmnet-infer; do \"$BIN/\$b\" --version; done; \"$BIN/dmnet-train\" check-device --device $DEVICE"
  local rc=$?
  [ "$rc" = 0 ] || { fail_or_timeout preflight "$rc" "a binary does not start or check-device failed"; return 1; }
  local got want=Cpu
  [ "$DEVICE" = cuda ] && want="Cuda(0)"
  got=$(tail -n1 "$LOGS/preflight.log")
  if [ "$got" != "$want" ]; then
    record preflight failed "check-device --device $DEVICE printed '$got', not $want" --from "$WORK/preflight.result.json"; return 1
  fi
  record preflight ok "unpacked: $unpacked; $torch_note; libtorch_cpu.so -> $resolved; check-device: $got" --from "$WORK/preflight.result.json"
}

# ---- prep: the carried raw studies -> shards at 224. Split 9:0:1 (of 8: 7 train, 1 test, no
# val, so no per-epoch validation pass), half of the training patients labeled.
prep() {
  sed 's/^split_ratio = .*/split_ratio = [9, 0, 1]/' pipelines/la2018.toml > "$WORK/la2018-check.toml"
  if ! grep -q '^split_ratio = \[9, 0, 1\]' "$WORK/la2018-check.toml"; then
    record prep failed "pipelines/la2018.toml has no split_ratio line to rewrite"; return 1
  fi
  run prep "$BIN/dmnet-prep" ingest --input "$CARRY/data/la2018" --out "$SHARDS" \
    --pipeline "$WORK/la2018-check.toml" --size 224 --labeled-patient-fraction 0.5 -q
  local rc=$?
  [ "$rc" = 0 ] || { fail_or_timeout prep "$rc" "dmnet-prep ingest failed"; return 1; }
  record prep ok "$(grep -m1 'studies ok' "$LOGS/prep.log")" --from "$WORK/prep.result.json"
}

# ---- train: 2N steps in two rounds of N (a round ends with a checkpoint; no val split, so no
# validation pass); the second (warm) round's train_seconds are timed.
train() {
  local step=$1; shift
  run "$step" "$BIN/dmnet-train" --shards "$SHARDS" --out "$WORK/run-$step" \
    --pipeline "$WORK/la2018-check.toml" --encoder "resnet$ENC" --width "$WIDTH" --variant dmnet \
    --size 224 --labeled-batch "$NL" --unlabeled-batch "$NU" --steps $((2 * STEPS)) \
    --eval-every "$STEPS" --unlabeled-pass separate --device "$DEVICE" "$@"
  local rc=$?
  [ "$rc" = 0 ] || { fail_or_timeout "$step" "$rc" "dmnet-train failed"; return 1; }
  "${LIB[@]}" train --run "$WORK/run-$step" --log "$LOGS/$step.log" --device "$DEVICE" > "$WORK/$step.train.json"
  rc=$?
  local n; n=$("${LIB[@]}" note-train "$WORK/$step.train.json")
  # 0.8 GiB per checkpoint of the paper's network: keep only what eval and export read
  # (train-fp32's last).
  if [ "$KEEP" = 0 ]; then
    rm -rf "$WORK/run-$step/checkpoints/best"
    [ "$step" = train-fp32 ] || rm -rf "$WORK/run-$step/checkpoints"
  fi
  if [ "$rc" = 0 ]; then record "$step" ok "$n" --from "$WORK/$step.result.json" --from "$WORK/$step.train.json"
  else record "$step" failed "$n" --from "$WORK/$step.result.json" --from "$WORK/$step.train.json"; fi
}

# ---- the same step in PyTorch eager (needs a torch that imports)
torch_eager() {
  if [ "$TORCH_OK" != True ]; then
    record torch-eager skipped "skipped: no importable torch ($PY; .venv-ref absent: scripts/setup.sh --reference)"; return 0
  fi
  run torch-eager "$PY" scripts/bench_train_torch.py --encoder "$ENC" --width "$WIDTH" --size 224 \
    --labeled-batch "$NL" --unlabeled-batch "$NU" --steps "$STEPS" --warmup 2 --pass separate \
    --device "$DEVICE"
  local rc=$?
  [ "$rc" = 0 ] || { fail_or_timeout torch-eager "$rc" "bench_train_torch.py failed"; return 1; }
  local s; s=$(grep '"s_per_step"' "$LOGS/torch-eager.log" | tail -n1 | "${LIB[@]}" json - s_per_step)
  record torch-eager ok "$(printf '%.3f s/step' "$s")" --from "$WORK/torch-eager.result.json" --set "s_per_step=$s"
}

# ---- eval on the test split
evaluate() {
  run eval "$BIN/dmnet-train" eval --run "$WORK/run-train-fp32" --shards "$SHARDS" --split test \
    --checkpoint last --device "$DEVICE"
  local rc=$?
  [ "$rc" = 0 ] || { fail_or_timeout eval "$rc" "dmnet-train eval failed"; return 1; }
  local want="device: cpu" f="$WORK/run-train-fp32/eval-test-last.json"
  [ "$DEVICE" = cuda ] && want="device: cuda:0"
  if ! grep -q "$want" "$LOGS/eval.log"; then
    record eval failed "the log does not say '$want': not run on $DEVICE" --from "$WORK/eval.result.json"; return 1
  fi
  record eval ok "$(grep -m1 -o "$want" "$LOGS/eval.log"); test Dice $("${LIB[@]}" json "$f" metrics.mean_dice) on $("${LIB[@]}" json "$f" metrics.slices) slices" \
    --from "$WORK/eval.result.json"
}

# ---- export + verify (ONNX Runtime CPU vs tch)
export_verify() {
  ORT_DYLIB_PATH="$ORT_CPU" run export "$BIN/dmnet-export" --run "$WORK/run-train-fp32" \
    --out "$WORK/model/dmnet.onnx" --checkpoint last --verify --shards "$SHARDS" --verify-slices 16
  local rc=$?
  local v; v=$(grep -m1 '^verify:' "$LOGS/export.log")
  [ "$rc" = 0 ] || { fail_or_timeout export "$rc" "dmnet-export --verify failed${v:+: $v}"; return 1; }
  record export ok "$v" --from "$WORK/export.result.json"
}

# ---- flops: GFLOP per training step from the architecture, cross-checked against the exported
# graph's Conv nodes where a Python with the onnx package exists (not timed; no device)
flops() {
  local py=python3 c x=""
  for c in "$PY" .venv/bin/python python3; do
    if command -v "$c" >/dev/null && "$c" -c 'import onnx' 2>/dev/null; then py=$c; break; fi
  done
  if ! timeout 120 "$py" "${LIB[1]}" flops --encoder "$ENC" --width "$WIDTH" --size 224 \
       --labeled-batch "$NL" --unlabeled-batch "$NU" --onnx "$WORK/model/dmnet.onnx" \
       > "$WORK/flops.json" 2> "$LOGS/flops.log"; then
    record flops failed "the exported graph's MACs differ from the architecture's; see logs/flops.log" \
      $([ -s "$WORK/flops.json" ] && echo --from "$WORK/flops.json"); return 1
  fi
  c=$("${LIB[@]}" json "$WORK/flops.json" onnx)
  case "$c" in skipped*) x="; ONNX cross-check $c" ;;
    *) x="; ONNX graph/architecture $("${LIB[@]}" json "$WORK/flops.json" onnx_over_architecture)" ;; esac
  record flops ok "$("${LIB[@]}" json "$WORK/flops.json" train_step_gflop) GFLOP per training step, $("${LIB[@]}" json "$WORK/flops.json" segmenter_gflop_per_slice_fwd) per slice forward$x" \
    --from "$WORK/flops.json"
}

# infer_run STEP PROVIDER ORTLIB DEVICE [LD_LIBRARY_PATH prefix]: dmnet-infer on the test split.
infer_run() {
  local step=$1 want=$2 lib=$3 dev=$4 pre=${5:-} rc
  local cmd=("$BIN/dmnet-infer" --ort-lib "$lib" --device "$dev" --model "$WORK/model/dmnet.onnx"
    --input "$SHARDS" --split test --out "$WORK/$step" --batch 16)
  if [ -n "$pre" ]; then
    # onnxruntime-gpu's CUDA provider finds cuDNN/cuBLAS in the nvidia wheels through this path.
    LD_LIBRARY_PATH="$pre${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" run "$step" "${cmd[@]}"; rc=$?
  else
    run "$step" "${cmd[@]}"; rc=$?
  fi
  [ "$rc" = 0 ] || { fail_or_timeout "$step" "$rc" "dmnet-infer --device $dev failed"; return 1; }
  local s="$WORK/$step/summary.json" got
  got=$("${LIB[@]}" json "$s" provider)
  local sps; sps=$("${LIB[@]}" json "$s" slices_per_second)
  local note; note="$(printf '%.1f' "$sps") slices/s on $got ($("${LIB[@]}" json "$s" slices) slices, $(basename "$lib"))"
  if [ "$got" != "$want" ]; then
    record "$step" failed "asked for $want, ran on $got: a silent fallback" --from "$WORK/$step.result.json"; return 1
  fi
  record "$step" ok "$note" --from "$WORK/$step.result.json" --set "slices_per_s=$sps" --set "provider=$got"
}

infer() {
  if [ "$DEVICE" = cpu ]; then
    infer_run infer CPUExecutionProvider "$ORT_CPU" cpu
    record infer-cpu skipped "device cpu: the infer step is the CPU provider"
    return
  fi
  if [ "$("${LIB[@]}" json "$WORK/ort.json" cuda_ep)" = True ]; then
    local dirs; dirs=$("${LIB[@]}" json "$WORK/ort.json" lib_dirs | python3 -c 'import json,sys; print(":".join(json.load(sys.stdin)))')
    infer_run infer CUDAExecutionProvider "$("${LIB[@]}" json "$WORK/ort.json" lib)" cuda "$dirs"
  else
    record infer n/a "CUDA execution provider not available on this host: $("${LIB[@]}" json "$WORK/ort.json" why_not)"
  fi
  infer_run infer-cpu CPUExecutionProvider "$ORT_CPU" cpu
}

budget_note="no time budget"
[ "$BUDGET" -gt 0 ] && budget_note="budget ${BUDGET}s"
say "device $DEVICE, net $NET (ResNet-$ENC x$WIDTH, batch $NL+$NU), $STEPS timed steps per run, carry $CARRY, output $DEST, $budget_note"
if preflight; then
  if prep; then
    train train-fp32
    train train-amp --amp
    torch_eager
    if [ -f "$WORK/run-train-fp32/checkpoints/last/model.safetensors" ]; then
      evaluate
      export_verify && { flops; infer; }
    else
      record eval skipped "no fp32 run to evaluate"
    fi
  fi
fi
if [ "$KEEP" = 0 ]; then
  rm -rf "$SHARDS" "$WORK/bin" "$WORK/lib" "$WORK"/run-*/checkpoints "$WORK"/model/*.onnx "$WORK"/infer*/predictions.parquet
fi
"${LIB[@]}" summary --out "$DEST" --device "$DEVICE" --steps "$STEPS" --net "ResNet-$ENC x$WIDTH DMNet, 224, batch $NL+$NU"
rc=$?
say "done in $(($(date +%s) - T0)) s: $DEST/summary.json, $DEST/table.md"
exit $rc
