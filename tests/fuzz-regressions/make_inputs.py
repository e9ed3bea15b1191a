#!/usr/bin/env python3
"""The bad inputs of tests/fuzz-regressions/<target>/ that no fuzzer had to find: one or more per
bad-input class that docs/reliability.md ("Bad-input classes") lists for each target, each
derived from a real seed of scripts/fuzz_seeds.py (a real header or file cut, a field changed).
The fuzzer's own finds (nan-sform-*, huge-declared-length*, j2k-null-free-*) sit beside them.
tests/integration/fuzz_regressions.rs feeds every file to the target's entry point: each must
be an `Err` (never a panic, an abort or an `Ok`).

    .venv/bin/python tests/fuzz-regressions/make_inputs.py --bins target/debug

Rewrites only the files it makes (named <class>-<what>.<ext>)."""
import argparse
import io
import json
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent / "scripts"))
import fuzz_seeds as seeds  # noqa: E402


def put(target: str, name: str, data: bytes) -> None:
    d = HERE / target
    d.mkdir(exist_ok=True)
    (d / name).write_bytes(data)
    print(f"{target}/{name}: {len(data)} bytes")


def seed(tmp: Path, target: str, name: str) -> bytes:
    return (tmp / target / name).read_bytes()


def nifti(tmp: Path) -> None:
    b = seed(tmp, "nifti", "la-image.nii")
    put("nifti", "truncated-header.nii", b[:200])
    put("nifti", "truncated-voxels.nii", b[: 352 + (len(b) - 352) // 2])


def dicom(tmp: Path) -> None:
    ct = seed(tmp, "dicom_series", "ct-1slice")
    put("dicom_series", "truncated-pixel-data.dcm", ct[: len(ct) - 100])
    put("dicom_series", "truncated-header.dcm", ct[:300])
    parts = seed(tmp, "dicom_seg", "ct-3slice-liver-1bit").split(seeds.SEP)
    seg = parts[-1]
    put("dicom_seg", "truncated-seg.bin", seeds.SEP.join(parts[:-1] + [seg[: len(seg) * 2 // 3]]))
    # the SEG's frames on another grid than the series': Rows 16 -> 17 without more pixels
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(seg))
    ds.Rows = ds.Rows + 1
    put("dicom_seg", "off-grid-seg-rows.bin", seeds.SEP.join(parts[:-1] + [seeds.dicom_bytes(ds)]))


def shard(tmp: Path) -> None:
    part = sorted((tmp / "shard").glob("spleen-32px-rg4-part-*.parquet"))[0].read_bytes()
    put("shard", "truncated-half.parquet", part[: len(part) // 2])
    put("shard", "truncated-footer.parquet", part[:-3])
    footer = bytearray(part)
    footer[-8:-4] = (len(part) * 4).to_bytes(4, "little")  # footer length past the file
    put("shard", "footer-length.parquet", bytes(footer))
    # a Parquet file that is not a dmnet shard: valid Parquet, no dmnet schema
    buf = io.BytesIO()
    pq.write_table(pa.table({"image": pa.array([1.0, 2.0]), "note": ["a", "b"]}), buf)
    put("shard", "schema-foreign-parquet.parquet", buf.getvalue())
    # dmnet's metadata, an image column one value short of C x H x W in every row
    t = pq.read_table(io.BytesIO(part))
    col = [r[:-1] for r in t.column("image").to_pylist()]
    f = t.schema.field("image")
    short = pa.list_(pa.float32(), len(col[0]))
    t2 = t.set_column(t.schema.get_field_index("image"), pa.field("image", short, metadata=f.metadata), pa.array(col, type=short))
    buf = io.BytesIO()
    pq.write_table(t2, buf, compression="none")
    put("shard", "schema-short-image.parquet", buf.getvalue())


def sidecar(tmp: Path) -> None:
    b = seed(tmp, "sidecar", "spleen-tiny.json")
    put("sidecar", "truncated-json.json", b[: len(b) // 2])
    j = json.loads(b)
    j["schema_version"] = "one"
    put("sidecar", "wrong-type-schema-version.json", json.dumps(j, indent=1).encode())
    j = json.loads(b)
    j["schema_version"] = 99
    put("sidecar", "unknown-version.json", json.dumps(j, indent=1).encode())
    j = json.loads(b)
    j["preprocessing"]["config"]["size"] = 0
    put("sidecar", "out-of-range-size.json", json.dumps(j, indent=1).encode())


def h5(tmp: Path) -> None:
    good = seed(tmp, "h5", "acdc-slice-contiguous.h5")
    put("h5", "truncated-half.h5", good[: len(good) // 2])
    put("h5", "truncated-superblock.h5", good[:40])
    with h5py.File(io.BytesIO(good), "r") as f:
        img, lab = f["image"][()], f["label"][()]

    def write(**datasets) -> bytes:
        buf = io.BytesIO()
        with h5py.File(buf, "w") as f:
            for k, v in datasets.items():
                f.create_dataset(k, data=v)
        return buf.getvalue()

    put("h5", "missing-dataset-label.h5", write(image=img))
    put("h5", "wrong-dtype-string-image.h5", write(image=np.full(img.shape, b"abcd"), label=lab))
    put("h5", "wrong-dtype-complex-label.h5", write(image=img, label=lab.astype(np.complex64)))
    put("h5", "wrong-shape-label.h5", write(image=img, label=lab.T.copy()))
    put("h5", "wrong-shape-4d.h5", write(image=img[None, None], label=lab[None, None]))
    bad = lab.copy()
    bad[0, 0] = 9
    put("h5", "bad-labels-class-9.h5", write(image=img, label=bad))
    put("h5", "bad-labels-fractional.h5", write(image=img, label=lab.astype(np.float32) + 0.5))
    # the dataspace's dimensions made huge: find (12, 10) as two little-endian u64 and replace
    b = bytearray(good)
    dims = (12).to_bytes(8, "little") + (10).to_bytes(8, "little")
    at = b.find(dims)
    assert at > 0, "dataspace dims not found"
    b[at : at + 16] = (1 << 40).to_bytes(8, "little") + (1 << 40).to_bytes(8, "little")
    put("h5", "huge-dims.h5", bytes(b))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bins", type=Path, required=True, help="folder with dmnet-prep/-train/-export")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="dmnet-bad-inputs-") as t:
        t = Path(t)
        out = t / "seeds"
        seeds.nifti_seeds(out)
        seeds.dicom_seeds(out)
        seeds.h5_seeds(out)
        shards = seeds.shard_seeds(out, a.bins, t)
        seeds.sidecar_seeds(out, a.bins, t, shards)
        nifti(out)
        dicom(out)
        shard(out)
        sidecar(out)
        h5(out)


if __name__ == "__main__":
    main()
