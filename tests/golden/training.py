"""PyTorch reference for dmnet's training losses, their gradients, the optimiser and the
schedules (src/train/losses.rs, src/train/optim.rs). Writes training.json beside it; the tests
(tests/integration/goldens.rs) read the JSON, so CI needs no torch.

Every loss is given on fixed tensors with its value and its gradient with respect to each
input that is differentiable in dmnet's step (logits, discriminator weights); a gradient that
must be zero (a detached target) is recorded as zeros, so an implementation that drops the
detach fails. Definitions:
- Dice loss over K classes with sums over batch and pixels, eps 1e-5; cross-entropy mean over
  (masked) pixels; supervised "dice" = Dice, "dice-ce" = (Dice + CE) / 2 (SSL4MIS, BCP);
- L_semi (DMNet paper §3.3) between sharpened masks s = softmax(logits / T): "dice-paper"
  (linear denominator), "dice-squared" (squared), each with and without stop-gradient (each
  mask the other's detached target, halves averaged); "mse" = MC-Net's mean((p1 - sg(s2))^2)
  + mean((p2 - sg(s1))^2) on the probabilities p;
- discriminator loss BCE(D(sg(p1)), 0) + BCE(D(sg(p2)), 0) + BCE(D(y), 1) and the segmenter's
  adversarial loss BCE(D(p1), 1) + BCE(D(p2), 1), D a fixed 1x1 convolution here;
- Mean Teacher: supervised on the labeled part + w * mean((softmax(student_u) - softmax(sg(teacher)))^2);
- CPS: sup1 + sup2 + w * (CE(l1_u, argmax l2_u) + CE(l2_u, argmax l1_u));
- BCP mix_loss: w_img * sup(masked to mask==1, image labels) + w_patch * sup(mask==0, patch labels);
- torch.optim.Adam (betas 0.9/0.999, eps 1e-8, L2 weight decay) over 6 steps with given
  gradients and a poly learning rate; SSL4MIS's sigmoid_rampup; the poly schedule.

Run: .venv-ref/bin/python tests/golden/training.py   (scripts/setup.sh --reference)"""
import json
import math
import pathlib

import numpy as np
import torch
import torch.nn.functional as F

torch.manual_seed(0)
torch.set_default_dtype(torch.float64)
rng = np.random.default_rng(31)
N, K, H, W = 2, 3, 4, 5
EPS = 1e-5
T = 0.5


def t(a, grad=False):
    x = torch.tensor(np.asarray(a, dtype=np.float64))
    return x.requires_grad_(grad)


def flat(x):
    return x.detach().numpy().ravel().tolist()


def sums(x):
    return x.sum(dim=(0, 2, 3))


def soft_dice(a, b):
    return 1.0 - ((2 * sums(a * b) + EPS) / (sums(a) + sums(b) + EPS)).mean()


def soft_dice_sq(a, b):
    return 1.0 - ((2 * sums(a * b) + EPS) / (sums(a * a) + sums(b * b) + EPS)).mean()


def onehot(lab, k=K):
    return F.one_hot(lab, k).permute(0, 3, 1, 2).double()


def ce(logits, lab, weight=None):
    nll = F.cross_entropy(logits, lab, reduction="none")
    if weight is None:
        return nll.mean()
    return (nll * weight).sum() / (weight.sum() + 1e-16)


def supervised(form, logits, lab, weight=None):
    """dice: DMNet's soft Dice; dice-ce: (SSL4MIS's DiceLoss, squared denominator, + CE) / 2."""
    p = logits.softmax(1)
    oh = onehot(lab, logits.shape[1])
    if weight is not None:
        m = weight.unsqueeze(1)
        p, oh = p * m, oh * m
    if form == "dice":
        return soft_dice(p, oh)
    return (soft_dice_sq(p, oh) + ce(logits, lab, weight)) / 2


def grads(value, inputs):
    g = torch.autograd.grad(value, inputs, allow_unused=True)
    return [flat(x) if x is not None else [0.0] * i.numel() for x, i in zip(g, inputs)]


out = {"shape": [N, K, H, W], "temperature": T}
l1 = rng.normal(0, 2, (N, K, H, W))
l2 = rng.normal(0, 2, (N, K, H, W))
lab = rng.integers(0, K, (N, H, W))
out.update(logits1=l1.ravel().tolist(), logits2=l2.ravel().tolist(), labels=lab.ravel().tolist())

# supervised losses
sup = {}
for form in ("dice", "dice-ce"):
    x = t(l1, True)
    v = supervised(form, x, torch.tensor(lab))
    sup[form] = {"value": v.item(), "grad_logits": grads(v, [x])[0]}
out["supervised"] = sup

# L_semi in each form, with and without stop-gradient
semi = {}
for form in ("dice-paper", "dice-squared", "mse"):
    for sg in (False, True):
        if form == "mse" and sg:
            continue
        a, b = t(l1, True), t(l2, True)
        p1, p2 = a.softmax(1), b.softmax(1)
        s1, s2 = (a / T).softmax(1), (b / T).softmax(1)
        if form == "mse":
            v = ((p1 - s2.detach()) ** 2).mean() + ((p2 - s1.detach()) ** 2).mean()
        else:
            f = soft_dice if form == "dice-paper" else soft_dice_sq
            v = (f(s1, s2.detach()) + f(s1.detach(), s2)) / 2 if sg else f(s1, s2)
        g1, g2 = grads(v, [a, b])
        semi[f"{form}{'-sg' if sg else ''}"] = {"value": v.item(), "grad_logits1": g1, "grad_logits2": g2}
out["semi"] = semi

# discriminator and adversarial losses with D = a fixed 1x1 convolution (K -> 1 channel)
dw = rng.normal(0, 1, (1, K, 1, 1))
db = rng.normal(0, 0.5, (1,))
out.update(disc_weight=dw.ravel().tolist(), disc_bias=db.tolist())
a, b = t(l1, True), t(l2, True)
w_, b_ = t(dw, True), t(db, True)
p1, p2 = a.softmax(1), b.softmax(1)
y = onehot(torch.tensor(lab))
D = lambda x: F.conv2d(x, w_, b_)
bce = lambda z, target: F.binary_cross_entropy_with_logits(z, torch.full_like(z, target))
ld = bce(D(p1.detach()), 0.0) + bce(D(p2.detach()), 0.0) + bce(D(y), 1.0)
gd = grads(ld, [a, b, w_, b_])
la = bce(D(p1), 1.0) + bce(D(p2), 1.0)
ga = grads(la, [a, b])
out["discriminator"] = {"value": ld.item(), "grad_logits1": gd[0], "grad_logits2": gd[1],
                        "grad_weight": gd[2], "grad_bias": gd[3]}
out["adversarial"] = {"value": la.item(), "grad_logits1": ga[0], "grad_logits2": ga[1]}

# Mean Teacher: student on [labeled; unlabeled], teacher on unlabeled
NL, NU = 2, 3
ls = rng.normal(0, 2, (NL + NU, K, H, W))
lt = rng.normal(0, 2, (NU, K, H, W))
lab_l = rng.integers(0, K, (NL, H, W))
w = 0.1 * math.exp(-5 * (1 - 0.3) ** 2)
s_, t_ = t(ls, True), t(lt, True)
supv = supervised("dice-ce", s_[:NL], torch.tensor(lab_l))
cons = ((s_[NL:].softmax(1) - t_.detach().softmax(1)) ** 2).mean()
total = supv + w * cons
g = grads(total, [s_, t_])
out["mean_teacher"] = {"student": ls.ravel().tolist(), "teacher": lt.ravel().tolist(),
                       "labels": lab_l.ravel().tolist(), "n_labeled": NL, "n_unlabeled": NU, "weight": w,
                       "value": total.item(), "supervised": supv.item(), "consistency": cons.item(),
                       "grad_student": g[0], "grad_teacher": g[1]}

# CPS: two networks' logits on [labeled; unlabeled]
c1 = rng.normal(0, 2, (NL + NU, K, H, W))
c2 = rng.normal(0, 2, (NL + NU, K, H, W))
a, b = t(c1, True), t(c2, True)
ll = torch.tensor(lab_l)
supc = supervised("dice-ce", a[:NL], ll) + supervised("dice-ce", b[:NL], ll)
pl1 = a[NL:].detach().argmax(1)
pl2 = b[NL:].detach().argmax(1)
cps = ce(a[NL:], pl2) + ce(b[NL:], pl1)
wc = 0.07
total = supc + wc * cps
g = grads(total, [a, b])
out["cps"] = {"logits1": c1.ravel().tolist(), "logits2": c2.ravel().tolist(), "labels": lab_l.ravel().tolist(),
              "weight": wc, "value": total.item(), "supervised": supc.item(), "cps": cps.item(),
              "grad_logits1": g[0], "grad_logits2": g[1]}

# semiFCN: the student's logits on [labeled; unlabeled], the frozen network's on unlabeled
ss = rng.normal(0, 2, (NL + NU, K, H, W))
fz = rng.normal(0, 2, (NU, K, H, W))
st, ft = t(ss, True), t(fz, True)
ll = torch.tensor(lab_l)
sup_s = supervised("dice-ce", st[:NL], ll)
pseudo = ft.detach().argmax(1)
unl_s = supervised("dice-ce", st[NL:], pseudo)
ws = 0.8
total = sup_s + ws * unl_s
g = grads(total, [st, ft])
out["semifcn"] = {"student": ss.ravel().tolist(), "frozen": fz.ravel().tolist(), "labels": lab_l.ravel().tolist(),
                  "weight": ws, "value": total.item(), "supervised": sup_s.item(), "pseudo": unl_s.item(),
                  "grad_student": g[0], "grad_frozen": g[1]}

# BCP mix_loss on a mixed batch
lm = rng.normal(0, 2, (N, K, H, W))
img_l = rng.integers(0, K, (N, H, W))
patch_l = rng.integers(0, K, (N, H, W))
mask = np.ones((H, W))
mask[1:3, 1:4] = 0
x = t(lm, True)
m = torch.tensor(mask).expand(N, H, W)
a_ = supervised("dice-ce", x, torch.tensor(img_l), m)
b_ = supervised("dice-ce", x, torch.tensor(patch_l), 1 - m)
total = 0.5 * a_ + 1.0 * b_
out["bcp_mix"] = {"logits": lm.ravel().tolist(), "img_labels": img_l.ravel().tolist(),
                  "patch_labels": patch_l.ravel().tolist(), "mask": mask.ravel().tolist(),
                  "weights": [0.5, 1.0], "value": total.item(), "image_term": a_.item(),
                  "patch_term": b_.item(), "grad_logits": grads(total, [x])[0]}

# Adam (torch.optim.Adam, L2 weight decay) over 6 steps with given gradients and a poly lr
p0 = rng.normal(0, 1, (7,))
gs = rng.normal(0, 1, (6, 7))
base, power, total_steps, wd = 1e-2, 0.9, 10, 5e-5
param = torch.nn.Parameter(torch.tensor(p0))
opt = torch.optim.Adam([param], lr=base, betas=(0.9, 0.999), eps=1e-8, weight_decay=wd)
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: (1 - it / total_steps) ** power)
traj, lrs = [], []
for k in range(6):
    lrs.append(opt.param_groups[0]["lr"])
    opt.zero_grad()
    param.grad = torch.tensor(gs[k])
    opt.step()
    sched.step()
    traj.append(param.detach().numpy().tolist())
out["adam"] = {"p0": p0.tolist(), "grads": gs.tolist(), "base_lr": base, "power": power,
               "total_steps": total_steps, "weight_decay": wd, "lrs": lrs, "trajectory": traj}


# SSL4MIS's sigmoid_rampup(current, rampup_length), at steps of a 200-step run ramped over 40 %
def sigmoid_rampup(current, length):
    if length == 0:
        return 1.0
    current = np.clip(current, 0.0, length)
    phase = 1.0 - current / length
    return float(np.exp(-5.0 * phase * phase))


steps = [0, 1, 17, 40, 79, 80, 120, 199]
out["rampup"] = {"total": 200, "fraction": 0.4, "steps": steps,
                 "values": [sigmoid_rampup(s, 0.4 * 200) for s in steps]}

path = pathlib.Path(__file__).with_name("training.json")
path.write_text(json.dumps(out) + "\n")
print("wrote", path)
