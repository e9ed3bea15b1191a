//! DMNet's losses (paper §3.2–3.4; details fixed in `docs/` and domain notes §1):
//! Dice over K classes, MixMatch sharpening, L_semi between the two sharpened soft masks (the
//! paper's Dice form, a squared-denominator Dice form and MC-Net's MSE form, chosen by
//! `[train.loss] semi_loss`), and BCE-with-logits for the discriminator and the adversarial term. Sums run over the batch and
//! the pixels together (the batch is treated as one image, MONAI's `batch=True`), so slices
//! without a class do not produce degenerate per-slice Dice terms.
use crate::artifact::run_config::SemiLoss;
use tch::{Kind, Reduction, Tensor};

/// `x` in single precision when it is in half precision (mixed-precision logits), else as it
/// is: the losses compute in float32 in training and in float64 in the golden tests.
fn wide(x: &Tensor) -> Tensor {
    match x.kind() {
        Kind::Half | Kind::BFloat16 => x.to_kind(Kind::Float),
        _ => x.shallow_clone(),
    }
}

/// Smoothing added to numerator and denominator of every Dice ratio.
pub(crate) const DICE_EPS: f64 = 1e-5;

fn sum_nhw(t: &Tensor) -> Tensor {
    t.sum_dim_intlist([0i64, 2, 3].as_slice(), false, t.kind())
}

/// `1 − (1/K) Σ_k (2 Σ a·b + ε) / (Σ a + Σ b + ε)` for `[N, K, H, W]` maps.
fn soft_dice_loss(a: &Tensor, b: &Tensor) -> Tensor {
    let inter = sum_nhw(&(a * b));
    let denom = sum_nhw(a) + sum_nhw(b);
    let dice = (inter * 2.0 + DICE_EPS) / (denom + DICE_EPS);
    1.0 - dice.mean(dice.kind())
}

/// Dice loss of class probabilities `[N, K, H, W]` against a one-hot label of the same shape,
/// averaged over the K classes.
pub fn dice_loss(probs: &Tensor, onehot: &Tensor) -> Tensor {
    soft_dice_loss(probs, onehot)
}

/// One-hot `[N, K, H, W]` (float) from class indices `[N, H, W]` (any integer kind).
pub fn one_hot(mask: &Tensor, num_classes: i64) -> Tensor {
    mask.to_kind(Kind::Int64)
        .one_hot(num_classes)
        .permute([0, 3, 1, 2])
        .to_kind(Kind::Float)
}

/// Sharpening (MixMatch): `p_k^(1/T) / Σ_j p_j^(1/T)` over the class axis (dim 1).
pub fn sharpen(probs: &Tensor, temperature: f64) -> Tensor {
    let p = probs.pow_tensor_scalar(1.0 / temperature);
    let s = p.sum_dim_intlist([1i64].as_slice(), true, p.kind());
    p / s
}

/// Sharpened probabilities straight from logits: `softmax(logits / T)`, which equals
/// `sharpen(softmax(logits), T)` and is stable when probabilities underflow.
pub fn sharpen_logits(logits: &Tensor, temperature: f64) -> Tensor {
    let x = wide(logits);
    (&x / temperature).softmax(1, x.kind())
}

/// L_semi: `1 − (1/K) Σ_k 2 Σ s1·s2 / Σ (s1 + s2)` between two soft masks `[N, K, H, W]`.
pub fn semi_loss(s1: &Tensor, s2: &Tensor) -> Tensor {
    soft_dice_loss(s1, s2)
}

/// L_semi with stop-gradient: each mask is the other's fixed target; the two halves averaged.
pub fn semi_loss_stop_gradient(s1: &Tensor, s2: &Tensor) -> Tensor {
    (semi_loss(s1, &s2.detach()) + semi_loss(&s1.detach(), s2)) * 0.5
}

/// `1 − (1/K) Σ_k (2 Σ a·b + ε) / (Σ a² + Σ b² + ε)`: since 2ab ≤ a² + b², its only optimum is
/// a = b everywhere, so (unlike the linear denominator) raising both masks where they already
/// exceed half of their sum earns nothing.
pub fn dice_squared_loss(a: &Tensor, b: &Tensor) -> Tensor {
    let inter = sum_nhw(&(a * b));
    let denom = sum_nhw(&(a * a)) + sum_nhw(&(b * b));
    let dice = (inter * 2.0 + DICE_EPS) / (denom + DICE_EPS);
    1.0 - dice.mean(dice.kind())
}

/// MC-Net's mutual consistency: `mean((p1 − sg(s2))²) + mean((p2 − sg(s1))²)`, each decoder's
/// probabilities pulled towards the other's sharpened, detached probabilities.
pub fn mse_consistency(p1: &Tensor, p2: &Tensor, s1: &Tensor, s2: &Tensor) -> Tensor {
    let mse = |p: &Tensor, t: &Tensor| p.mse_loss(&t.detach(), Reduction::Mean);
    mse(p1, s2) + mse(p2, s1)
}

/// L_semi in the configured form, from the two decoders' probabilities `p` and their
/// sharpened (or, without sharpening, unchanged) masks `s`.
pub fn semi(
    form: SemiLoss,
    stop_gradient: bool,
    p: (&Tensor, &Tensor),
    s: (&Tensor, &Tensor),
) -> Tensor {
    let (s1, s2) = s;
    let dice_form = |f: fn(&Tensor, &Tensor) -> Tensor| {
        if stop_gradient {
            (f(s1, &s2.detach()) + f(&s1.detach(), s2)) * 0.5
        } else {
            f(s1, s2)
        }
    };
    match form {
        SemiLoss::DicePaper => dice_form(semi_loss),
        SemiLoss::DiceSquared => dice_form(dice_squared_loss),
        SemiLoss::Mse => mse_consistency(p.0, p.1, s1, s2),
    }
}

/// Mean binary cross-entropy with logits against a constant target (0 = prediction, 1 = label).
pub fn bce_with_logits(logits: &Tensor, target: f64) -> Tensor {
    let t = logits.full_like(target);
    logits.binary_cross_entropy_with_logits::<Tensor>(&t, None, None, Reduction::Mean)
}

/// Cross-entropy of `[N, K, H, W]` logits against class indices `[N, H, W]`, averaged over the
/// pixels where `weight` is 1 (all pixels when `None`).
pub fn cross_entropy(logits: &Tensor, labels: &Tensor, weight: Option<&Tensor>) -> Tensor {
    let x = wide(logits);
    let logp = x.log_softmax(1, x.kind());
    let nll = -logp
        .gather(1, &labels.to_kind(Kind::Int64).unsqueeze(1), false)
        .squeeze_dim(1);
    match weight {
        None => nll.mean(nll.kind()),
        Some(w) => (&nll * w).sum(nll.kind()) / (w.sum(nll.kind()) + 1e-16),
    }
}

/// The supervised loss every method uses (one protocol for every arm) of `[N, K, H, W]` logits
/// against class indices `[N, H, W]`, on the pixels where `weight` is 1 when given (BCP's mixed
/// images):
/// - `dice`: DMNet's soft Dice, `1 − mean_k (2 Σ p·y + ε) / (Σ p + Σ y + ε)` (paper §3.2);
/// - `dice-ce`: (Dice + cross-entropy) / 2 with the Dice of SSL4MIS's and BCP's `DiceLoss`,
///   whose denominator squares the probabilities: `(2 Σ p·y + ε) / (Σ p² + Σ y² + ε)`.
pub fn supervised(
    form: crate::artifact::SupervisedLoss,
    logits: &Tensor,
    labels: &Tensor,
    weight: Option<&Tensor>,
) -> Tensor {
    let k = logits.size()[1];
    let x = wide(logits);
    let probs = x.softmax(1, x.kind());
    let onehot = one_hot(labels, k).to_kind(x.kind());
    let (probs, onehot) = match weight {
        None => (probs, onehot),
        Some(w) => {
            let m = w.unsqueeze(1);
            (probs * &m, onehot * &m)
        }
    };
    match form {
        crate::artifact::SupervisedLoss::Dice => dice_loss(&probs, &onehot),
        crate::artifact::SupervisedLoss::DiceCe => {
            (dice_squared_loss(&probs, &onehot) + cross_entropy(logits, labels, weight)) * 0.5
        }
    }
}

/// The discriminator's loss (paper §3.4): `BCE(D(sg(ŷ1)), 0) + BCE(D(sg(ŷ2)), 0) + BCE(D(y), 1)`
/// for the discriminator `d` (one forward over the three batches), the two decoders'
/// probabilities (fake, detached here: the segmenter gets no gradient from L_dis) and the
/// one-hot labels (real).
pub fn discriminator_loss(
    d: &dyn Fn(&Tensor) -> Tensor,
    p1: &Tensor,
    p2: &Tensor,
    onehot: &Tensor,
) -> Tensor {
    let (n, nl) = (p1.size()[0], onehot.size()[0]);
    let z = d(&Tensor::cat(&[&p1.detach(), &p2.detach(), onehot], 0));
    bce_with_logits(&z.narrow(0, 0, n), 0.0)
        + bce_with_logits(&z.narrow(0, n, n), 0.0)
        + bce_with_logits(&z.narrow(0, 2 * n, nl), 1.0)
}

/// The segmenter's adversarial loss: the discriminator `d` should take both decoders' maps
/// for labels, `BCE(D(ŷ1), 1) + BCE(D(ŷ2), 1)` (gradients flow into ŷ).
pub fn adversarial_loss(d: &dyn Fn(&Tensor) -> Tensor, p1: &Tensor, p2: &Tensor) -> Tensor {
    let n = p1.size()[0];
    let z = d(&Tensor::cat(&[p1, p2], 0));
    bce_with_logits(&z.narrow(0, 0, n), 1.0) + bce_with_logits(&z.narrow(0, n, n), 1.0)
}

pub use crate::artifact::run_config::sigmoid_rampup;

/// Mean Teacher's consistency: the mean squared difference between the student's and the
/// (detached) teacher's softmax probabilities.
pub fn softmax_mse(student_logits: &Tensor, teacher_logits: &Tensor) -> Tensor {
    let x = wide(student_logits);
    let s = x.softmax(1, x.kind());
    let t = wide(&teacher_logits.detach()).softmax(1, x.kind());
    let d = (s - t).square();
    d.mean(d.kind())
}

/// Hard pseudo-labels `[N, H, W]` (int64): the argmax of logits, detached.
pub fn hard_labels(logits: &Tensor) -> Tensor {
    logits.detach().argmax(1, false)
}

/// Mean Teacher's loss from the student's logits on [labeled; unlabeled] and the teacher's on
/// the (noisy) unlabeled slices: `(supervised + w · consistency, supervised, consistency)`, the
/// teacher detached.
pub fn mean_teacher_loss(
    form: crate::artifact::SupervisedLoss,
    student: &Tensor,
    teacher: &Tensor,
    labels: &Tensor,
    weight: f64,
) -> (Tensor, Tensor, Tensor) {
    let nl = labels.size()[0];
    let nu = teacher.size()[0];
    let sup = supervised(form, &student.narrow(0, 0, nl), labels, None);
    let cons = softmax_mse(&student.narrow(0, nl, nu), teacher);
    (&sup + &cons * weight, sup, cons)
}

/// Cross pseudo supervision's loss from both networks' logits on [labeled; unlabeled]:
/// `(total, supervised of both, cross pseudo supervision of both)`, total = sup1 + sup2 +
/// w · (CE(l1ᵤ, argmax l2ᵤ) + CE(l2ᵤ, argmax l1ᵤ)), the pseudo-labels without gradient.
pub fn cps_loss(
    form: crate::artifact::SupervisedLoss,
    l1: &Tensor,
    l2: &Tensor,
    labels: &Tensor,
    weight: f64,
) -> (Tensor, Tensor, Tensor) {
    let nl = labels.size()[0];
    let nu = l1.size()[0] - nl;
    let sup = supervised(form, &l1.narrow(0, 0, nl), labels, None)
        + supervised(form, &l2.narrow(0, 0, nl), labels, None);
    let (u1, u2) = (l1.narrow(0, nl, nu), l2.narrow(0, nl, nu));
    let cps =
        cross_entropy(&u1, &hard_labels(&u2), None) + cross_entropy(&u2, &hard_labels(&u1), None);
    (&sup + &cps * weight, sup, cps)
}

/// BCP's `mix_loss` for logits of a mixed batch: the supervised loss against `img_labels`
/// (the image kept where `mask` (`[H, W]`) is 1) weighted `w_img`, plus against
/// `patch_labels` (the image pasted where it is 0) weighted `w_patch`. Returns (total, image
/// term, patch term), the terms unweighted.
pub fn mix_loss(
    form: crate::artifact::SupervisedLoss,
    logits: &Tensor,
    img_labels: &Tensor,
    patch_labels: &Tensor,
    mask: &Tensor,
    (w_img, w_patch): (f64, f64),
) -> (Tensor, Tensor, Tensor) {
    let n = logits.size()[0];
    let m = mask.expand([n, mask.size()[0], mask.size()[1]], false);
    let inv = m.ones_like() - &m;
    let a = supervised(form, logits, img_labels, Some(&m));
    let b = supervised(form, logits, patch_labels, Some(&inv));
    (&a * w_img + &b * w_patch, a, b)
}

/// semiFCN's self-training loss: the supervised loss of the student's logits on the labeled
/// slices against their labels, plus `weight` × the same loss on the unlabeled slices against
/// the pseudo-masks, the argmax of `frozen` (the previous round's network; no gradient).
/// `student` holds `[labeled; unlabeled]`. Returns (total, labeled term, pseudo-mask term).
pub fn self_training_loss(
    form: crate::artifact::SupervisedLoss,
    student: &Tensor,
    frozen: &Tensor,
    labels: &Tensor,
    weight: f64,
) -> (Tensor, Tensor, Tensor) {
    let nl = labels.size()[0];
    let n = student.size()[0];
    let (sl, su) = (student.narrow(0, 0, nl), student.narrow(0, nl, n - nl));
    let pseudo = hard_labels(&frozen.detach());
    let sup = supervised(form, &sl, labels, None);
    let unl = supervised(form, &su, &pseudo, None);
    (&sup + &unl * weight, sup, unl)
}
