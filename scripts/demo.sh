#!/usr/bin/env bash
# dmnet demo: builds the binaries and runs the pipeline on the embedded default.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release --locked --bins
bin=target/release
"$bin/dmnet-train" check-device --device auto
"$bin/dmnet-infer" runtime
