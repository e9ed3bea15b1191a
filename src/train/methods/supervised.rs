//! `supervised-single`: the comparators' single network (ResNet encoder + U-Net decoder)
//! trained on the labeled slices only, with the protocol's supervised loss. Each comparator's
//! gain is paired against it (DMNet's against its own two-decoder `supervised` variant).
use super::{Learner, Nets, StepInput};
use crate::artifact::TrainConfig;
use crate::model::DmNet;
use crate::train::losses;
use crate::train::optim::{Adam, LossScaler};
use crate::Result;
use tch::{nn, Device};

use super::StepLosses;

/// The single network and its optimiser (`segmenter`).
pub(crate) struct SupervisedSingle {
    nets: Nets,
    net: DmNet,
    cfg: TrainConfig,
}

impl SupervisedSingle {
    pub(crate) fn new(train: &TrainConfig, device: Device) -> Result<Self> {
        let vs = nn::VarStore::new(device);
        let net = DmNet::new(&vs.root(), &train.model)?;
        let opt = Adam::new(&vs, &super::trainable(&train.model, ""), train.weight_decay)?;
        Ok(SupervisedSingle {
            nets: Nets {
                vs,
                optimizers: vec![("segmenter", opt)],
            },
            net,
            cfg: train.clone(),
        })
    }
}

impl Learner for SupervisedSingle {
    fn step(&mut self, input: StepInput, scaler: &mut LossScaler) -> Result<StepLosses> {
        let masks = super::masks(input.lab)?;
        let logits = super::logits(&self.net, &input.lab.images, input.amp);
        let loss = losses::supervised(self.cfg.supervised_loss, &logits, masks, None);
        let seg = super::update_segmenter(&mut self.nets, &loss, scaler, input.at)?;
        Ok(StepLosses {
            seg,
            dice: seg,
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
