#!/usr/bin/env bash
# dmnet setup: a project-local, git-ignored Python venv (.venv) holding libtorch (for tch),
# ONNX Runtime and the Python clients the tests use, plus stable links under .dmnet/ that
# .cargo/config.toml points at. Idempotent: a second run checks a stamp and returns in seconds.
#
#   scripts/setup.sh          CPU variant (default, ~1.5 GB)
#   scripts/setup.sh --gpu    GPU variant: full CUDA 13 torch 2.11.0 + onnxruntime-gpu (~5 GB)
#   DMNET_GPU=1 make test     same as --gpu, through make
#   scripts/setup.sh --reference   only the reference venv .venv-ref (PyTorch, NumPy, SciPy,
#                             MedPy, h5py; ~5 GB) that regenerates the golden files
#                             (tests/golden/*.py); the tests themselves never need it
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
if [[ "${1:-}" == "--reference" ]]; then
  ref="$root/.venv-ref"
  ref_stamp="$ref/.dmnet-reference"
  ref_want="$(sha256sum scripts/requirements-reference.txt | cut -c1-16)"
  if [[ -f "$ref_stamp" && "$(cat "$ref_stamp")" == "$ref_want" ]]; then
    printf '[setup] reference venv current: %s\n' "$ref/bin/python" >&2; exit 0
  fi
  [[ -x "$ref/bin/python" ]] || "${PYTHON:-python3}" -m venv "$ref"
  printf '[setup] installing the reference venv (torch 2.11.0 from PyPI with its CUDA wheels, ~5 GB once)\n' >&2
  "$ref/bin/python" -m pip install -q --disable-pip-version-check -r scripts/requirements-reference.txt
  echo "$ref_want" > "$ref_stamp"
  printf '[setup] ready: %s (run e.g. .venv-ref/bin/python tests/golden/training.py)\n' "$ref/bin/python" >&2
  exit 0
fi
variant=cpu
[[ "${1:-}" == "--gpu" || "${DMNET_GPU:-0}" == "1" ]] && variant=gpu
venv="$root/.venv"
py="${PYTHON:-python3}"
stamp="$venv/.dmnet-setup-$variant"
want="$(cat scripts/requirements-*.txt scripts/setup.sh | sha256sum | cut -c1-16)"

say() { printf '[setup] %s\n' "$*" >&2; }

need_apt=()
command -v cc >/dev/null || need_apt+=(gcc g++)
command -v pkg-config >/dev/null || need_apt+=(pkg-config)
command -v readelf >/dev/null || need_apt+=(binutils)
# cmake builds the bundled CharLS (JPEG-LS decoding, crate charls-sys); dcm2niix is the
# reference DICOM converter the reader tests and scripts/dcm2niix_conformance.sh compare with
command -v cmake >/dev/null || need_apt+=(cmake)
command -v dcm2niix >/dev/null || need_apt+=(dcm2niix)
if ((${#need_apt[@]})); then
  say "installing system packages: ${need_apt[*]}"
  if [[ $(id -u) == 0 ]]; then apt-get update -qq && apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else sudo apt-get update -qq && sudo apt-get install -y -qq "${need_apt[@]}" >/dev/null; fi
fi
if ! command -v cargo >/dev/null; then
  say "error: cargo not found; install Rust with rustup (https://rustup.rs) and re-run" ; exit 1
fi

if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  : # venv is current
else
  [[ -x "$venv/bin/python" ]] || { say "creating $venv"; "$py" -m venv "$venv"; }
  pip=("$venv/bin/python" -m pip install -q --disable-pip-version-check)
  if [[ $variant == gpu ]]; then
    say "installing the GPU variant (torch 2.11.0 with CUDA 13 wheels, onnxruntime-gpu); this downloads ~2.6 GB once"
    "${pip[@]}" -r scripts/requirements-gpu.txt
    grep -v '^onnxruntime==' scripts/requirements-clients.txt > "$venv/clients-gpu.txt"
    "${pip[@]}" -r "$venv/clients-gpu.txt"
  else
    say "installing libtorch (torch 2.11.0 wheel, CPU use, --no-deps) and the clients; ~1.5 GB once"
    "${pip[@]}" --no-deps -r scripts/requirements-cpu.txt
    "${pip[@]}" -r scripts/requirements-clients.txt 2>&1 | grep -v -e 'requires' -e "pip's dependency resolver" >&2 || true
  fi
  echo "$want" > "$stamp"
fi

site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
ortlib="$(ls "$site"/onnxruntime/capi/libonnxruntime.so.1.* 2>/dev/null | head -n1)"
[[ -d "$site/torch/lib" ]] || { say "error: $site/torch/lib missing after install"; exit 1; }
[[ -n "$ortlib" ]] || { say "error: no libonnxruntime.so.1.* under $site/onnxruntime/capi"; exit 1; }
mkdir -p .dmnet
ln -sfn "$site/torch" .dmnet/libtorch
ln -sfn "$ortlib" .dmnet/libonnxruntime.so
ln -sfn "$site/onnx/onnx.proto" .dmnet/onnx.proto
# A wrapper, not a link: Python finds its venv from the path it is started by.
rm -f .dmnet/python
printf '#!/bin/sh\nexec "%s" "$@"\n' "$venv/bin/python" > .dmnet/python
chmod +x .dmnet/python
say "ready ($variant): libtorch=.dmnet/libtorch onnxruntime=$(basename "$ortlib")"
