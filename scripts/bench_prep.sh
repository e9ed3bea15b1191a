#!/usr/bin/env bash
# `bench prep` (a benchmark, not a test): dmnet-prep vs a Python reference (nibabel + numpy +
# pyarrow, a process pool of the same size) on la2018, all-slices protocol: slices/s, their
# ratio, the time to merely decompress the inputs, and peak RSS for 10 vs 40 studies.
#
#   scripts/bench_prep.sh [WORKERS] [SIZE]        (defaults: all cores, 224)
#   DMNET_SHARED_DATA=/path/to/data scripts/bench_prep.sh 2 224
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
workers="${1:-$(nproc)}"
size="${2:-224}"
data="${DMNET_SHARED_DATA:-$root/../shared/data}/la2018"
py="${DMNET_PYTHON:-$root/.dmnet/python}"
[[ -d "$data" ]] || { echo "la2018 not found at $data" >&2; exit 1; }
cargo build --release --no-default-features --bin dmnet-prep >&2
bin="${CARGO_TARGET_DIR:-$root/target}/release/dmnet-prep"
"$py" scripts/bench_prep.py bench --bin "$bin" --input "$data" --workers "$workers" --size "$size"
