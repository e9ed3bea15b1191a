"""MedPy reference for dmnet's per-case 3-D metrics (src/metrics/case.rs). Writes
case_metrics.json beside it: pairs of (prediction, truth) binary volumes [slices, rows, cols]
with anisotropic spacing, and MedPy's dc, jc, hd95 and asd (prediction -> truth) for each.
Run: pip install medpy==0.5.2 numpy scipy; python tests/golden/case_metrics.py"""
import json
import pathlib

import numpy as np
from medpy.metric import binary

rng = np.random.default_rng(9)
DIMS = (7, 22, 26)
SPACING = (2.5, 0.7, 0.9)  # slices, rows, cols (mm)


def blob(center, radii, noise):
    z, y, x = np.indices(DIMS, dtype=float)
    d = ((z - center[0]) / radii[0]) ** 2 + ((y - center[1]) / radii[1]) ** 2 + ((x - center[2]) / radii[2]) ** 2
    m = d <= 1.0
    flip = rng.random(DIMS) < noise
    return np.logical_xor(m, flip & (d <= 1.6))


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
            "pred": pred.astype(int).ravel().tolist(),
            "truth": truth.astype(int).ravel().tolist(),
            "dice": binary.dc(pred, truth),
            "jaccard": binary.jc(pred, truth),
            "hd95": binary.hd95(pred, truth, voxelspacing=SPACING),
            "asd": binary.asd(pred, truth, voxelspacing=SPACING),
        }
    )
out = {"dims": list(DIMS), "spacing": list(SPACING), "pairs": pairs}
path = pathlib.Path(__file__).with_name("case_metrics.json")
path.write_text(json.dumps(out) + "\n")
