#!/usr/bin/env bash
# Reruns dmnet's cargo-fuzz targets one after another (docs/reliability.md): the NIfTI reader,
# the DICOM series assembler, the DICOM SEG reader, the shard reader, the sidecar parser and
# the SSL4MIS h5 reader
# (entry points: src/fuzzing.rs; targets: fuzz/fuzz_targets/).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]   default: 600 s each, all six targets
#   FUZZ_DIR=dir   seeds/, corpus/<target>/, artifacts/<target>/, logs (default ~/.cache/dmnet-fuzz)
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`) and a nightly toolchain, or stable with
# RUSTC_BOOTSTRAP=1 (fuzzing only; the project itself builds on stable). Seeds are made once by
# scripts/fuzz_seeds.py from ../shared/data. Runs under `nice -n 19`, one target at a time, in
# libFuzzer's fork mode so that a crash is saved and fuzzing goes on. A crash is a file in
# artifacts/<target>/: minimise it (`cargo fuzz tmin <target> <file>`), add it to
# tests/fuzz-regressions/<target>/ and fix the reader.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
secs="${1:-600}"
shift || true
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(nifti dicom_series dicom_seg shard sidecar h5)
dir="${FUZZ_DIR:-$HOME/.cache/dmnet-fuzz}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"

if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  fuzz=(cargo +nightly fuzz)
else
  export RUSTC_BOOTSTRAP=1
  fuzz=(cargo fuzz)
fi
flags=(-s none -a) # no sanitizer (safe Rust), debug assertions on (overflow checks)

if [[ ! -d "$dir/seeds" ]]; then
  cargo build --locked --bins
  py="${DMNET_PYTHON:-.dmnet/python}"
  "$py" scripts/fuzz_seeds.py "$dir/seeds.tmp" --bins "${CARGO_TARGET_DIR:-target}/debug"
  mv "$dir/seeds.tmp" "$dir/seeds"
fi

# the fuzz crate has its own workspace and target folder
(cd fuzz && env -u CARGO_TARGET_DIR nice -n 19 "${fuzz[@]}" build "${flags[@]}")

for t in "${targets[@]}"; do
  mkdir -p "$dir/corpus/$t" "$dir/artifacts/$t"
  log="$dir/$t.log"
  dict=()
  case "$t" in
    nifti) dict=(-dict=nifti.dict) ;;
    dicom_*) dict=(-dict=dicom.dict) ;;
  esac
  echo "== $t: ${secs}s, corpus $dir/corpus/$t, log $log"
  (cd fuzz && env -u CARGO_TARGET_DIR nice -n 19 "${fuzz[@]}" run "${flags[@]}" "$t" \
    "$dir/corpus/$t" "$dir/seeds/$t" -- \
    -max_total_time="$secs" -fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 \
    -timeout=10 -rss_limit_mb=2048 -artifact_prefix="$dir/artifacts/$t/" "${dict[@]}" >"$log" 2>&1) || true
  execs="$(grep -o '^#[0-9]*' "$log" | tail -n 1 | tr -d '#')"
  crashes="$(find "$dir/artifacts/$t" -type f | wc -l)"
  echo "$t: ${execs:-0} executions, corpus $(find "$dir/corpus/$t" -type f | wc -l) inputs, $crashes artifacts (crash/timeout/oom) in $dir/artifacts/$t"
  # distinct failures: replay every artifact once (10 s each at most), group by site
  bin="fuzz/target/x86_64-unknown-linux-gnu/release/$t"
  for a in "$dir/artifacts/$t"/*; do
    [[ -f "$a" ]] || continue
    out="$(RUST_BACKTRACE=0 timeout 60 "$bin" -timeout=10 -rss_limit_mb=2048 "$a" 2>&1 || true)"
    site="$(grep -m1 -A1 'panicked at' <<<"$out" | sed -E 's/.*panicked at //' | tr '\n' ' ' | cut -c1-140 || true)"
    [[ -n "$site" ]] || site="$(grep -m1 -oE 'memory allocation of [0-9]+ bytes failed|libFuzzer: [a-z-]+' <<<"$out" || true)"
    echo "  ${site:-no failure on replay}"
  done | sed -E "s/[0-9]{4,}/N/g" | sort | uniq -c | sort -rn
done
rm -rf /dev/shm/dmnet-fuzz-* "${TMPDIR:-/tmp}"/dmnet-fuzz-* 2>/dev/null || true
