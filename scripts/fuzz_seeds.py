#!/usr/bin/env python3
"""Seed corpora for dmnet's cargo-fuzz targets (docs/reliability.md), made from small excerpts
of the real files in ../shared/data and of pydicom's test files. Nothing synthetic: every seed
is a real header (kept field for field) with a small crop of its real voxels, or a real shard /
sidecar written by dmnet itself from real data.

    scripts/fuzz_seeds.py OUT --bins target/debug     # OUT/<target>/<seed>

Targets: nifti, dicom_series, dicom_seg (files joined by the separator of src/fuzzing.rs),
shard, sidecar, h5. The corpora live outside the repository.
"""
import argparse
import gzip
import io
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pydicom
import pyarrow.parquet as pq

SEP = b"\n--dmnet-fuzz-next-file--\n"  # dmnet::fuzzing::FILE_SEPARATOR
ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("DMNET_SHARED_DATA", ROOT.parent / "shared" / "data"))


def put(out: Path, target: str, name: str, data: bytes) -> None:
    d = out / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


# ---------------------------------------------------------------- NIfTI: real header, crop


def nifti_crop(path: Path, crop) -> bytes:
    """The file's own header (dims and origin updated, extensions dropped) + a crop of its
    stored (unscaled) voxels, in the file's byte order."""
    img = nib.load(str(path))
    raw = np.asanyarray(img.dataobj.get_unscaled())
    sub = raw[crop]
    hdr = img.header.copy()
    aff = img.slicer[crop].affine if sub.ndim == raw.ndim else img.affine
    hdr.set_data_shape(sub.shape)
    if hdr["sform_code"] > 0:
        hdr.set_sform(aff, int(hdr["sform_code"]))
    if hdr["qform_code"] > 0:
        hdr.set_qform(aff, int(hdr["qform_code"]))
    hdr["vox_offset"] = 352
    buf = io.BytesIO()
    buf.write(hdr.binaryblock)
    buf.write(b"\0\0\0\0")  # no extensions
    buf.write(np.asarray(sub, dtype=hdr.get_data_dtype()).tobytes(order="F"))
    return buf.getvalue()


def nifti_seeds(out: Path) -> None:
    la = sorted((DATA / "la2018" / "imagesTr").glob("*.nii.gz"))[0]
    la_lab = DATA / "la2018" / "labelsTr" / la.name
    brats = sorted((DATA / "brats-mini").glob("brats_*"))[0]
    files = {
        "la-image": (la, np.s_[80:86, 60:65, 40:44]),  # int16, scl_slope 0.001
        "la-label": (la_lab, np.s_[80:86, 60:65, 40:44]),  # uint8 0/1
        "spleen-ct": (DATA / "spleen-ct" / "imagesTr" / "spleen2.nii.gz", np.s_[70:76, 80:85, 10:13]),
        "spleen-label": (DATA / "spleen-ct" / "labelsTr" / "spleen2.nii.gz", np.s_[70:76, 80:85, 10:13]),
        "cord-t2w": (DATA / "spinal-cord-mri" / "sub-unf01_T2w.nii.gz", np.s_[60:66, 60:65, 6:10]),
        "cord-seg-float": (DATA / "spinal-cord-mri" / "sub-unf01_T2w_seg-manual.nii.gz", np.s_[60:66, 60:65, 6:10]),
        "brats-flair": (next(brats.glob("*_flair.nii.gz")), np.s_[100:106, 100:105, 70:74]),
        "brats-seg-float": (next(brats.glob("*_seg.nii.gz")), np.s_[100:106, 100:105, 70:74]),
        "epi-4d": (DATA / "dicom" / "ge-epi-4d" / "dcm2niix-reference" / "mr_0004.nii.gz", np.s_[30:34, 30:33, 5:8, 0:2]),
    }
    for name, (p, crop) in files.items():
        b = nifti_crop(p, crop)
        put(out, "nifti", f"{name}.nii", b)
        put(out, "nifti", f"{name}.nii.gz", gzip.compress(b, mtime=0))


# ---------------------------------------------------------------- DICOM: real headers, crop


def dicom_bytes(ds) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def crop_image(ds, r0: int, c0: int, n: int):
    """Crops a single-frame native image to n×n at (r0, c0) and moves its origin to match."""
    a = ds.pixel_array[r0 : r0 + n, c0 : c0 + n]
    ds.PixelData = np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes()
    ds.Rows, ds.Columns = a.shape
    if "ImageOrientationPatient" in ds:
        shift_origin(ds, r0, c0, ds.PixelSpacing, ds.ImageOrientationPatient)
    return ds


def shift_origin(item, r0: int, c0: int, spacing, orientation) -> None:
    """ImagePositionPatient of pixel (r0, c0): + c0·Δc·row direction + r0·Δr·column direction."""
    if "ImagePositionPatient" not in item:
        return
    o = [float(v) for v in orientation]
    p = [float(v) for v in item.ImagePositionPatient]
    dr, dc = float(spacing[0]), float(spacing[1])
    item.ImagePositionPatient = [round(p[i] + c0 * dc * o[i] + r0 * dr * o[3 + i], 4) for i in range(3)]


def dicom_seeds(out: Path) -> None:
    ct = sorted((DATA / "dicom" / "ct-3slice" / "series").glob("*.dcm"))
    seg = pydicom.dcmread(DATA / "dicom" / "ct-3slice" / "liver_seg.dcm")
    frames = seg.pixel_array
    ys, xs = np.nonzero(frames.max(0))
    r0, c0, n = int((ys.min() + ys.max()) // 2), int(xs.min()) - 8, 16  # liver edge: 0s and 1s
    cts = [crop_image(pydicom.dcmread(p), r0, c0, n) for p in ct]
    ct_bytes = [dicom_bytes(d) for d in cts]
    put(out, "dicom_series", "ct-3slice", SEP.join(ct_bytes))
    put(out, "dicom_series", "ct-1slice", ct_bytes[0])
    adc = sorted((DATA / "dicom" / "prostate-adc").glob("*.dcm"))[8:11]
    put(out, "dicom_series", "prostate-adc-3", SEP.join(dicom_bytes(crop_image(pydicom.dcmread(p), 120, 120, 8)) for p in adc))
    # 4-D: two positions × two time points
    epi = [pydicom.dcmread(p) for p in sorted((DATA / "dicom" / "ge-epi-4d" / "series").glob("*.dcm"))]
    by_pos = {}
    for d in epi:
        by_pos.setdefault(tuple(round(float(v), 2) for v in d.ImagePositionPatient), []).append(d)
    picked = []
    for pos in sorted(by_pos)[:2]:
        picked += sorted(by_pos[pos], key=lambda d: int(d.InstanceNumber))[:2]
    put(out, "dicom_series", "epi-4d-2x2", SEP.join(dicom_bytes(crop_image(d, 30, 30, 6)) for d in picked))
    # pydicom's real test files (compressed, big endian, implicit VR, truncated, no meta, …)
    tf = Path(pydicom.__file__).parent / "data" / "test_files"
    for p in sorted(tf.glob("*.dcm")):
        if p.stat().st_size <= 40_000:
            put(out, "dicom_series", f"pydicom-{p.stem}", p.read_bytes())

    # SEG: the real liver SEG cropped to the same window (1-bit and 8-bit frames)
    sub = np.ascontiguousarray(frames[:, r0 : r0 + n, c0 : c0 + n]).astype(np.uint8)
    seg.Rows, seg.Columns = n, n
    for f in seg.PerFrameFunctionalGroupsSequence:
        if "PlanePositionSequence" in f:
            shift_origin(f.PlanePositionSequence[0], r0, c0, cts[0].PixelSpacing, cts[0].ImageOrientationPatient)
    seg.PixelData = pydicom.pixels.pack_bits(sub)
    put(out, "dicom_seg", "ct-3slice-liver-1bit", SEP.join(ct_bytes + [dicom_bytes(seg)]))
    seg8 = seg.copy()
    seg8.BitsAllocated, seg8.BitsStored, seg8.HighBit = 8, 8, 7
    seg8.PixelData = (sub * 255).astype(np.uint8).tobytes()
    put(out, "dicom_seg", "ct-3slice-liver-8bit", SEP.join(ct_bytes + [dicom_bytes(seg8)]))
    put(out, "dicom_seg", "ct-2slice-liver-1bit", SEP.join(ct_bytes[:2] + [dicom_bytes(seg)]))


# ---------------------------------------------------------------- h5: real ACDC crops, h5py


def h5_bytes(image, label, **kw) -> bytes:
    """image/label written as SSL4MIS writes them (h5py defaults: libver 'earliest')."""
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.create_dataset("image", data=image, **kw)
        f.create_dataset("label", data=label, **kw)
    return buf.getvalue()


def h5_seeds(out: Path) -> None:
    acdc = DATA / "acdc" / "data"
    with h5py.File(acdc / "slices" / "patient099_frame01_slice_5.h5", "r") as f:
        img, lab = f["image"][()], f["label"][()]
    ys, xs = np.nonzero(lab)
    r0, c0 = int(ys.mean()) - 6, int(xs.mean()) - 5  # the heart: every class in a 12x10 crop
    ci, cl = img[r0 : r0 + 12, c0 : c0 + 10], lab[r0 : r0 + 12, c0 : c0 + 10]
    put(out, "h5", "acdc-slice-gzip.h5", h5_bytes(ci, cl, compression="gzip"))
    put(out, "h5", "acdc-slice-contiguous.h5", h5_bytes(ci, cl))
    put(out, "h5", "acdc-slice-shuffle-chunked.h5", h5_bytes(ci, cl, chunks=(4, 5), shuffle=True, compression="gzip"))
    with h5py.File(acdc / "patient028_frame01.h5", "r") as f:
        vi, vl = f["image"][3:6, r0 : r0 + 12, c0 : c0 + 10], f["label"][3:6, r0 : r0 + 12, c0 : c0 + 10]
    put(out, "h5", "acdc-volume-gzip.h5", h5_bytes(vi, vl, compression="gzip"))


# ---------------------------------------------------------------- shards and sidecar by dmnet


def run(cmd, **kw):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if r.returncode not in (0, 2):
        sys.exit(f"{cmd}: {r.returncode}\n{r.stderr}")
    return r


def shard_seeds(out: Path, bins: Path, tmp: Path) -> Path:
    prep = bins / "dmnet-prep"
    spleen = tmp / "spleen-shards"
    common = ["--threads", "1", "--salt", "fuzz-seed-salt", "-q"]
    run([prep, "ingest", "--input", DATA / "spleen-ct", "--out", spleen, "--size", "32", "--row-group-slices", "4", *common])
    la = tmp / "la"
    for sub in ("imagesTr", "labelsTr"):
        (la / sub).mkdir(parents=True)
        for p in sorted((DATA / "la2018" / sub).glob("*.nii.gz"))[:3]:
            (la / sub / p.name).symlink_to(p)
    shutil.copy(DATA / "la2018" / "dataset.json", la / "dataset.json")
    la_out = tmp / "la-shards"
    run([prep, "ingest", "--input", la, "--out", la_out, "--size", "32", "--protocol", "paper", *common])
    for name, d in [("spleen-32px-rg4", spleen), ("la-paper-32px", la_out)]:
        for p in sorted(d.glob("data/part-*.parquet")):
            put(out, "shard", f"{name}-{p.name}", p.read_bytes())
            # the same rows rewritten by pyarrow: another writer's encodings, same metadata
            kv = pq.ParquetFile(p).metadata.metadata or {}
            t = pq.read_table(p)
            t = t.replace_schema_metadata({**(t.schema.metadata or {}), **kv})
            for comp in ("none", "zstd"):
                buf = io.BytesIO()
                pq.write_table(t, buf, compression=comp, row_group_size=2, write_statistics=False)
                put(out, "shard", f"{name}-pyarrow-{comp}-{p.name}", buf.getvalue())
    return spleen


def sidecar_seeds(out: Path, bins: Path, tmp: Path, shards: Path) -> None:
    runs = tmp / "run"
    train = [bins / "dmnet-train", "--shards", shards, "--out", runs, "--epochs", "1", "--size", "32",
             "--width", "0.125", "--encoder", "resnet18", "--max-steps-per-epoch", "1", "--device", "cpu", "-q"]
    if run(train).returncode != 0:
        sys.exit("tiny training for the sidecar seed failed")
    model = tmp / "model" / "model.onnx"
    run([bins / "dmnet-export", "--run", runs, "--out", model, "-q"])
    put(out, "sidecar", "spleen-tiny.json", model.with_suffix(".json").read_bytes())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--bins", type=Path, required=True, help="folder with dmnet-prep/-train/-export")
    a = ap.parse_args()
    nifti_seeds(a.out)
    dicom_seeds(a.out)
    h5_seeds(a.out)
    with tempfile.TemporaryDirectory(prefix="dmnet-fuzz-seeds-") as t:
        shards = shard_seeds(a.out, a.bins, Path(t))
        sidecar_seeds(a.out, a.bins, Path(t), shards)
    for d in sorted(a.out.iterdir()):
        sizes = [p.stat().st_size for p in d.iterdir()]
        print(f"{d.name}: {len(sizes)} seeds, {min(sizes)}..{max(sizes)} bytes")


if __name__ == "__main__":
    main()
