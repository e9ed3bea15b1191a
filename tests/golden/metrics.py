"""NumPy reference for dmnet's metrics (src/train/metrics.rs). Writes metrics.json beside it.
IoU/Dice per class from counts accumulated over all slices (a class absent everywhere scores 1),
mIoU over all classes incl. background, HD95 (mm) per slice and foreground class = 95th
percentile of the pooled symmetric boundary distances (MedPy hd95; boundary = mask minus its
4-neighbour erosion with the outside counting as background), averaged over slices where both
masks contain the class. Run: .dmnet/python tests/golden/metrics.py"""
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


def boundary(mask):
    p = np.pad(mask, 1, constant_values=False)
    eroded = p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return np.argwhere(mask & ~eroded)


def hd95(a, b, spacing):
    ba, bb = boundary(a), boundary(b)
    if len(ba) == 0 or len(bb) == 0:
        return None
    s = np.asarray(spacing)
    d = np.sqrt((((ba[:, None, :] - bb[None, :, :]) * s) ** 2).sum(-1))
    return float(np.percentile(np.concatenate([d.min(1), d.min(0)]), 95))


slices = []
inter, pred_n, gt_n = np.zeros(K), np.zeros(K), np.zeros(K)
hd_sum, hd_n, hd_undef = np.zeros(K), np.zeros(K), np.zeros(K, int)
for i in range(6):
    gt = make()
    pred = gt.copy() if i != 3 else make()
    # perturb the prediction: shift rows and flip some pixels
    pred = np.roll(pred, rng.integers(-2, 3), axis=0)
    flip = rng.random((H, W)) < 0.08
    pred[flip] = rng.integers(0, K, flip.sum())
    spacing = [float(rng.uniform(0.5, 2.0)), float(rng.uniform(0.5, 2.0))]
    slices.append({"pred": pred.ravel().tolist(), "gt": gt.ravel().tolist(), "spacing": spacing})
    for c in range(K):
        inter[c] += ((pred == c) & (gt == c)).sum()
        pred_n[c] += (pred == c).sum()
        gt_n[c] += (gt == c).sum()
    for c in range(1, K):
        d = hd95(pred == c, gt == c, spacing)
        if d is not None:
            hd_sum[c] += d
            hd_n[c] += 1
        elif (pred == c).any() != (gt == c).any():
            hd_undef[c] += 1
union = pred_n + gt_n - inter
iou = np.where(union == 0, 1.0, inter / np.maximum(union, 1))
dice = np.where(pred_n + gt_n == 0, 1.0, 2 * inter / np.maximum(pred_n + gt_n, 1))
hd = [None] + [float(hd_sum[c] / hd_n[c]) if hd_n[c] else None for c in range(1, K)]
present = [v for v in hd if v is not None]
out = {
    "num_classes": K, "height": H, "width": W, "slices": slices,
    "iou": iou.tolist(), "miou": float(iou.mean()), "dice": dice.tolist(),
    "mean_dice": float(dice[1:].mean()), "hd95_mm": hd,
    "mean_hd95_mm": float(np.mean(present)) if present else None,
    "hd95_undefined": hd_undef.tolist(),
}
path = pathlib.Path(__file__).with_name("metrics.json")
path.write_text(json.dumps(out, indent=1) + "\n")
print(f"wrote {path}")
