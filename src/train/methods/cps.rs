//! Cross pseudo supervision (Chen et al., CVPR 2021), as SSL4MIS's
//! `train_cross_pseudo_supervision_2D.py` trains it:
//! 1. two networks of the same architecture, initialised differently, each see the labeled and
//!    the unlabeled slices in one forward pass;
//! 2. each gets the supervised loss on the labeled part;
//! 3. each learns, by cross-entropy, the other's hard pseudo-labels (argmax, no gradient) on
//!    the unlabeled part, weighted 0.1 × sigmoid ramp-up over the whole run;
//! 4. one step of each network's own Adam on the summed loss.
//!
//! Network 1 (the root) is evaluated, checkpointed as the model and exported; network 2 lives
//! under `net2.*` in the same checkpoint.
use super::{Learner, Nets, StepInput, StepLosses};
use crate::artifact::TrainConfig;
use crate::model::DmNet;
use crate::train::losses;
use crate::train::optim::{Adam, LossScaler};
use crate::Result;
use tch::{nn, Device, Tensor};

/// The two networks and their optimisers (`segmenter`, `segmenter2`).
pub(crate) struct Cps {
    nets: Nets,
    net1: DmNet,
    net2: DmNet,
    cfg: TrainConfig,
}

impl Cps {
    pub(crate) fn new(train: &TrainConfig, device: Device) -> Result<Self> {
        let vs = nn::VarStore::new(device);
        let net1 = DmNet::new(&vs.root(), &train.model)?;
        let net2 = DmNet::new(&(vs.root() / "net2"), &train.model)?;
        let o1 = Adam::new(&vs, &super::trainable(&train.model, ""), train.weight_decay)?;
        let o2 = Adam::new(
            &vs,
            &super::trainable(&train.model, "net2."),
            train.weight_decay,
        )?;
        Ok(Cps {
            nets: Nets {
                vs,
                optimizers: vec![("segmenter", o1), ("segmenter2", o2)],
            },
            net1,
            net2,
            cfg: train.clone(),
        })
    }
}

impl Learner for Cps {
    fn step(&mut self, input: StepInput, scaler: &mut LossScaler) -> Result<StepLosses> {
        let at = input.at;
        let unl = super::unlabeled(input.unl, "cps")?;
        let masks = super::masks(input.lab)?;
        let x = Tensor::cat(&[&input.lab.images, &unl.images], 0);
        let l1 = super::logits(&self.net1, &x, input.amp);
        let l2 = super::logits(&self.net2, &x, input.amp);
        let c = &self.cfg.cps;
        let w = c.weight * losses::sigmoid_rampup(at.global_step, at.ramp_steps, c.ramp_up);
        let (total, sup, cps) = losses::cps_loss(self.cfg.supervised_loss, &l1, &l2, masks, w);
        let seg = super::update(
            &mut self.nets,
            &[("segmenter", at.lr), ("segmenter2", at.lr)],
            &total,
            scaler,
            at.global_step,
        )?;
        Ok(StepLosses {
            seg,
            dice: sup.double_value(&[]),
            semi: cps.double_value(&[]),
            ..Default::default()
        })
    }
    fn net(&self) -> &DmNet {
        &self.net1
    }
    fn nets(&self) -> &Nets {
        &self.nets
    }
    fn nets_mut(&mut self) -> &mut Nets {
        &mut self.nets
    }
}
