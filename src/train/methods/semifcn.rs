//! semiFCN (Bai et al., "Semi-supervised learning for network-based cardiac MR image
//! segmentation", MICCAI 2017), the DMNet paper's first baseline (Table 1): self-training with
//! pseudo-masks. The run is cut into `rounds + 1` equal stages:
//! 1. stage 0 trains the network on the labeled slices only;
//! 2. at the start of each later stage the network is frozen as it stands (a copy under
//!    `frozen.*`); through the stage, the unlabeled slices are trained on the frozen network's
//!    pseudo-masks (argmax, inference mode, no gradient), weighted `weight`, beside the
//!    labeled slices: retraining on both sets, the pseudo-masks updated once per round.
//!
//! The pseudo-masks are computed when a slice is drawn rather than stored for the whole set:
//! the same masks, since the frozen network does not change within a round. What differs
//! from the authors: no conditional random field refines the pseudo-masks (the original
//! refines them with a dense CRF); the protocol's optimiser and supervised loss; the round
//! count (`[train.semifcn] rounds`, 3) is our choice. The network is the comparators' single
//! network, evaluated, checkpointed and exported like theirs.
use super::{Learner, Nets, StepInput, StepLosses};
use crate::artifact::TrainConfig;
use crate::model::DmNet;
use crate::train::losses;
use crate::train::optim::{Adam, LossScaler};
use crate::train::pieces;
use crate::Result;
use tch::{nn, Device, Tensor};

/// The network (root), its frozen copy (`frozen.*`) and the network's optimiser.
pub(crate) struct Semifcn {
    nets: Nets,
    net: DmNet,
    frozen: DmNet,
    pairs: Vec<(String, String)>,
    cfg: TrainConfig,
}

impl Semifcn {
    pub(crate) fn new(train: &TrainConfig, device: Device) -> Result<Self> {
        let vs = nn::VarStore::new(device);
        let net = DmNet::new(&vs.root(), &train.model)?;
        let frozen = DmNet::new(&(vs.root() / "frozen"), &train.model)?;
        let pairs = super::pairs(&train.model, "frozen.");
        pieces::copy_into(&vs, &pairs);
        let opt = Adam::new(&vs, &super::trainable(&train.model, ""), train.weight_decay)?;
        Ok(Semifcn {
            nets: Nets {
                vs,
                optimizers: vec![("segmenter", opt)],
            },
            net,
            frozen,
            pairs,
            cfg: train.clone(),
        })
    }
}

/// The stage of global step `g` in a run of `total` steps cut into `rounds + 1` stages (0: the
/// supervised stage).
fn stage(g: usize, total: usize, rounds: usize) -> usize {
    let stages = rounds + 1;
    (g * stages / total.max(1)).min(stages - 1)
}

impl Learner for Semifcn {
    fn step(&mut self, input: StepInput, scaler: &mut LossScaler) -> Result<StepLosses> {
        let at = input.at;
        let rounds = self.cfg.semifcn.rounds;
        let stage = stage(at.global_step, at.total_steps, rounds);
        let masks = super::masks(input.lab)?;
        if stage == 0 {
            let logits = super::logits(&self.net, &input.lab.images, input.amp);
            let loss = losses::supervised(self.cfg.supervised_loss, &logits, masks, None);
            let seg = super::update_segmenter(&mut self.nets, &loss, scaler, at)?;
            return Ok(StepLosses {
                seg,
                dice: seg,
                ..Default::default()
            });
        }
        if at.global_step == 0 || self::stage(at.global_step - 1, at.total_steps, rounds) != stage {
            // a new round: the pseudo-masks come from the network as it stands now
            pieces::copy_into(&self.nets.vs, &self.pairs);
        }
        let unl = super::unlabeled(input.unl, "semifcn")?;
        let x = Tensor::cat(&[&input.lab.images, &unl.images], 0);
        let student = super::logits(&self.net, &x, input.amp);
        let frozen = tch::no_grad(|| {
            tch::autocast(input.amp, || self.frozen.forward_t(&unl.images, false))
                .logits1
                .to_kind(tch::Kind::Float)
        });
        let (total, sup, pseudo) = losses::self_training_loss(
            self.cfg.supervised_loss,
            &student,
            &frozen,
            masks,
            self.cfg.semifcn.weight,
        );
        let seg = super::update_segmenter(&mut self.nets, &total, scaler, at)?;
        Ok(StepLosses {
            seg,
            dice: sup.double_value(&[]),
            semi: pseudo.double_value(&[]),
            ..Default::default()
        })
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

#[cfg(test)]
mod tests {
    use super::stage;

    #[test]
    fn stages_cut_the_run_evenly() {
        // 4 stages of 100 steps in a 400-step run; the last step stays in the last stage
        assert_eq!(stage(0, 400, 3), 0);
        assert_eq!(stage(99, 400, 3), 0);
        assert_eq!(stage(100, 400, 3), 1);
        assert_eq!(stage(399, 400, 3), 3);
        assert_eq!(stage(5, 7, 1), 1);
    }
}
