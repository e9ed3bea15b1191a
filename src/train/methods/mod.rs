//! The training methods behind one interface (issue 24; design notes, "Methods"): DMNet and
//! its ablation variants, and the comparators that train the single network (ResNet encoder
//! and U-Net decoder): `supervised-single`, Mean Teacher, CPS and BCP. The runner
//! (`train::run`) keeps the loop, the schedule, validation, checkpoints and resume, and knows
//! no method by name; each method file reads like its paper's algorithm box. What every method
//! shares is the protocol: the optimiser (Adam with the run's learning rate and poly schedule),
//! the step count, the batch sizes and the supervised loss (`[train] supervised_loss`).
//!
//! Every network of a method lives in one var store: the evaluated and exported network at its
//! root (`encoder.*`, `decoder1.*`, …), a teacher under `teacher.*`, CPS's second network under
//! `net2.*`, DMNet's discriminator under `discriminator.*`; the checkpoint's
//! `model.safetensors` holds them all, and its `optim.safetensors` every optimiser's state,
//! so a resume is exact. The exporter reads only the root network's names.
mod bcp;
mod cps;
mod dmnet;
mod mean_teacher;
mod semifcn;
mod supervised;

use super::batch::TensorBatch;
use super::optim::{Adam, LossScaler};
use crate::artifact::{CheckpointKind, Method, RunDir, TrainConfig, TrainState};
use crate::model::DmNet;
use crate::{Error, Result};
use tch::{nn, Device, Tensor};

pub(crate) use dmnet::{LossMeans, StepLosses};

/// Where a step stands in the schedule: learning rates, DMNet's ramp-up factor, the step.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StepPoint {
    pub(crate) lr: f64,
    pub(crate) lr_discriminator: f64,
    pub(crate) ramp: f64,
    pub(crate) global_step: usize,
    pub(crate) total_steps: usize,
    /// The length the ramps are fractions of (the run's length when it started).
    pub(crate) ramp_steps: usize,
}

/// What a step gets: the labeled batch, the unlabeled one (methods that use it), where the run
/// stands, whether autocast is on, and the loss scaler.
pub(crate) struct StepInput<'a> {
    pub(crate) lab: &'a TensorBatch,
    pub(crate) unl: Option<&'a TensorBatch>,
    pub(crate) at: StepPoint,
    pub(crate) amp: bool,
}

/// A training method: its networks, optimisers and step.
pub(crate) trait Learner {
    /// One optimisation step (every optimiser of the method) on one batch pair.
    fn step(&mut self, input: StepInput, scaler: &mut LossScaler) -> Result<StepLosses>;
    /// The network that is validated, evaluated and exported.
    fn net(&self) -> &DmNet;
    /// The networks and optimisers, for checkpoints.
    fn nets(&self) -> &Nets;
    /// The first step whose validation may select the best checkpoint (a method with a
    /// pre-training stage selects within its main stage only, as its authors do).
    fn selects_from(&self, _total_steps: usize) -> usize {
        0
    }
    /// The same, mutable (resume).
    fn nets_mut(&mut self) -> &mut Nets;
}

/// Builds the method of `train` on `device`, initialised from `train.seed`. libtorch's
/// generator is process-wide: seeding and the initialisation draws hold a lock, so grid cells
/// trained in parallel threads stay reproducible. (Training steps draw nothing from libtorch:
/// flips, shuffles, noise and boxes use seeded ChaCha generators.)
pub(crate) fn build(train: &TrainConfig, device: Device) -> Result<Box<dyn Learner>> {
    static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _lock = INIT.lock().unwrap_or_else(|e| e.into_inner());
    tch::manual_seed(train.seed as i64);
    Ok(match train.method {
        Method::Dmnet => Box::new(dmnet::Dmnet::new(train, device)?),
        Method::SupervisedSingle => Box::new(supervised::SupervisedSingle::new(train, device)?),
        Method::MeanTeacher => Box::new(mean_teacher::MeanTeacher::new(train, device)?),
        Method::Cps => Box::new(cps::Cps::new(train, device)?),
        Method::Bcp => Box::new(bcp::Bcp::new(train, device)?),
        Method::Semifcn => Box::new(semifcn::Semifcn::new(train, device)?),
    })
}

/// A method's var store and its optimisers (each named: its state is saved under that name).
pub(crate) struct Nets {
    pub(crate) vs: nn::VarStore,
    pub(crate) optimizers: Vec<(&'static str, Adam)>,
}

impl Nets {
    /// The optimiser named `name`.
    pub(crate) fn opt(&mut self, name: &str) -> Result<&mut Adam> {
        self.optimizers
            .iter_mut()
            .find(|(n, _)| *n == name)
            .map(|(_, o)| o)
            .ok_or_else(|| Error::Torch(format!("no optimiser {name}")))
    }

    /// Commits checkpoint `kind` (weights of every network, every optimiser's state, the
    /// resume state) into `run`.
    pub(crate) fn save(
        &self,
        run: &RunDir,
        kind: CheckpointKind,
        state: &TrainState,
    ) -> Result<()> {
        run.commit_checkpoint(kind, state, |f| {
            self.vs.save(&f.weights)?;
            let mut all = Vec::new();
            for (name, o) in &self.optimizers {
                all.extend(o.state(name));
            }
            let cpu: Vec<(String, Tensor)> = all
                .into_iter()
                .map(|(n, t)| (n, t.to_device(Device::Cpu)))
                .collect();
            Tensor::write_safetensors(&cpu, &f.optim)?;
            Ok(())
        })
    }

    /// Restores checkpoint `kind` of `run` and returns its resume state.
    pub(crate) fn load(&mut self, run: &RunDir, kind: CheckpointKind) -> Result<TrainState> {
        let files = run.checkpoint(kind)?;
        let p = &files.weights;
        self.vs
            .load(p)
            .map_err(|e| Error::invalid(p, e.to_string()))?;
        let device = self.vs.device();
        let tensors: std::collections::HashMap<String, Tensor> =
            Tensor::read_safetensors(&files.optim)
                .map_err(|e| Error::invalid(&files.optim, e.to_string()))?
                .into_iter()
                .map(|(n, t)| (n, t.to_device(device)))
                .collect();
        for (name, o) in &mut self.optimizers {
            o.load_state(name, &tensors)?;
        }
        run.state(kind)
    }
}

/// A student at the root, its teacher under `teacher.*` (a copy of it at the start) and the
/// student's optimiser (`segmenter`): the networks of Mean Teacher and BCP.
pub(crate) struct StudentTeacher {
    pub(crate) nets: Nets,
    pub(crate) student: DmNet,
    pub(crate) teacher: DmNet,
    /// Every variable of the teacher with the student's (copy, source).
    pub(crate) pairs: Vec<(String, String)>,
    /// The trainable subset of `pairs` (what the EMA moves).
    pub(crate) ema_pairs: Vec<(String, String)>,
}

impl StudentTeacher {
    pub(crate) fn new(train: &TrainConfig, device: Device) -> Result<Self> {
        let vs = nn::VarStore::new(device);
        let student = DmNet::new(&vs.root(), &train.model)?;
        let teacher = DmNet::new(&(vs.root() / "teacher"), &train.model)?;
        let pairs = pairs(&train.model, "teacher.");
        super::pieces::copy_into(&vs, &pairs);
        let opt = Adam::new(&vs, &trainable(&train.model, ""), train.weight_decay)?;
        Ok(StudentTeacher {
            nets: Nets {
                vs,
                optimizers: vec![("segmenter", opt)],
            },
            student,
            teacher,
            pairs,
            ema_pairs: trainable_pairs(&train.model, "teacher."),
        })
    }
}

/// One step of the `segmenter` optimiser on `loss` at `at` (see [`update`]).
pub(crate) fn update_segmenter(
    nets: &mut Nets,
    loss: &Tensor,
    scaler: &mut LossScaler,
    at: StepPoint,
) -> Result<f64> {
    update(nets, &[("segmenter", at.lr)], loss, scaler, at.global_step)
}

/// The trainable variables of a network built under `prefix` (`""` for the root).
pub(crate) fn trainable(cfg: &crate::model::ModelConfig, prefix: &str) -> Vec<String> {
    crate::model::param_groups(cfg)
        .segmenter
        .into_iter()
        .map(|n| format!("{prefix}{n}"))
        .collect()
}

/// Every variable (weights and batch-norm statistics) of the root network paired with its copy
/// under `prefix`: (copy, root).
pub(crate) fn pairs(cfg: &crate::model::ModelConfig, prefix: &str) -> Vec<(String, String)> {
    crate::model::weight_names(cfg)
        .into_iter()
        .map(|n| (format!("{prefix}{n}"), n))
        .collect()
}

/// The trainable subset of [`pairs`] (what an EMA update moves).
pub(crate) fn trainable_pairs(
    cfg: &crate::model::ModelConfig,
    prefix: &str,
) -> Vec<(String, String)> {
    trainable(cfg, "")
        .into_iter()
        .map(|n| (format!("{prefix}{n}"), n))
        .collect()
}

/// One optimiser update from `loss`: zero the gradients of `opts`, back-propagate (scaled
/// under mixed precision), and step each with its learning rate unless the scaler skips the
/// step. A non-finite loss outside mixed precision is an error naming the step.
pub(crate) fn update(
    nets: &mut Nets,
    opts: &[(&str, f64)],
    loss: &Tensor,
    scaler: &mut LossScaler,
    step: usize,
) -> Result<f64> {
    let value = loss.double_value(&[]);
    if !value.is_finite() && !scaler.enabled() {
        return Err(Error::Torch(format!(
            "non-finite loss at step {}: check the shards for NaN pixels (`dmnet-prep inspect`) or lower the learning rate",
            step + 1
        )));
    }
    for (name, _) in opts {
        nets.opt(name)?.zero_grad();
    }
    (loss * scaler.scale).backward();
    let finite = opts
        .iter()
        .map(|(name, _)| nets.opt(name).map(|o| o.grads_finite()))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .all(|f| f);
    if !scaler.enabled() || scaler.update(finite) {
        let scale = scaler.scale;
        for (name, lr) in opts {
            nets.opt(name)?.step(*lr, scale);
        }
    }
    Ok(value)
}

/// Logits of `net` on `x` in training mode, as float (autocast when `amp`).
pub(crate) fn logits(net: &DmNet, x: &Tensor, amp: bool) -> Tensor {
    tch::autocast(amp, || net.forward_t(x, true))
        .logits1
        .to_kind(tch::Kind::Float)
}

/// The labeled batch's class masks, or an error (a labeled batch always has them).
pub(crate) fn masks(b: &TensorBatch) -> Result<&Tensor> {
    b.masks
        .as_ref()
        .ok_or_else(|| Error::Torch("a labeled batch without masks".into()))
}

/// The unlabeled batch of a method that needs one, or an error.
pub(crate) fn unlabeled<'a>(u: Option<&'a TensorBatch>, method: &str) -> Result<&'a TensorBatch> {
    u.ok_or_else(|| {
        Error::Torch(format!(
            "{method} needs unlabeled slices, and the shards' training split has none"
        ))
    })
}
