"""Reference for dmnet's per-case evaluator (src/metrics/case.rs, src/metrics/evaluate.rs).
Writes case_metrics.json beside it:

- "pairs": (prediction, truth) binary volumes [slices, rows, cols] on a regular anisotropic
  grid with MedPy's dc, jc, hd95 and asd (prediction -> truth);
- "irregular": pairs on a stack whose slices sit at irregular positions (missing slices),
  scored by a brute-force NumPy implementation of MedPy's definitions with the true slice
  coordinates (MedPy itself takes one spacing per axis): surfaces = mask minus its
  6-neighbour erosion in the stack (outside = background), HD95 = 95th percentile of both
  directed surface distances, ASD = mean of prediction -> truth;
- "conventions": empty, one-sided and single-slice cases with the value each convention
  gives (nnunet / brats / ssl4mis), MedPy's where it is defined, the documented rule where
  MedPy raises (an empty mask): the penalty is the volume diagonal.

Run: .venv-ref/bin/python tests/golden/case_metrics.py   (scripts/setup.sh --reference)"""
import json
import pathlib

import numpy as np
from medpy.metric import binary

rng = np.random.default_rng(9)
DIMS = (7, 22, 26)
SPACING = (2.5, 0.7, 0.9)  # slices, rows, cols (mm)


def blob(center, radii, noise, dims=DIMS):
    z, y, x = np.indices(dims, dtype=float)
    d = ((z - center[0]) / radii[0]) ** 2 + ((y - center[1]) / radii[1]) ** 2 + ((x - center[2]) / radii[2]) ** 2
    m = d <= 1.0
    flip = rng.random(dims) < noise
    return np.logical_xor(m, flip & (d <= 1.6))


def flat(m):
    return m.astype(int).ravel().tolist()


pairs = []
for i in range(5):
    c = rng.uniform([2, 6, 6], [4, 15, 19])
    r = rng.uniform([1.5, 3, 3], [3, 7, 8])
    truth = blob(c, r, 0.0)
    pred = blob(c + rng.normal(0, [0.4, 1.5, 1.5]), r * rng.uniform(0.7, 1.3, 3), 0.08)
    if i == 4:  # a prediction that touches the volume border
        pred[:, :, :3] = True
    pairs.append(
        {
            "pred": flat(pred),
            "truth": flat(truth),
            "dice": binary.dc(pred, truth),
            "jaccard": binary.jc(pred, truth),
            "hd95": binary.hd95(pred, truth, voxelspacing=SPACING),
            "asd": binary.asd(pred, truth, voxelspacing=SPACING),
        }
    )


def surface(m):
    p = np.pad(m, 1, constant_values=False)
    core = p[1:-1, 1:-1, 1:-1]
    inner = core.copy()
    for ax in range(3):
        for sh in (-1, 1):
            inner &= np.roll(p, sh, axis=ax)[1:-1, 1:-1, 1:-1]
    return np.argwhere(m & ~inner)


def brute(a, b, coords):
    def pts(m):
        idx = surface(m)
        return np.stack([coords[ax][idx[:, ax]] for ax in range(3)], axis=1)

    pa, pb = pts(a), pts(b)
    d = np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1))
    ab, ba = d.min(1), d.min(0)
    return float(np.percentile(np.concatenate([ba, ab]), 95)), float(ab.mean())


IRR_DIMS = (6, 14, 15)
SLICES = [0.0, 2.5, 5.0, 12.5, 15.0, 27.5]  # slice positions (mm): gaps of 1, 3 and 5 slices
irr_coords = [np.array(SLICES), np.arange(IRR_DIMS[1]) * 0.8, np.arange(IRR_DIMS[2]) * 0.6]
irregular = []
for i in range(3):
    truth = blob(rng.uniform([2, 5, 5], [3, 9, 9]), rng.uniform([1.5, 3, 3], [2.5, 5, 5]), 0.0, IRR_DIMS)
    pred = blob(rng.uniform([2, 5, 5], [3, 9, 9]), rng.uniform([1.5, 3, 3], [2.5, 5, 5]), 0.05, IRR_DIMS)
    hd, asd = brute(pred, truth, irr_coords)
    irregular.append({"pred": flat(pred), "truth": flat(truth), "hd95": hd, "asd": asd,
                      "dice": binary.dc(pred, truth)})

# conventions on a small grid: the penalty is the diagonal sqrt(sum (n_a * spacing_a)^2)
C_DIMS = (3, 6, 5)
C_SPACING = (2.0, 1.0, 1.5)
penalty = float(np.sqrt(sum((n * s) ** 2 for n, s in zip(C_DIMS, C_SPACING))))
some = np.zeros(C_DIMS, bool)
some[1, 2:4, 1:4] = True
other = np.zeros(C_DIMS, bool)
other[1:3, 1:3, 2:4] = True
empty = np.zeros(C_DIMS, bool)


def expect(pred, truth, convention, distances=True):
    np_, nt = pred.sum(), truth.sum()
    if np_ and nt:
        dice, jac = binary.dc(pred, truth), binary.jc(pred, truth)
        hd = binary.hd95(pred, truth, voxelspacing=C_SPACING) if distances else None
        asd = binary.asd(pred, truth, voxelspacing=C_SPACING) if distances else None
    elif np_ or nt:  # MedPy: dc = 0; hd95 raises on the empty side
        dice, jac = binary.dc(pred, truth), binary.jc(pred, truth)
        pen = 0.0 if convention == "ssl4mis" else penalty
        hd, asd = (pen, pen) if distances else (None, None)
    else:  # absent from both
        dice, jac, hd, asd = {
            "nnunet": (None, None, None, None),
            "brats": (1.0, 1.0, 0.0, 0.0),
            "ssl4mis": (0.0, 0.0, 0.0, 0.0),
        }[convention]
        if not distances:
            hd = asd = None
    return {"dice": dice, "iou": jac, "hd95": hd, "asd": asd}


conventions = []
for name, pred, truth, distances in [
    ("both", other, some, True),
    ("missed", empty, some, True),
    ("false-positive", some, empty, True),
    ("empty", empty, empty, True),
    ("single-slice", other, some, False),
]:
    conventions.append(
        {
            "name": name,
            "pred": flat(pred),
            "truth": flat(truth),
            "distances": distances,
            "expected": {c: expect(pred, truth, c, distances) for c in ("nnunet", "brats", "ssl4mis")},
        }
    )

out = {
    "dims": list(DIMS),
    "spacing": list(SPACING),
    "pairs": pairs,
    "irregular": {"dims": list(IRR_DIMS), "coords": [c.tolist() for c in irr_coords], "pairs": irregular},
    "conventions": {"dims": list(C_DIMS), "spacing": list(C_SPACING), "penalty": penalty, "cases": conventions},
}
path = pathlib.Path(__file__).with_name("case_metrics.json")
path.write_text(json.dumps(out) + "\n")
print("wrote", path)
