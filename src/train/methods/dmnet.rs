//! DMNet (paper §3.1–3.5) and its ablation variants as a [`Learner`]: the network, the
//! discriminator and their two Adam optimisers (§4.2), and one training step. The labeled and the unlabeled slices go through
//! the network in two forward passes (§3.1, "using labeled and unlabeled data in turn"; the
//! 0.1.0 joint pass is kept as the `joint` ablation), so every BatchNorm normalises the labeled
//! slices with labeled statistics. BatchNorm running statistics are updated by both passes
//! (momentum 0.1 each), so at evaluation they describe labeled and unlabeled slices alike, as
//! the test data will look; with λ1 = λ2 = 0 the trainable weights equal the supervised
//! variant's exactly (tested) and only the running statistics differ. The segmenter is updated once on
//! `L_S = L_dice + λ1·L_adv(labeled) + r(t)·(λ2·L_semi + λ1u·L_adv(unlabeled))`, r(t) the
//! ramp-up; then the discriminator on `BCE(D(ŷ1),0) + BCE(D(ŷ2),0) + BCE(D(y),1)` over both
//! batches' predictions and the labeled batch's one-hot labels, each with its own Adam.
use super::{Learner, Nets, StepInput, StepPoint};
use crate::artifact::{TrainConfig, UnlabeledPass};
use crate::model::{param_groups, Discriminator, DmNet};
use crate::train::batch::TensorBatch;
use crate::train::losses;
use crate::train::optim::{Adam, LossScaler};
use crate::{Error, Result};
use tch::{nn, Device, Kind, Tensor};

/// The loss values of one step, or their means over a round. Every method fills `seg` (what it
/// optimised) and `dice` (its supervised loss); `semi` is its unlabeled term, unweighted
/// (DMNet's L_semi, Mean Teacher's consistency, CPS's cross pseudo supervision, BCP's loss on
/// the pseudo-labeled pixels).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct StepLosses {
    /// The total loss as optimised (weights and ramp applied).
    pub(crate) seg: f64,
    /// The supervised loss on the labeled batch (DMNet: summed over both decoders).
    pub(crate) dice: f64,
    /// The unlabeled term (unweighted).
    pub(crate) semi: f64,
    /// Adversarial loss of the segmenter on the labeled batch (unweighted; DMNet).
    pub(crate) adv: f64,
    /// Adversarial loss of the segmenter on the unlabeled batch (unweighted; DMNet).
    pub(crate) adv_unlabeled: f64,
    /// Discriminator loss (DMNet).
    pub(crate) dis: f64,
}

/// Running means of [`StepLosses`].
#[derive(Debug, Default)]
pub(crate) struct LossMeans {
    n: usize,
    pub(crate) mean: StepLosses,
}

impl LossMeans {
    pub(crate) fn add(&mut self, l: &StepLosses) {
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

/// DMNet: the network (both decoders), the discriminator (variants with L_adv) and their two
/// optimisers (`segmenter`, `discriminator`).
pub(crate) struct Dmnet {
    nets: Nets,
    net: DmNet,
    disc: Option<Discriminator>,
    cfg: TrainConfig,
}

impl Dmnet {
    /// Builds the network (and the discriminator after it, so the network's initialisation
    /// does not depend on the variant) with their optimisers.
    pub(crate) fn new(train: &TrainConfig, device: Device) -> Result<Dmnet> {
        let cfg = &train.model;
        let vs = nn::VarStore::new(device);
        let net = DmNet::new(&vs.root(), cfg)?;
        let disc = cfg
            .variant
            .uses_adversarial()
            .then(|| Discriminator::new(&(vs.root() / "discriminator"), cfg));
        let groups = param_groups(cfg);
        let mut optimizers = vec![(
            "segmenter",
            Adam::new(&vs, &groups.segmenter, train.weight_decay)?,
        )];
        if disc.is_some() {
            optimizers.push((
                "discriminator",
                Adam::new(&vs, &groups.discriminator, train.weight_decay)?,
            ));
        }
        Ok(Dmnet {
            nets: Nets { vs, optimizers },
            net,
            disc,
            cfg: train.clone(),
        })
    }
}

impl Learner for Dmnet {
    fn step(&mut self, input: StepInput, scaler: &mut LossScaler) -> Result<StepLosses> {
        step(self, input, scaler)
    }
    fn net(&self) -> &DmNet {
        &self.net
    }
    fn nets(&self) -> &Nets {
        &self.nets
    }
    fn nets_mut(&mut self) -> &mut Nets {
        &mut self.nets
    }
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
    t: &Dmnet,
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
fn adv_term(t: &Dmnet, p: &Preds) -> Option<Tensor> {
    let d = t.disc.as_ref()?;
    Some(losses::adversarial_loss(
        &|x| d.forward(x),
        &p.probs.0,
        &p.probs.1,
    ))
}

fn value(t: &Tensor) -> f64 {
    t.double_value(&[])
}

/// One step: segmenter update, then discriminator update. A non-finite loss (outside mixed
/// precision, whose scaler skips such steps) is an error naming the step.
fn step(t: &mut Dmnet, input: StepInput, scaler: &mut LossScaler) -> Result<StepLosses> {
    let StepInput { lab, unl, at, amp } = input;
    let cfg = t.cfg.clone();
    let lc = &cfg.loss;
    let k = cfg.model.num_classes as i64;
    let masks = super::masks(lab)?;
    let onehot = losses::one_hot(masks, k);
    let (pl, pu) = forward(t, lc.unlabeled_pass, amp, lab, unl);
    let zero = || Tensor::zeros([], (Kind::Float, onehot.device()));
    let sup = |l: &Tensor| losses::supervised(cfg.supervised_loss, l, masks, None);
    let dice = sup(&pl.logits.0) + sup(&pl.logits.1);
    let adv = adv_term(t, &pl).unwrap_or_else(zero);
    let semi = pu.as_ref().map_or_else(zero, |u| semi_term(&cfg, u));
    let adv_u = pu
        .as_ref()
        .and_then(|u| adv_term(t, u))
        .unwrap_or_else(zero);
    let unlabeled = &semi * lc.lambda_semi + &adv_u * lc.lambda_adv_unlabeled();
    let total = &dice + &adv * lc.lambda_adv + unlabeled * at.ramp;
    let seg = super::update(
        &mut t.nets,
        &[("segmenter", at.lr)],
        &total,
        scaler,
        at.global_step,
    )
    .map_err(|e| match e {
        Error::Torch(m) => Error::Torch(format!(
            "{m} (L_dice {}, L_semi {})",
            value(&dice),
            value(&semi)
        )),
        other => other,
    })?;
    let dis = discriminator_step(t, &pl, pu.as_ref(), &onehot, at)?;
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
/// predictions (detached: the segmenter gets no gradient from L_dis), the real term over the
/// labeled one-hot masks.
fn discriminator_step(
    t: &mut Dmnet,
    pl: &Preds,
    pu: Option<&Preds>,
    onehot: &Tensor,
    at: StepPoint,
) -> Result<f64> {
    let Some(d) = &t.disc else {
        return Ok(0.0);
    };
    let pick = |f: fn(&Preds) -> &Tensor| {
        let mut v = vec![f(pl).shallow_clone()];
        v.extend(pu.map(|u| f(u).shallow_clone()));
        Tensor::cat(&v, 0)
    };
    let (f1, f2) = (pick(|p| &p.probs.0), pick(|p| &p.probs.1));
    let ld = losses::discriminator_loss(&|x| d.forward(x), &f1, &f2, onehot);
    let opt = t.nets.opt("discriminator")?;
    opt.zero_grad();
    ld.backward();
    opt.step(at.lr_discriminator, 1.0);
    Ok(value(&ld))
}
