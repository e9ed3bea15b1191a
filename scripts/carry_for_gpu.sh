#!/usr/bin/env bash
# carry_for_gpu: build what scripts/gpu_check.sh needs on a bare GPU host (no Rust toolchain, no
# registry access), and print the paths to carry with their total size (< 64 MiB).
#
# Usage: scripts/carry_for_gpu.sh [--profile release|debug] [--studies N] [--data DIR] [--out DIR]
#   --profile  release (default): stripped release binaries, copied. debug: links to the debug
#              binaries `make test` built (the CPU rehearsal; never carried)
#   --studies  LA2018 studies to carry, the first N by name (default 8)
#   --data     the LA2018 folder (default ../shared/data/la2018)
#   --out      default target/gpu-carry (release) or target/gpu-carry-debug (debug)
#
# OUT/bin/      dmnet-train, dmnet-export (libtorch; they find the GPU host's torch through
#               LD_LIBRARY_PATH, which gpu_check.sh sets), dmnet-infer, dmnet-prep (no libtorch);
#               stripped and gzipped (release)
# OUT/lib/      the ONNX Runtime CPU library of this build's venv, gzipped (the host may have none)
# OUT/data/     N raw LA2018 studies (MSD layout): gpu_check.sh makes the 224 shards there,
#               because shards of 8 studies at 224 are ~128 MiB of float32 and the raw ones ~16
# OUT/MANIFEST.json  commit, profile, sizes and sha256 of every file, glibc the binaries need
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PROFILE=release STUDIES=8 DATA=../shared/data/la2018 DEST=""
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) PROFILE="$2"; shift 2 ;;
    --studies) STUDIES="$2"; shift 2 ;;
    --data) DATA="$2"; shift 2 ;;
    --out) DEST="$2"; shift 2 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
case "$PROFILE" in release|debug) ;; *) echo "--profile must be release or debug" >&2; exit 2 ;; esac
[ "$PROFILE" = release ] && DEST=${DEST:-target/gpu-carry} || DEST=${DEST:-target/gpu-carry-debug}
say() { printf '[carry] %s\n' "$*" >&2; }
[ -f "$DATA/dataset.json" ] && [ -d "$DATA/imagesTr" ] || { say "error: no LA2018 (MSD layout) at $DATA"; exit 2; }

TD=${CARGO_TARGET_DIR:-target}
rm -rf "$DEST"
mkdir -p "$DEST/bin" "$DEST/lib" "$DEST/data/la2018/imagesTr" "$DEST/data/la2018/labelsTr"
# put SRC DST: a copy (release) or a link (debug rehearsal: nothing is carried).
put() {
  if [ "$PROFILE" = release ]; then cp "$1" "$2"; else ln -s "$(readlink -f "$1")" "$2"; fi
}
# put_bin SRC DST: release: stripped and gzipped (DST.gz, ~1/4 of the size; gpu_check.sh unpacks
# it with Python's gzip); debug: a link.
put_bin() {
  if [ "$PROFILE" = release ]; then
    cp "$1" "$DEST/tmp-bin" && strip "$DEST/tmp-bin" && gzip -6 -n -c "$DEST/tmp-bin" > "$2.gz"
    rm -f "$DEST/tmp-bin"
  else
    ln -s "$(readlink -f "$1")" "$2"
  fi
}
if [ "$PROFILE" = release ]; then
  BUILT=("$TD/release/dmnet-train" "$TD/release/dmnet-infer")
  say "building release binaries (cold: ~15 min on 2 cores)"
  cargo build -q --release --locked --bin dmnet-train --bin dmnet-export
  for b in dmnet-train dmnet-export; do put_bin "$TD/release/$b" "$DEST/bin/$b"; done
  # Same target dir (the dependencies are shared); this replaces target/release/dmnet-infer and
  # dmnet-prep with their no-libtorch builds, as `make build-infer` does.
  cargo build -q --release --locked --no-default-features --bin dmnet-infer --bin dmnet-prep
  for b in dmnet-infer dmnet-prep; do put_bin "$TD/release/$b" "$DEST/bin/$b"; done
else
  BUILT=("$TD/debug/dmnet-train" "$TD/no-torch/debug/dmnet-infer")
  # What `make test` built: the torch binaries and the no-libtorch ones in target/no-torch.
  # DMNET_TORCH_BIN / DMNET_NO_TORCH_BIN (as `make test` sets the latter) name folders of
  # prebuilt ones instead (no cargo run).
  TB=${DMNET_TORCH_BIN:-}
  if [ -z "$TB" ]; then
    cargo build -q --locked --bin dmnet-train --bin dmnet-export
    TB=$TD/debug
  fi
  BUILT[0]=$TB/dmnet-train
  for b in dmnet-train dmnet-export; do put_bin "$TB/$b" "$DEST/bin/$b"; done
  NT=${DMNET_NO_TORCH_BIN:-}
  if [ -z "$NT" ]; then
    cargo build -q --locked --no-default-features --bin dmnet-infer --bin dmnet-prep --target-dir "$TD/no-torch"
    NT=$TD/no-torch/debug
  fi
  BUILT[1]=$NT/dmnet-infer
  for b in dmnet-infer dmnet-prep; do put_bin "$NT/$b" "$DEST/bin/$b"; done
fi
ORT=$(readlink -f "${DMNET_ORT_DYLIB:-.dmnet/libonnxruntime.so}")
[ -f "$ORT" ] || { say "error: no ONNX Runtime library at ${DMNET_ORT_DYLIB:-.dmnet/libonnxruntime.so} (run scripts/setup.sh)"; exit 1; }
# gzipped in both profiles (33 -> 13 MiB), so the rehearsal unpacks it as the GPU host does.
gzip -6 -n -c "$ORT" > "$DEST/lib/$(basename "$ORT").gz"
put "$(readlink -f "$DATA/dataset.json")" "$DEST/data/la2018/dataset.json"
n=0
for img in "$DATA"/imagesTr/*.nii.gz; do
  [ "$n" -ge "$STUDIES" ] && break
  case=$(basename "$img")
  put "$(readlink -f "$img")" "$DEST/data/la2018/imagesTr/$case"
  [ -f "$DATA/labelsTr/$case" ] && put "$(readlink -f "$DATA/labelsTr/$case")" "$DEST/data/la2018/labelsTr/$case"
  n=$((n + 1))
done

commit="$(git rev-parse HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo '+dirty')"
glibc=$(objdump -T "${BUILT[@]}" 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -n1)
python3 - "$DEST" "$PROFILE" "$commit" "$glibc" "$n" <<'PY'
import hashlib, json, os, sys
dest, profile, commit, glibc, studies = sys.argv[1:]
files, total = [], 0
for root, _, names in os.walk(dest):
    for n in sorted(names):
        p = os.path.join(root, n)
        if n == "MANIFEST.json":
            continue
        size = os.path.getsize(p)  # follows the debug links
        with open(p, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest() if profile == "release" else None
        files.append({"path": os.path.relpath(p, dest), "bytes": size, "sha256": digest})
        total += size
m = {"commit": commit, "profile": profile, "studies": int(studies), "glibc_needed": glibc,
     "total_bytes": total, "total_mib": round(total / 2**20, 1), "files": sorted(files, key=lambda f: f["path"])}
with open(os.path.join(dest, "MANIFEST.json"), "w") as f:
    json.dump(m, f, indent=2)
for f in m["files"]:
    if not f["path"].startswith("data/la2018/"):
        print(f"  {f['bytes'] / 2**20:7.1f} MiB  {dest}/{f['path']}")
data = sum(f["bytes"] for f in files if f["path"].startswith("data/"))
print(f"  {data / 2**20:7.1f} MiB  {dest}/data/la2018/ ({studies} studies)")
print(f"  {total / 2**20:7.1f} MiB  total ({profile}; binaries need {glibc} or newer)")
PY
total=$(python3 -c "import json; print(json.load(open('$DEST/MANIFEST.json'))['total_bytes'])")
if [ "$PROFILE" = release ]; then
  if [ "$total" -ge $((60 * 1024 * 1024)) ]; then
    say "error: the carry is $((total / 1048576)) MiB, over the 60 MiB this script allows (the device tool carries at most 64)"
    exit 1
  fi
  say "carry this one path: $DEST   (device tool: carry=[\"$DEST\"]; then scripts/gpu_check.sh --carry $DEST)"
else
  say "debug rehearsal inputs in $DEST (links; not for carrying)"
fi
