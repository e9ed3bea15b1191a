#!/usr/bin/env python3
"""`bench prep`: dmnet-prep vs a Python reference doing the same work, plus the NumPy reference
used by the test `prep::preprocessing_matches_numpy_reference`.

The reference (nibabel + numpy + pyarrow, a process pool of the same size) reads each MSD case
(image + label NIfTI), applies the MRI z-score over non-zero voxels, slices through the
through-plane axis (same rule as dmnet: largest spacing if spacings differ by > 10 %, else the
axis closest to world S-I), resizes every slice to S x S (bilinear, half-pixel centres; masks
nearest) and writes zstd Parquet with row groups of 64 slices.

  bench_prep.py check     --input LA --shards DIR        # compare dmnet's rows with NumPy
  bench_prep.py ref       --input LA --out DIR --workers N --size S [--max-studies K]
  bench_prep.py bench     --bin target/release/dmnet-prep --input LA --workers N --size S
  bench_prep.py profile   --bin target/release/dmnet-prep --input LA --workers N --size S
  bench_prep.py encodings --input LA --size S [--max-studies K]   # image column encodings
  bench_prep.py v1copy    --shards V2DIR --out V1DIR       # a schema-v1 copy (shard-v1.md) of v2 shards
  bench_prep.py read      --bin target/release/dmnet-prep --reader target/release/examples/bench_shard_read
                          --input LA --size S --max-studies K   # training read speed, v1 vs v2
"""
import argparse
import glob
import gzip
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

import nibabel as nib
import numpy as np


def taps(n, m):
    """Half-pixel bilinear taps (align_corners=False), clamped: x0, x1, weight of x1."""
    x = np.clip((np.arange(m) + 0.5) * n / m - 0.5, 0, n - 1)
    x0 = np.floor(x).astype(np.int64)
    x1 = np.minimum(x0 + 1, n - 1)
    return x0, x1, (x - x0).astype(np.float32)


def resize_bilinear(p, s):
    h, w = p.shape
    y0, y1, wy = taps(h, s)
    x0, x1, wx = taps(w, s)
    top = p[y0][:, x0] * (1 - wx) + p[y0][:, x1] * wx
    bot = p[y1][:, x0] * (1 - wx) + p[y1][:, x1] * wx
    return (top * (1 - wy)[:, None] + bot * wy[:, None]).astype(np.float32)


def resize_nearest(p, s):
    h, w = p.shape
    iy = np.minimum(np.floor((np.arange(s) + 0.5) * h / s).astype(np.int64), h - 1)
    ix = np.minimum(np.floor((np.arange(s) + 0.5) * w / s).astype(np.int64), w - 1)
    return p[iy][:, ix]


def slice_axis(affine):
    sp = np.linalg.norm(affine[:3, :3], axis=0)
    si = np.abs(affine[2, :3]) / sp
    cand = [a for a in range(3) if not sp.max() > 1.1 * sp.min() or sp[a] > sp.max() / 1.1]
    return max(cand, key=lambda a: (si[a], -a))


def mri_zscore(v):
    nz = v != 0
    vals = v[nz].astype(np.float64)
    m, sd = vals.mean(), vals.std()
    sd = sd if sd >= 1e-8 else 1.0
    out = v.copy()
    out[nz] = ((vals - m) / sd).astype(np.float32)
    return out


def prep_case(img_path, lab_path, size):
    """Returns (axis, list of (k, image S*S float32, mask S*S uint8))."""
    img = nib.load(img_path)
    v = np.asarray(img.dataobj, dtype=np.float64).astype(np.float32)
    lab = np.asarray(nib.load(lab_path).dataobj).astype(np.uint8)
    v = mri_zscore(v)
    a = slice_axis(img.affine)
    rows = []
    for k in range(v.shape[a]):
        plane = np.take(v, k, axis=a)
        mplane = np.take(lab, k, axis=a)
        rows.append((k, resize_bilinear(plane, size).ravel(), resize_nearest(mplane, size).ravel()))
    return a, rows


def ref_case(args):
    img_path, lab_path, out, size = args
    import pyarrow as pa
    import pyarrow.parquet as pq
    a, rows = prep_case(img_path, lab_path, size)
    n = len(rows)
    t = pa.table({
        "source_path": [os.path.basename(img_path)] * n,
        "slice_index": pa.array([r[0] for r in rows], pa.int32()),
        "slice_axis": pa.array([a] * n, pa.int32()),
        "image": pa.array([r[1] for r in rows], pa.list_(pa.float32())),
        "mask": pa.array([r[2] for r in rows], pa.list_(pa.uint8())),
    })
    name = os.path.join(out, os.path.basename(img_path).replace(".nii.gz", ".parquet"))
    pq.write_table(t, name + ".tmp", compression="zstd", row_group_size=64)
    os.replace(name + ".tmp", name)
    return n


def cases(input_dir, max_studies=None):
    imgs = sorted(glob.glob(os.path.join(input_dir, "imagesTr", "*.nii.gz")))[:max_studies]
    return [(p, os.path.join(input_dir, "labelsTr", os.path.basename(p))) for p in imgs]


def cmd_ref(a):
    os.makedirs(a.out, exist_ok=True)
    jobs = [(i, l, a.out, a.size) for i, l in cases(a.input, a.max_studies)]
    t = time.time()
    with ProcessPoolExecutor(a.workers) as ex:
        n = sum(ex.map(ref_case, jobs))
    dt = time.time() - t
    print(json.dumps({"slices": n, "seconds": dt}))


def gunzip_len(p):
    with gzip.open(p) as f:
        return len(f.read())


def cmd_decompress(a):
    files = [p for c in cases(a.input, a.max_studies) for p in c]
    t = time.time()
    with ProcessPoolExecutor(a.workers) as ex:
        total = sum(ex.map(gunzip_len, files))
    print(json.dumps({"bytes": total, "seconds": time.time() - t}))


def cmd_check(a):
    """Compares dmnet's rows of every case in the shard folder with the NumPy reference: masks
    exactly, images within 1e-4 (float32 storage) or 1e-4 + 2^-11*|value| (float16 storage)."""
    import pyarrow.parquet as pq
    t = pq.read_table(a.shards, columns=["source_path", "slice_index", "slice_axis", "height", "image", "mask", "labeled"])
    field = t.schema.field("image")
    meta = field.metadata or {}
    if b"dmnet.precision" in meta:  # schema v3: a float32 column holding values of this precision
        dtype = meta[b"dmnet.precision"].decode()
    else:
        storage = field.type.storage_type.value_type
        dtype = {"halffloat": "float16", "float": "float32"}[str(storage)]
    rel = 2.0 ** -11 if dtype == "float16" else 0.0
    images = t["image"].combine_chunks().to_numpy_ndarray().astype(np.float32)
    d = t.drop_columns(["image"]).to_pydict()
    by_case = {}
    for i, sp in enumerate(d["source_path"]):
        by_case.setdefault(sp, []).append(i)
    worst, excess, masks, rows = 0.0, -np.inf, 0, 0
    for sp, idx in sorted(by_case.items()):
        img = os.path.join(a.input, sp)
        lab = img.replace("imagesTr", "labelsTr")
        s = d["height"][idx[0]]
        axis, ref = prep_case(img, lab, s)
        for i in idx:
            k = d["slice_index"][i]
            assert d["slice_axis"][i] == axis, (sp, d["slice_axis"][i], axis)
            _, im, m = ref[k]
            diff = np.abs(images[i].ravel() - im)
            worst = max(worst, float(diff.max()))
            excess = max(excess, float((diff - (1e-4 + rel * np.abs(im))).max()))
            if d["labeled"][i]:
                assert np.array_equal(np.asarray(d["mask"][i], np.uint8), m), (sp, k)
                masks += 1
            rows += 1
    print(json.dumps({"rows": rows, "image_dtype": dtype, "masks_equal": masks,
                      "max_abs_image_diff": worst, "max_excess_over_tolerance": excess}))
    if excess > 0:
        sys.exit(1)


def run_measured(cmd):
    """Runs cmd under /usr/bin/time; returns (seconds, peak RSS MB, stdout)."""
    t = time.time()
    p = subprocess.run(["/usr/bin/time", "-f", "%M"] + cmd, capture_output=True, text=True)
    dt = time.time() - t
    if p.returncode != 0:
        raise SystemExit(f"{cmd} failed:\n{p.stderr}")
    rss_kb = int(p.stderr.strip().splitlines()[-1])
    return dt, rss_kb / 1024, p.stdout


def machine():
    """The machine and its load, stated with every figure."""
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    return {"cpus": os.cpu_count(), "cpu": cpu, "loadavg_1_5_15": list(os.getloadavg())}


def cmd_bench(a):
    res = {"workers": a.workers, "size": a.size, "input": a.input, "machine_before": machine()}
    tmp = tempfile.mkdtemp(prefix="dmnet-bench-")
    n_all = len(cases(a.input))
    for n in sorted({min(10, n_all), n_all}):
        out = os.path.join(tmp, f"dmnet-{n}")
        dt, rss, _ = run_measured([a.bin, "ingest", "-q", "--input", a.input, "--out", out,
                                   "--layout", "msd", "--protocol", "all-slices", "--size", str(a.size),
                                   "--threads", str(a.workers), "--max-studies", str(n)])
        m = json.load(open(os.path.join(out, "_manifest.json")))
        slices = m["totals"]["slices"]
        size = sum(os.path.getsize(p) for p in glob.glob(os.path.join(out, "data", "*.parquet")))
        res[f"dmnet_{n}"] = {"seconds": round(dt, 2), "slices": slices,
                             "slices_per_s": round(slices / dt, 1), "peak_rss_mb": round(rss, 1),
                             "shard_mb": round(size / 1e6, 1)}
        rout = os.path.join(tmp, f"ref-{n}")
        dt, rss, so = run_measured([sys.executable, __file__, "ref", "--input", a.input, "--out", rout,
                                    "--workers", str(a.workers), "--size", str(a.size), "--max-studies", str(n)])
        r = json.loads(so.strip().splitlines()[-1])
        res[f"python_{n}"] = {"seconds": round(dt, 2), "slices": r["slices"],
                              "slices_per_s": round(r["slices"] / dt, 1),
                              "peak_rss_mb_main_process": round(rss, 1)}
    n = n_all
    res["ratio_dmnet_over_python"] = round(res[f"dmnet_{n}"]["slices_per_s"] / res[f"python_{n}"]["slices_per_s"], 2)
    dt, _, so = run_measured([sys.executable, __file__, "decompress", "--input", a.input, "--workers", str(a.workers)])
    d = json.loads(so.strip().splitlines()[-1])
    res["decompress_only"] = {"seconds": round(d["seconds"], 2), "bytes": d["bytes"],
                              "slices_per_s_bound": round(res[f"dmnet_{n}"]["slices"] / d["seconds"], 1)}
    res["ratio_dmnet_time_over_decompress_only"] = round(res[f"dmnet_{n}"]["seconds"] / d["seconds"], 2)
    src = sum(os.path.getsize(p) for c in cases(a.input) for p in c)
    res["ratio_shards_over_nii_gz"] = round(res[f"dmnet_{n}"]["shard_mb"] * 1e6 / src, 2)
    res["machine_after"] = machine()
    print(json.dumps(res, indent=2))
    subprocess.run(["rm", "-rf", tmp])


# Where dmnet-prep's CPU time goes: perf samples grouped by the stage their symbol belongs to.
STAGES = [
    ("gzip inflate", r"inflate|zlib_rs|miniz|crc32|adler"),
    ("zstd compression", r"ZSTD_|HUF_|FSE_|HIST_|zstd"),
    ("Parquet/Arrow encoding", r"parquet::|arrow_|half::|interner|ByteStreamSplit|levels"),
    ("resampling + slicing", r"resize_bilinear|slice_image|slice_mask|extract_slice|resize_nearest|taps"),
    ("normalisation + checks", r"normalize|check_finite|map_labels|mean_std|prepare_volume|check_same_grid"),
    ("NIfTI decode", r"nifti|read_nifti|Volume|RawNifti|from_le|convert"),
    ("memory (copy, page faults, alloc)", r"memmove|memcpy|memset|page|alloc|free|malloc|mmap|munmap|folio|charge|lru|pte|clear_"),
    ("channel + threads", r"crossbeam|futex|sched|rayon|park|schedule|switch"),
]


def cmd_profile(a):
    """perf record of one ingest; prints the share of CPU samples per stage (STAGES)."""
    import re
    tmp = tempfile.mkdtemp(prefix="dmnet-prof-")
    data = os.path.join(tmp, "perf.data")
    cmd = [a.bin, "ingest", "-q", "--input", a.input, "--out", os.path.join(tmp, "out"), "--layout", "msd",
           "--protocol", "all-slices", "--size", str(a.size), "--threads", str(a.workers)]
    if a.max_studies:
        cmd += ["--max-studies", str(a.max_studies)]
    subprocess.run(["perf", "record", "-q", "-F", "999", "-o", data, "--"] + cmd, check=True,
                   capture_output=True)
    rep = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "symbol", "--stdio"],
                         capture_output=True, text=True, check=True).stdout
    shares = {name: 0.0 for name, _ in STAGES}
    shares["other"] = 0.0
    for line in rep.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+\[.\]\s+(.*)", line)
        if not m:
            continue
        pct, sym = float(m.group(1)), m.group(2)
        stage = next((n for n, rx in STAGES if re.search(rx, sym, re.I)), "other")
        shares[stage] += pct
    print(json.dumps({"machine": machine(), "size": a.size, "workers": a.workers,
                      "cpu_share_percent": {k: round(v, 1) for k, v in shares.items()}}, indent=2))
    subprocess.run(["rm", "-rf", tmp])


def cmd_encodings(a):
    """Size, error and read time of the image column in each candidate encoding (zstd level 3,
    row groups of 64, pyarrow), plus the source .nii.gz size; the images are the NumPy reference
    (= dmnet's float32 rows within 1e-4)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    tmp = tempfile.mkdtemp(prefix="dmnet-enc-")
    imgs, raws, src = [], [], 0
    for i, l in cases(a.input, a.max_studies):
        src += os.path.getsize(i) + os.path.getsize(l)
        _, rows = prep_case(i, l, a.size)
        imgs += [r[1] for r in rows]
        v = np.asarray(nib.load(i).dataobj.get_unscaled())
        ax = slice_axis(nib.load(i).affine)
        raws += [np.take(v, k, axis=ax).ravel() for k in range(v.shape[ax])]
    img = np.stack(imgs)
    n, px = img.shape
    lo, hi = img.min(1, keepdims=True), img.max(1, keepdims=True)
    scale = np.maximum(hi - lo, 1e-12) / 65535
    q16 = (np.round((img - lo) / scale) - 32768).astype(np.int16)
    col = "image.list.element"
    cands = [
        ("float32, PLAIN (v1)", img, {"use_dictionary": True}, lambda x: x),
        ("float32, BYTE_STREAM_SPLIT", img, {"use_dictionary": False, "use_byte_stream_split": [col]}, lambda x: x),
        ("float16, PLAIN", img.astype(np.float16), {"use_dictionary": False}, lambda x: x.astype(np.float32)),
        ("float16, BYTE_STREAM_SPLIT (v2)", img.astype(np.float16), {"use_dictionary": False, "use_byte_stream_split": [col]},
         lambda x: x.astype(np.float32)),
        ("float32 column of float16-rounded values, BYTE_STREAM_SPLIT (v3)", img.astype(np.float16).astype(np.float32),
         {"use_dictionary": False, "use_byte_stream_split": [col]}, lambda x: x),
        ("int16 per-slice scale, DELTA", q16, {"use_dictionary": False, "column_encoding": {col: "DELTA_BINARY_PACKED"}},
         lambda x: (x.astype(np.float32) + 32768) * scale + lo),
    ]
    out = []
    for name, arr, kw, back in cands:
        p = os.path.join(tmp, "x.parquet")
        t = pa.table({"image": pa.FixedSizeListArray.from_arrays(pa.array(arr.ravel()), px)})
        pq.write_table(t, p, compression="zstd", compression_level=3, row_group_size=64, **kw)
        t0 = time.time()
        got = back(pq.read_table(p)["image"].combine_chunks().flatten().to_numpy().reshape(n, px))
        dt = time.time() - t0
        err = float(np.abs(got - img).max())
        out.append({"encoding": name, "mb": round(os.path.getsize(p) / 1e6, 1),
                    "ratio_to_nii_gz": round(os.path.getsize(p) / src, 2), "max_abs_error": err,
                    "read_s": round(dt, 2)})
    # the source's own int16 voxels per slice (no resize) + per-study parameters: exact, but not S x S
    p = os.path.join(tmp, "raw.parquet")
    pq.write_table(pa.table({"image": pa.array([r.astype(np.int16) for r in raws], pa.list_(pa.int16()))}), p,
                   compression="zstd", compression_level=3, row_group_size=64, use_dictionary=False,
                   column_encoding={col: "DELTA_BINARY_PACKED"})
    out.append({"encoding": "source int16 at the native grid + study parameters (not S x S)",
                "mb": round(os.path.getsize(p) / 1e6, 1), "ratio_to_nii_gz": round(os.path.getsize(p) / src, 2),
                "max_abs_error": 0.0, "read_s": None})
    print(json.dumps({"machine": machine(), "size": a.size, "slices": n, "nii_gz_mb": round(src / 1e6, 1),
                      "image_column": out}, indent=2))
    subprocess.run(["rm", "-rf", tmp])


def cmd_v1copy(a):
    """Writes a schema-v1 folder (schemas/shard-v1.md: part-*.parquet beside manifest.json,
    list columns, version "1") with the rows of the v3 folder a.shards (float32 for exact rows)."""
    import shutil
    import pyarrow as pa
    import pyarrow.parquet as pq

    def storage(t):
        return getattr(t, "storage_type", t)

    def v1_field(f):
        st = storage(f.type)
        if pa.types.is_fixed_size_list(st):
            return pa.field(f.name, pa.list_(st.value_type), f.nullable)
        return pa.field(f.name, st, f.nullable)

    def v1_config(cfg):
        # keys v1 did not have: image_dtype (v2), shareable (v3)
        return {k: v for k, v in cfg.items() if k not in ("image_dtype", "shareable")}

    os.makedirs(a.out)
    for p in sorted(glob.glob(os.path.join(a.shards, "data", "part-*.parquet"))):
        t = pq.read_table(p)
        t = t.drop_columns([c for c in ("spacing_known", "source_mask") if c in t.column_names])  # v3's
        schema = pa.schema([v1_field(f) for f in t.schema])
        cols = [getattr(c.combine_chunks(), "storage", c.combine_chunks()).cast(f.type)
                for c, f in zip(t.columns, schema)]
        cfg = json.dumps(v1_config(json.loads(t.schema.metadata[b"dmnet.prep_config"])))
        meta = {b"dmnet.schema_version": b"1", b"dmnet.prep_config": cfg.encode()}
        pq.write_table(pa.Table.from_arrays(cols, schema=schema.with_metadata(meta)),
                       os.path.join(a.out, os.path.basename(p)), compression="zstd", row_group_size=64)
    m = json.load(open(os.path.join(a.shards, "_manifest.json")))
    m["schema_version"] = "1"
    m["config"] = v1_config(m["config"])
    m.pop("parts", None)
    json.dump(m, open(os.path.join(a.out, "manifest.json"), "w"))
    shutil.copy(os.path.join(a.shards, "_splits.json"), os.path.join(a.out, "splits.json"))
    json.dump(v1_config(json.load(open(os.path.join(a.shards, "_prep-config.json")))),
              open(os.path.join(a.out, "prep-config.json"), "w"))


def cmd_v2copy(a):
    """Writes a schema-v2 folder (schemas/shard-v2.md: data/part-*.parquet, a float16 image
    column with BYTE_STREAM_SPLIT, no part hashes, no spacing_known / source_mask) with the rows
    of the v3 folder a.shards (image_dtype float16), as dmnet 0.1 wrote it: the input of
    `dmnet-prep upgrade`'s v2 path."""
    import shutil
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(os.path.join(a.out, "data"))
    for p in sorted(glob.glob(os.path.join(a.shards, "data", "part-*.parquet"))):
        t = pq.read_table(p)
        t = t.drop_columns(["spacing_known", "source_mask"])
        i = t.schema.get_field_index("image")
        col = t.column(i).combine_chunks()
        st = col.storage
        vals = st.values.to_numpy(zero_copy_only=False).astype(np.float16)
        shape = col.type.shape
        ext = pa.fixed_shape_tensor(pa.float16(), shape)
        half = pa.FixedSizeListArray.from_arrays(pa.array(vals, pa.float16()), st.type.list_size)
        t = t.set_column(i, pa.field("image", ext, False), pa.ExtensionArray.from_storage(ext, half))
        cfg = json.loads(t.schema.metadata[b"dmnet.prep_config"])
        cfg.pop("shareable", None)
        meta = {b"dmnet.schema_version": b"2", b"dmnet.prep_config": json.dumps(cfg).encode()}
        t = t.replace_schema_metadata(meta)
        groups = pq.ParquetFile(p).metadata.row_group(0).num_rows
        pq.write_table(t, os.path.join(a.out, "data", os.path.basename(p)), compression="zstd",
                       row_group_size=groups, use_dictionary=["patient_key", "source_path", "split", "role"],
                       use_byte_stream_split=["image.list.element"])
    m = json.load(open(os.path.join(a.shards, "_manifest.json")))
    m["schema_version"] = "2"
    m.pop("parts", None)
    m["config"].pop("shareable", None)
    json.dump(m, open(os.path.join(a.out, "_manifest.json"), "w"))
    shutil.copy(os.path.join(a.shards, "_splits.json"), os.path.join(a.out, "_splits.json"))
    cfg = json.load(open(os.path.join(a.shards, "_prep-config.json")))
    cfg.pop("shareable", None)
    json.dump(cfg, open(os.path.join(a.out, "_prep-config.json"), "w"))


def cmd_read(a):
    """How fast the training reader decodes shards (one thread, examples/bench_shard_read.rs):
    v2 float16, v2 float32 and a v1 copy of the same rows, written with the same row groups."""
    tmp = tempfile.mkdtemp(prefix="dmnet-read-")
    base = [a.bin, "ingest", "-q", "--input", a.input, "--layout", "msd", "--protocol", "all-slices",
            "--size", str(a.size), "--threads", str(a.workers), "--max-studies", str(a.max_studies or 10)]
    dirs = {}
    for dtype in ["float16", "float32"]:
        dirs[dtype] = os.path.join(tmp, dtype)
        subprocess.run(base + ["--out", dirs[dtype], "--image-dtype", dtype], check=True)
    dirs["v1"] = os.path.join(tmp, "v1")
    subprocess.run([sys.executable, __file__, "v1copy", "--input", "-", "--shards", dirs["float32"],
                    "--out", dirs["v1"]], check=True)
    res = {"machine_before": machine(), "size": a.size}
    for _ in range(2):  # the second pass reads from the page cache, like later epochs
        p = subprocess.run([a.reader, dirs["v1"], dirs["float32"], dirs["float16"]], check=True,
                           capture_output=True, text=True)
    res["folders"] = [json.loads(l) for l in p.stdout.splitlines()]
    res["machine_after"] = machine()
    print(json.dumps(res, indent=2))
    subprocess.run(["rm", "-rf", tmp])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ["ref", "decompress", "check", "bench", "profile", "encodings", "v1copy", "v2copy", "read"]:
        p = sub.add_parser(name)
        p.add_argument("--input", required=True)
        p.add_argument("--workers", type=int, default=os.cpu_count())
        p.add_argument("--size", type=int, default=224)
        p.add_argument("--max-studies", type=int, default=None)
        p.add_argument("--out")
        p.add_argument("--shards")
        p.add_argument("--bin", default="target/release/dmnet-prep")
        p.add_argument("--reader", default="target/release/examples/bench_shard_read")
    a = ap.parse_args()
    {"ref": cmd_ref, "decompress": cmd_decompress, "check": cmd_check, "bench": cmd_bench,
     "profile": cmd_profile, "encodings": cmd_encodings, "v1copy": cmd_v1copy, "v2copy": cmd_v2copy, "read": cmd_read}[a.cmd](a)


if __name__ == "__main__":
    main()
