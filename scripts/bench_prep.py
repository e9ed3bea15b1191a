#!/usr/bin/env python3
"""`bench prep`: dmnet-prep vs a Python reference doing the same work, plus the NumPy reference
used by the test `prep::preprocessing_matches_numpy_reference`.

The reference (nibabel + numpy + pyarrow, a process pool of the same size) reads each MSD case
(image + label NIfTI), applies the MRI z-score over non-zero voxels, slices through the
through-plane axis (same rule as dmnet: largest spacing if spacings differ by > 10 %, else the
axis closest to world S-I), resizes every slice to S x S (bilinear, half-pixel centres; masks
nearest) and writes zstd Parquet with row groups of 64 slices.

  bench_prep.py check  --input LA --shards DIR           # compare dmnet's rows with NumPy
  bench_prep.py ref    --input LA --out DIR --workers N --size S [--max-studies K]
  bench_prep.py bench  --bin target/release/dmnet-prep --input LA --workers N --size S
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
    """Compares dmnet's labeled rows of every case in the shards with the NumPy reference."""
    import pyarrow.parquet as pq
    t = pq.read_table(sorted(glob.glob(os.path.join(a.shards, "part-*.parquet"))),
                      columns=["source_path", "slice_index", "slice_axis", "height", "image", "mask", "labeled"])
    d = t.to_pydict()
    by_case = {}
    for i, sp in enumerate(d["source_path"]):
        by_case.setdefault(sp, []).append(i)
    worst, masks, rows = 0.0, 0, 0
    for sp, idx in sorted(by_case.items()):
        img = os.path.join(a.input, sp)
        lab = img.replace("imagesTr", "labelsTr")
        s = d["height"][idx[0]]
        axis, ref = prep_case(img, lab, s)
        for i in idx:
            k = d["slice_index"][i]
            assert d["slice_axis"][i] == axis, (sp, d["slice_axis"][i], axis)
            _, im, m = ref[k]
            worst = max(worst, float(np.abs(np.asarray(d["image"][i], np.float32) - im).max()))
            if d["labeled"][i]:
                assert np.array_equal(np.asarray(d["mask"][i], np.uint8), m), (sp, k)
                masks += 1
            rows += 1
    print(json.dumps({"rows": rows, "masks_equal": masks, "max_abs_image_diff": worst}))
    if worst > 1e-4:
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


def cmd_bench(a):
    res = {"workers": a.workers, "size": a.size, "input": a.input}
    tmp = tempfile.mkdtemp(prefix="dmnet-bench-")
    n_all = len(cases(a.input))
    for n in sorted({min(10, n_all), n_all}):
        out = os.path.join(tmp, f"dmnet-{n}")
        dt, rss, _ = run_measured([a.bin, "ingest", "-q", "--input", a.input, "--out", out,
                                   "--layout", "msd", "--protocol", "all-slices", "--size", str(a.size),
                                   "--threads", str(a.workers), "--max-studies", str(n)])
        m = json.load(open(os.path.join(out, "manifest.json")))
        slices = m["totals"]["slices"]
        res[f"dmnet_{n}"] = {"seconds": round(dt, 2), "slices": slices,
                             "slices_per_s": round(slices / dt, 1), "peak_rss_mb": round(rss, 1)}
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
    print(json.dumps(res, indent=2))
    subprocess.run(["rm", "-rf", tmp])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ["ref", "decompress", "check", "bench"]:
        p = sub.add_parser(name)
        p.add_argument("--input", required=True)
        p.add_argument("--workers", type=int, default=os.cpu_count())
        p.add_argument("--size", type=int, default=224)
        p.add_argument("--max-studies", type=int, default=None)
        p.add_argument("--out")
        p.add_argument("--shards")
        p.add_argument("--bin", default="target/release/dmnet-prep")
    a = ap.parse_args()
    {"ref": cmd_ref, "decompress": cmd_decompress, "check": cmd_check, "bench": cmd_bench}[a.cmd](a)


if __name__ == "__main__":
    main()
