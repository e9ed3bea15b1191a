//! What a run trains: the network, the discriminator (variants with L_adv, paper §3.4) and
//! their two Adam optimisers (§4.2), and their checkpoints in the run directory (committed
//! atomically by [`RunDir::commit_checkpoint`]).
use super::optim::Adam;
use crate::artifact::{CheckpointKind, RunDir, TrainConfig, TrainState};
use crate::model::{param_groups, Discriminator, DmNet};
use crate::{Error, Result};
use tch::{nn, Device, Tensor};

/// The network, discriminator and optimisers of a run.
pub(super) struct Trainer {
    pub(super) vs: nn::VarStore,
    pub(super) net: DmNet,
    pub(super) disc: Option<Discriminator>,
    pub(super) seg_opt: Adam,
    pub(super) dis_opt: Option<Adam>,
}

impl Trainer {
    /// Builds the network (and the discriminator after it, so the network's initialisation
    /// does not depend on the variant) with their optimisers, initialised from `train.seed`.
    /// libtorch's generator is process-wide: the seeding and the draws of the initialisation
    /// hold a lock, so grid cells trained in parallel threads stay reproducible. (Training
    /// steps draw nothing from libtorch: flips and shuffles use seeded ChaCha generators.)
    pub(super) fn new(train: &TrainConfig, device: Device) -> Result<Trainer> {
        static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _lock = INIT.lock().unwrap_or_else(|e| e.into_inner());
        tch::manual_seed(train.seed as i64);
        let cfg = &train.model;
        let vs = nn::VarStore::new(device);
        let net = DmNet::new(&vs.root(), cfg)?;
        let disc = cfg
            .variant
            .uses_adversarial()
            .then(|| Discriminator::new(&(vs.root() / "discriminator"), cfg));
        let groups = param_groups(cfg);
        let seg_opt = Adam::new(&vs, &groups.segmenter, train.weight_decay)?;
        let dis_opt = disc
            .as_ref()
            .map(|_| Adam::new(&vs, &groups.discriminator, train.weight_decay))
            .transpose()?;
        Ok(Trainer {
            vs,
            net,
            disc,
            seg_opt,
            dis_opt,
        })
    }

    /// Commits checkpoint `kind` (weights, optimiser state, resume state) into `run`.
    pub(super) fn save(
        &self,
        run: &RunDir,
        kind: CheckpointKind,
        state: &TrainState,
    ) -> Result<()> {
        run.commit_checkpoint(kind, state, |f| {
            self.vs.save(&f.weights)?;
            let mut opt = self.seg_opt.state("segmenter");
            if let Some(d) = &self.dis_opt {
                opt.extend(d.state("discriminator"));
            }
            let cpu: Vec<(String, Tensor)> = opt
                .into_iter()
                .map(|(n, t)| (n, t.to_device(Device::Cpu)))
                .collect();
            Tensor::write_safetensors(&cpu, &f.optim)?;
            Ok(())
        })
    }

    /// Restores checkpoint `kind` of `run` (weights and optimiser state) and returns its state.
    pub(super) fn load(&mut self, run: &RunDir, kind: CheckpointKind) -> Result<TrainState> {
        let files = run.checkpoint(kind)?;
        load_weights(&mut self.vs, run, kind)?;
        let tensors: std::collections::HashMap<String, Tensor> =
            Tensor::read_safetensors(&files.optim)
                .map_err(|e| Error::invalid(&files.optim, e.to_string()))?
                .into_iter()
                .map(|(n, t)| (n, t.to_device(self.vs.device())))
                .collect();
        self.seg_opt.load_state("segmenter", &tensors)?;
        if let Some(d) = &mut self.dis_opt {
            d.load_state("discriminator", &tensors)?;
        }
        run.state(kind)
    }
}

/// Loads the weights of checkpoint `kind` of `run` into `vs`.
pub(super) fn load_weights(
    vs: &mut nn::VarStore,
    run: &RunDir,
    kind: CheckpointKind,
) -> Result<()> {
    let p = run.checkpoint(kind)?.weights;
    vs.load(&p).map_err(|e| Error::invalid(&p, e.to_string()))
}
