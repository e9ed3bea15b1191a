//! One DMNet training step (paper §3.1–3.5). The labeled and the unlabeled slices go through
//! the network in two forward passes (§3.1, "using labeled and unlabeled data in turn"; the
//! 0.1.0 joint pass is kept as the `joint` ablation), so every BatchNorm normalises the labeled
//! slices with labeled statistics. BatchNorm running statistics are updated by both passes
//! (momentum 0.1 each), so at evaluation they describe labeled and unlabeled slices alike, as
//! the test data will look; with λ1 = λ2 = 0 the trainable weights equal the supervised
//! variant's exactly (tested) and only the running statistics differ. The segmenter is updated once on
//! `L_S = L_dice + λ1·L_adv(labeled) + r(t)·(λ2·L_semi + λ1u·L_adv(unlabeled))`, r(t) the
//! ramp-up; then the discriminator on `BCE(D(ŷ1),0) + BCE(D(ŷ2),0) + BCE(D(y),1)` over both
//! batches' predictions and the labeled batch's one-hot labels, each with its own Adam.
use super::batch::TensorBatch;
use super::losses;
use super::optim::LossScaler;
use super::trainer::Trainer;
use crate::artifact::{TrainConfig, UnlabeledPass};
use crate::{Error, Result};
use tch::{Kind, Tensor};

/// The loss values of one step, or their means over a round.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct StepLosses {
    /// L_S as optimised (weights and ramp applied).
    pub(super) seg: f64,
    /// Dice loss on the labeled batch, summed over both decoders.
    pub(super) dice: f64,
    /// L_semi on the unlabeled batch (unweighted).
    pub(super) semi: f64,
    /// Adversarial loss of the segmenter on the labeled batch (unweighted).
    pub(super) adv: f64,
    /// Adversarial loss of the segmenter on the unlabeled batch (unweighted).
    pub(super) adv_unlabeled: f64,
    /// Discriminator loss.
    pub(super) dis: f64,
}

/// Running means of [`StepLosses`].
#[derive(Debug, Default)]
pub(super) struct LossMeans {
    n: usize,
    pub(super) mean: StepLosses,
}

impl LossMeans {
    pub(super) fn add(&mut self, l: &StepLosses) {
        self.n += 1;
        let k = 1.0 / self.n as f64;
        let m = &mut self.mean;
        for (acc, v) in [
            (&mut m.seg, l.seg),
            (&mut m.dice, l.dice),
            (&mut m.semi, l.semi),
            (&mut m.adv, l.adv),
            (&mut m.adv_unlabeled, l.adv_unlabeled),
            (&mut m.dis, l.dis),
        ] {
            *acc += (v - *acc) * k;
        }
    }
}

/// Where a step stands in the schedule: learning rates and the ramp-up factor.
#[derive(Debug, Clone, Copy)]
pub(super) struct StepPoint {
    pub(super) lr: f64,
    pub(super) lr_discriminator: f64,
    pub(super) ramp: f64,
    pub(super) global_step: usize,
}

/// Both decoders' logits and probabilities for one batch.
struct Preds {
    logits: (Tensor, Tensor),
    probs: (Tensor, Tensor),
}

impl Preds {
    fn new(l1: Tensor, l2: Tensor) -> Preds {
        let (l1, l2) = (l1.to_kind(Kind::Float), l2.to_kind(Kind::Float));
        let probs = (l1.softmax(1, Kind::Float), l2.softmax(1, Kind::Float));
        Preds {
            logits: (l1, l2),
            probs,
        }
    }
    fn narrow(&self, start: i64, len: i64) -> Preds {
        let n = |t: &Tensor| t.narrow(0, start, len);
        Preds {
            logits: (n(&self.logits.0), n(&self.logits.1)),
            probs: (n(&self.probs.0), n(&self.probs.1)),
        }
    }
}

/// The forward pass(es) of one step: labeled predictions and, if given, unlabeled ones.
fn forward(
    t: &Trainer,
    pass: UnlabeledPass,
    amp: bool,
    lab: &TensorBatch,
    unl: Option<&TensorBatch>,
) -> (Preds, Option<Preds>) {
    let run = |x: &Tensor| {
        let out = tch::autocast(amp, || t.net.forward_t(x, true));
        Preds::new(out.logits1, out.logits2)
    };
    match (pass, unl) {
        (UnlabeledPass::Joint, Some(u)) => {
            let nl = lab.images.size()[0];
            let nu = u.images.size()[0];
            let all = run(&Tensor::cat(&[&lab.images, &u.images], 0));
            (all.narrow(0, nl), Some(all.narrow(nl, nu)))
        }
        _ => (run(&lab.images), unl.map(|u| run(&u.images))),
    }
}

/// L_semi between the two decoders on the unlabeled predictions.
fn semi_term(cfg: &TrainConfig, u: &Preds) -> Tensor {
    let lc = &cfg.loss;
    let (s1, s2) = if cfg.model.variant.sharpens() {
        (
            losses::sharpen_logits(&u.logits.0, lc.temperature),
            losses::sharpen_logits(&u.logits.1, lc.temperature),
        )
    } else {
        (u.probs.0.shallow_clone(), u.probs.1.shallow_clone())
    };
    losses::semi(
        lc.semi_loss,
        lc.semi_stop_gradient,
        (&u.probs.0, &u.probs.1),
        (&s1, &s2),
    )
}

/// The segmenter's adversarial loss on one batch: D should take both decoders' maps for labels.
fn adv_term(t: &Trainer, p: &Preds) -> Option<Tensor> {
    let d = t.disc.as_ref()?;
    let n = p.probs.0.size()[0];
    let z = d.forward(&Tensor::cat(&[&p.probs.0, &p.probs.1], 0));
    Some(
        losses::bce_with_logits(&z.narrow(0, 0, n), 1.0)
            + losses::bce_with_logits(&z.narrow(0, n, n), 1.0),
    )
}

fn value(t: &Tensor) -> f64 {
    t.double_value(&[])
}

/// One step: segmenter update, then discriminator update. A non-finite loss (outside mixed
/// precision, whose scaler skips such steps) is an error naming the step.
pub(super) fn step(
    t: &mut Trainer,
    cfg: &TrainConfig,
    amp: bool,
    (lab, unl): (&TensorBatch, Option<&TensorBatch>),
    at: StepPoint,
    scaler: &mut LossScaler,
) -> Result<StepLosses> {
    let lc = &cfg.loss;
    let k = cfg.model.num_classes as i64;
    let masks = lab
        .masks
        .as_ref()
        .ok_or_else(|| Error::Torch("a labeled batch without masks".into()))?;
    let onehot = losses::one_hot(masks, k);
    let (pl, pu) = forward(t, lc.unlabeled_pass, amp, lab, unl);
    let zero = || Tensor::zeros([], (Kind::Float, onehot.device()));
    let dice = losses::dice_loss(&pl.probs.0, &onehot) + losses::dice_loss(&pl.probs.1, &onehot);
    let adv = adv_term(t, &pl).unwrap_or_else(zero);
    let semi = pu.as_ref().map_or_else(zero, |u| semi_term(cfg, u));
    let adv_u = pu
        .as_ref()
        .and_then(|u| adv_term(t, u))
        .unwrap_or_else(zero);
    let unlabeled = &semi * lc.lambda_semi + &adv_u * lc.lambda_adv_unlabeled();
    let total = &dice + &adv * lc.lambda_adv + unlabeled * at.ramp;
    let seg = value(&total);
    if !seg.is_finite() && !scaler.enabled() {
        return Err(Error::Torch(format!(
            "non-finite loss at step {} (L_dice {}, L_semi {}): check the shards for NaN pixels \
             (`dmnet-prep inspect`) or lower the learning rate",
            at.global_step + 1,
            value(&dice),
            value(&semi)
        )));
    }
    t.seg_opt.zero_grad();
    (&total * scaler.scale).backward();
    if !scaler.enabled() || scaler.update(t.seg_opt.grads_finite()) {
        t.seg_opt.step(at.lr, scaler.scale);
    }
    let dis = discriminator_step(t, &pl, pu.as_ref(), &onehot, at.lr_discriminator);
    Ok(StepLosses {
        seg,
        dice: value(&dice),
        semi: value(&semi),
        adv: value(&adv),
        adv_unlabeled: value(&adv_u),
        dis,
    })
}

/// `BCE(D(ŷ1),0) + BCE(D(ŷ2),0) + BCE(D(y),1)`: fake terms over the labeled and unlabeled
/// predictions (detached), the real term over the labeled one-hot masks.
fn discriminator_step(
    t: &mut Trainer,
    pl: &Preds,
    pu: Option<&Preds>,
    onehot: &Tensor,
    lr: f64,
) -> f64 {
    let (Some(d), Some(opt)) = (&t.disc, &mut t.dis_opt) else {
        return 0.0;
    };
    let pick = |f: fn(&Preds) -> &Tensor| {
        let mut v = vec![f(pl).detach()];
        v.extend(pu.map(|u| f(u).detach()));
        Tensor::cat(&v, 0)
    };
    let (f1, f2) = (pick(|p| &p.probs.0), pick(|p| &p.probs.1));
    let (n, nl) = (f1.size()[0], onehot.size()[0]);
    opt.zero_grad();
    let z = d.forward(&Tensor::cat(&[&f1, &f2, onehot], 0));
    let ld = losses::bce_with_logits(&z.narrow(0, 0, n), 0.0)
        + losses::bce_with_logits(&z.narrow(0, n, n), 0.0)
        + losses::bce_with_logits(&z.narrow(0, 2 * n, nl), 1.0);
    ld.backward();
    opt.step(lr, 1.0);
    value(&ld)
}
