#!/usr/bin/env bash
# Compares dmnet's DICOM reader with Debian's dcm2niix on every series under a folder
# (default ../shared/data/dicom): one line per series (IDENTICAL / DIFFERENT / REFUSED).
# dcm2niix comes from scripts/setup.sh (Debian package `dcm2niix`).
#   scripts/dcm2niix_conformance.sh [DICOM_ROOT]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
command -v dcm2niix >/dev/null || { echo "dcm2niix not found: run scripts/setup.sh (apt-get install dcm2niix)" >&2; exit 1; }
exec cargo run -q --no-default-features --example dcm2niix_conformance -- "${1:-$root/../shared/data/dicom}"
