"""NumPy reference for dmnet's losses (src/train/losses.rs). Writes losses.json beside it.
Definitions (domain notes §1): Dice over K classes with sums over batch and pixels (eps 1e-5),
sharpen p^(1/T)/sum, L_semi = soft Dice loss between sharpened masks, BCE-with-logits (mean).
Run: .dmnet/python tests/golden/losses.py"""
import json
import pathlib

import numpy as np

rng = np.random.default_rng(20)
N, K, H, W = 2, 3, 4, 5
EPS = 1e-5
T = 0.5


def softmax(x, axis=1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def soft_dice_loss(a, b):
    inter = (a * b).sum(axis=(0, 2, 3))
    denom = a.sum(axis=(0, 2, 3)) + b.sum(axis=(0, 2, 3))
    return 1.0 - np.mean((2 * inter + EPS) / (denom + EPS))


def sharpen(p, t):
    q = p ** (1.0 / t)
    return q / q.sum(axis=1, keepdims=True)


def bce_with_logits(x, y):
    # log(1 + exp(-|x|)) + max(x, 0) - x*y, the stable form
    return np.mean(np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x))))


logits1 = rng.normal(0, 2, (N, K, H, W))
logits2 = rng.normal(0, 2, (N, K, H, W))
mask = rng.integers(0, K, (N, H, W))
onehot = np.eye(K)[mask].transpose(0, 3, 1, 2)
p1, p2 = softmax(logits1), softmax(logits2)
s1, s2 = sharpen(p1, T), sharpen(p2, T)
d_logits = rng.normal(0, 3, (N, 1, H, W))
out = {
    "shape": [N, K, H, W],
    "temperature": T,
    "logits1": logits1.ravel().tolist(),
    "logits2": logits2.ravel().tolist(),
    "mask": mask.ravel().tolist(),
    "d_logits": d_logits.ravel().tolist(),
    "dice_loss_p1": soft_dice_loss(p1, onehot),
    "dice_loss_p2": soft_dice_loss(p2, onehot),
    "sharpen_p1": s1.ravel().tolist(),
    "semi_loss": soft_dice_loss(s1, s2),
    "semi_loss_unsharpened": soft_dice_loss(p1, p2),
    "bce_target0": bce_with_logits(d_logits, 0.0),
    "bce_target1": bce_with_logits(d_logits, 1.0),
}
path = pathlib.Path(__file__).with_name("losses.json")
path.write_text(json.dumps(out, indent=1) + "\n")
print(f"wrote {path}")
