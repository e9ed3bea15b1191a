//! DMNet's losses (paper §3.2–3.4; details fixed in `docs/` and domain notes §1):
//! Dice over K classes, MixMatch sharpening, L_semi between the two sharpened soft masks (the
//! paper's Dice form, a squared-denominator Dice form and MC-Net's MSE form, chosen by
//! `[train.loss] semi_loss`), and BCE-with-logits for the discriminator and the adversarial term. Sums run over the batch and
//! the pixels together (the batch is treated as one image, MONAI's `batch=True`), so slices
//! without a class do not produce degenerate per-slice Dice terms.
use crate::artifact::run_config::SemiLoss;
use tch::{Kind, Reduction, Tensor};

/// Smoothing added to numerator and denominator of every Dice ratio.
pub(crate) const DICE_EPS: f64 = 1e-5;

fn sum_nhw(t: &Tensor) -> Tensor {
    t.sum_dim_intlist([0i64, 2, 3].as_slice(), false, Kind::Float)
}

/// `1 − (1/K) Σ_k (2 Σ a·b + ε) / (Σ a + Σ b + ε)` for `[N, K, H, W]` maps.
fn soft_dice_loss(a: &Tensor, b: &Tensor) -> Tensor {
    let inter = sum_nhw(&(a * b));
    let denom = sum_nhw(a) + sum_nhw(b);
    let dice = (inter * 2.0 + DICE_EPS) / (denom + DICE_EPS);
    1.0 - dice.mean(Kind::Float)
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
    let s = p.sum_dim_intlist([1i64].as_slice(), true, Kind::Float);
    p / s
}

/// Sharpened probabilities straight from logits: `softmax(logits / T)`, which equals
/// `sharpen(softmax(logits), T)` and is stable when probabilities underflow.
pub fn sharpen_logits(logits: &Tensor, temperature: f64) -> Tensor {
    (logits / temperature).softmax(1, Kind::Float)
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
pub(crate) fn dice_squared_loss(a: &Tensor, b: &Tensor) -> Tensor {
    let inter = sum_nhw(&(a * b));
    let denom = sum_nhw(&(a * a)) + sum_nhw(&(b * b));
    let dice = (inter * 2.0 + DICE_EPS) / (denom + DICE_EPS);
    1.0 - dice.mean(Kind::Float)
}

/// MC-Net's mutual consistency: `mean((p1 − sg(s2))²) + mean((p2 − sg(s1))²)`, each decoder's
/// probabilities pulled towards the other's sharpened, detached probabilities.
pub(crate) fn mse_consistency(p1: &Tensor, p2: &Tensor, s1: &Tensor, s2: &Tensor) -> Tensor {
    let mse = |p: &Tensor, t: &Tensor| p.mse_loss(&t.detach(), Reduction::Mean);
    mse(p1, s2) + mse(p2, s1)
}

/// L_semi in the configured form, from the two decoders' probabilities `p` and their
/// sharpened (or, without sharpening, unchanged) masks `s`.
pub(crate) fn semi(
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
