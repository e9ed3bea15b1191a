//! Bidirectional copy-paste (Bai et al., CVPR 2023), as `ACDC_BCP_train.py` trains it:
//! 1. **pre-training** (the first `pretrain` fraction of the run; the authors' 10000 of 40000
//!    iterations): two halves a, b of the labeled batch are mixed with one random box (a
//!    outside, b inside) and the network learns both labels on their pixels;
//! 2. then the teacher starts as a copy of the student, and **self-training** mixes both ways
//!    with one random box per step: unlabeled half a outside with labeled a inside, labeled b
//!    outside with unlabeled b inside. The unlabeled pixels are supervised by the teacher's
//!    pseudo-labels (argmax, largest connected component per class and slice), weighted
//!    `u_weight` = 0.5; the labeled pixels by their labels, weighted 1;
//! 3. the teacher follows the student by EMA (α = 0.99).
//!
//! The loss on each mixed image is the protocol's supervised loss restricted to each region
//! (BCP's `mix_loss`). The student is evaluated, checkpointed and exported.
use super::{Learner, Nets, StepInput, StepLosses, StudentTeacher};
use crate::artifact::TrainConfig;
use crate::model::DmNet;
use crate::train::batch::TensorBatch;
use crate::train::losses;
use crate::train::optim::LossScaler;
use crate::train::pieces;
use crate::{Error, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

/// The student (root), the teacher (`teacher.*`) and the student's optimiser.
pub(crate) struct Bcp {
    st: StudentTeacher,
    cfg: TrainConfig,
}

impl Bcp {
    pub(crate) fn new(train: &TrainConfig, device: Device) -> Result<Self> {
        Ok(Bcp {
            st: StudentTeacher::new(train, device)?,
            cfg: train.clone(),
        })
    }

    /// The step at which self-training starts.
    fn switch(&self, total: usize) -> usize {
        (self.cfg.bcp.pretrain * total as f64).round() as usize
    }
}

/// `a` where `mask` is 1, `b` where it is 0 (`[N, C, H, W]` images, `[H, W]` mask).
fn paste(a: &Tensor, b: &Tensor, mask: &Tensor) -> Tensor {
    let m = mask.view([1, 1, mask.size()[0], mask.size()[1]]);
    a * &m + b * (m.ones_like() - &m)
}

/// Two halves of a batch (images or masks).
type Pair = (Tensor, Tensor);

/// The two halves of a batch's images and masks.
fn halves(b: &TensorBatch, what: &str) -> Result<(Pair, Option<Pair>)> {
    let n = b.images.size()[0];
    if n < 2 {
        return Err(Error::Torch(format!(
            "bcp splits each batch in two halves: the {what} batch has {n} slice(s)"
        )));
    }
    let h = n / 2;
    let imgs = (b.images.narrow(0, 0, h), b.images.narrow(0, h, h));
    let masks = b
        .masks
        .as_ref()
        .map(|m| (m.narrow(0, 0, h), m.narrow(0, h, h)));
    Ok((imgs, masks))
}

impl Bcp {
    /// The pseudo-labels of the teacher on `x`: argmax, then the largest 8-connected component
    /// of each class per slice.
    fn pseudo_labels(&self, x: &Tensor, amp: bool) -> Result<Tensor> {
        let l = tch::no_grad(|| super::logits(&self.st.teacher, x, amp));
        let k = l.size()[1] as usize;
        let lab = losses::hard_labels(&l);
        let s = lab.size();
        let (n, h, w) = (s[0] as usize, s[1] as usize, s[2] as usize);
        let v = Vec::<u8>::try_from(
            lab.to_kind(Kind::Uint8)
                .to_device(Device::Cpu)
                .flatten(0, -1),
        )
        .map_err(|e| Error::Torch(e.to_string()))?;
        let kept = pieces::largest_components(&v, (n, h, w), k);
        Ok(Tensor::from_slice(&kept)
            .reshape([n as i64, h as i64, w as i64])
            .to_kind(Kind::Int64)
            .to_device(x.device()))
    }

    fn mask(&self, b: &TensorBatch, step: usize) -> Tensor {
        let s = b.images.size();
        let (h, w) = (s[2] as usize, s[3] as usize);
        let mut rng = ChaCha8Rng::seed_from_u64(
            self.cfg.seed ^ (step as u64).wrapping_mul(0xD1B5_4A32_D192_ED03),
        );
        let m = pieces::copy_paste_mask(h, w, self.cfg.bcp.box_fraction, &mut rng);
        Tensor::from_slice(&m)
            .reshape([h as i64, w as i64])
            .to_device(b.images.device())
    }

    fn pretrain_step(&mut self, input: &StepInput, scaler: &mut LossScaler) -> Result<StepLosses> {
        let ((a, b), masks) = halves(input.lab, "labeled")?;
        let (la, lb) = masks.ok_or_else(|| Error::Torch("a labeled batch without masks".into()))?;
        let m = self.mask(input.lab, input.at.global_step);
        let out = super::logits(&self.st.student, &paste(&a, &b, &m), input.amp);
        let (total, _, _) =
            losses::mix_loss(self.cfg.supervised_loss, &out, &la, &lb, &m, (1.0, 1.0));
        let at = input.at;
        let seg = super::update_segmenter(&mut self.st.nets, &total, scaler, at)?;
        Ok(StepLosses {
            seg,
            dice: seg,
            ..Default::default()
        })
    }

    fn self_train_step(
        &mut self,
        input: &StepInput,
        scaler: &mut LossScaler,
    ) -> Result<StepLosses> {
        let at = input.at;
        let unl = super::unlabeled(input.unl, "bcp")?;
        let ((a, b), masks) = halves(input.lab, "labeled")?;
        let (la, lb) = masks.ok_or_else(|| Error::Torch("a labeled batch without masks".into()))?;
        let ((ua, ub), _) = halves(unl, "unlabeled")?;
        let (pa, pb) = (
            self.pseudo_labels(&ua, input.amp)?,
            self.pseudo_labels(&ub, input.amp)?,
        );
        let m = self.mask(input.lab, at.global_step);
        let u = self.cfg.bcp.u_weight;
        let form = self.cfg.supervised_loss;
        let out_unl = super::logits(&self.st.student, &paste(&ua, &a, &m), input.amp);
        let out_l = super::logits(&self.st.student, &paste(&b, &ub, &m), input.amp);
        let (t1, pseudo1, sup1) = losses::mix_loss(form, &out_unl, &pa, &la, &m, (u, 1.0));
        let (t2, sup2, pseudo2) = losses::mix_loss(form, &out_l, &lb, &pb, &m, (1.0, u));
        let total = t1 + t2;
        let seg = super::update_segmenter(&mut self.st.nets, &total, scaler, at)?;
        pieces::ema_update(
            &self.st.nets.vs,
            &self.st.ema_pairs,
            self.cfg.bcp.ema,
            at.global_step,
        );
        Ok(StepLosses {
            seg,
            dice: (sup1 + sup2).double_value(&[]),
            semi: (pseudo1 + pseudo2).double_value(&[]),
            ..Default::default()
        })
    }
}

impl Learner for Bcp {
    fn step(&mut self, input: StepInput, scaler: &mut LossScaler) -> Result<StepLosses> {
        let switch = self.switch(input.at.total_steps);
        if input.at.global_step < switch {
            return self.pretrain_step(&input, scaler);
        }
        if input.at.global_step == switch {
            // the teacher starts from the pre-trained student
            pieces::copy_into(&self.st.nets.vs, &self.st.pairs);
        }
        self.self_train_step(&input, scaler)
    }
    /// BCP's authors select the best model within self-training only (`ACDC_BCP_train.py`).
    fn selects_from(&self, total_steps: usize) -> usize {
        self.switch(total_steps)
    }
    fn net(&self) -> &DmNet {
        &self.st.student
    }
    fn nets(&self) -> &Nets {
        &self.st.nets
    }
    fn nets_mut(&mut self) -> &mut Nets {
        &mut self.st.nets
    }
}
