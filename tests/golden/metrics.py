"""NumPy reference for dmnet's slice-pooled metrics (src/metrics/mod.rs, MetricsAccumulator).
Writes metrics.json beside it. IoU/Dice per class from counts accumulated over all slices (a
class absent everywhere scores 1), mIoU over all classes incl. background. (Boundary metrics
are per case: tests/golden/case_metrics.py.) Run: .dmnet/python tests/golden/metrics.py"""
import json
import pathlib

import numpy as np

rng = np.random.default_rng(7)
K, H, W = 3, 16, 12


def blob(h, w):
    m = np.zeros((h, w), np.uint8)
    r0, c0 = rng.integers(0, h - 4), rng.integers(0, w - 4)
    m[r0:r0 + rng.integers(2, 7), c0:c0 + rng.integers(2, 7)] = 1
    return m


def make():
    m = np.zeros((H, W), np.uint8)
    for c in range(1, K):
        if rng.random() < 0.85:
            m[blob(H, W) == 1] = c
    return m


slices = []
inter, pred_n, gt_n = np.zeros(K), np.zeros(K), np.zeros(K)
for i in range(6):
    gt = make()
    pred = gt.copy() if i != 3 else make()
    # perturb the prediction: shift rows and flip some pixels
    pred = np.roll(pred, rng.integers(-2, 3), axis=0)
    flip = rng.random((H, W)) < 0.08
    pred[flip] = rng.integers(0, K, flip.sum())
    rng.uniform(0.5, 2.0, 2)  # the draws of a former per-slice spacing, kept for the same data
    slices.append({"pred": pred.ravel().tolist(), "gt": gt.ravel().tolist()})
    for c in range(K):
        inter[c] += ((pred == c) & (gt == c)).sum()
        pred_n[c] += (pred == c).sum()
        gt_n[c] += (gt == c).sum()
union = pred_n + gt_n - inter
iou = np.where(union == 0, 1.0, inter / np.maximum(union, 1))
dice = np.where(pred_n + gt_n == 0, 1.0, 2 * inter / np.maximum(pred_n + gt_n, 1))
out = {
    "num_classes": K, "height": H, "width": W, "slices": slices,
    "iou": iou.tolist(), "miou": float(iou.mean()), "dice": dice.tolist(),
    "mean_dice": float(dice[1:].mean()),
}
path = pathlib.Path(__file__).with_name("metrics.json")
path.write_text(json.dumps(out, indent=1) + "\n")
print(f"wrote {path}")
