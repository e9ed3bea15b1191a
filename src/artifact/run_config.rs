//! Training configuration (the `[train]` table of a pipeline file, with `[train.model]` and
//! `[train.loss]`) and the complete run config written to `RUN/config.json`. Torch-free.
//! Defaults are the paper's (§4.2: Adam 1e-4 / 1e-5 for the discriminator, weight decay 5e-5,
//! poly 0.9, 150 epochs, flip 0.5; §4.2 λ1 = 0.01, λ2 = 0.1, T = 0.5) except where
//! `docs/results-la2018.md` measured a better choice (the unlabeled pass, the L_semi form and
//! its ramp-up; the page gives the table and the reason).
use crate::cli::DeviceChoice;
use crate::model::ModelConfig;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A fraction in (0, 1]. Written `0.1` or `"10%"` in configs and on command lines; a bare
/// number above 1 is refused (it would be ambiguous).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize)]
#[serde(transparent)]
pub struct Fraction(f64);

impl Fraction {
    /// All of it.
    pub(crate) const ONE: Fraction = Fraction(1.0);
    /// The value in (0, 1].
    pub fn get(self) -> f64 {
        self.0
    }
    /// A fraction from a value in (0, 1].
    pub fn new(v: f64) -> std::result::Result<Fraction, String> {
        if v > 0.0 && v <= 1.0 {
            Ok(Fraction(v))
        } else if v > 1.0 && v <= 100.0 {
            Err(format!(
                "{v} is not a fraction in (0, 1]: write {} or \"{v}%\"",
                v / 100.0
            ))
        } else {
            Err(format!("{v} is not a fraction in (0, 1]"))
        }
    }
    /// The value as a percentage, for names and tables (`10`).
    pub(crate) fn percent(self) -> f64 {
        self.0 * 100.0
    }
}

impl std::str::FromStr for Fraction {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Fraction, String> {
        let t = s.trim();
        match t.strip_suffix('%') {
            Some(p) => {
                let v: f64 = p
                    .trim()
                    .parse()
                    .map_err(|_| format!("{s:?} is not a percentage"))?;
                Fraction::new(v / 100.0)
            }
            None => Fraction::new(t.parse().map_err(|_| format!("{s:?} is not a number"))?),
        }
    }
}

impl<'de> Deserialize<'de> for Fraction {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Fraction, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(f64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Num(v) => Fraction::new(v),
            Raw::Text(s) => s.parse(),
        }
        .map_err(serde::de::Error::custom)
    }
}

impl std::fmt::Display for Fraction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}%", self.percent())
    }
}

/// How a DMNet step feeds the labeled and the unlabeled slices to the network (paper §3.1:
/// "by using labeled and unlabeled data in turn").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum UnlabeledPass {
    /// Two forward passes, one per batch, their losses summed and back-propagated once. Every
    /// BatchNorm normalises the labeled slices with labeled statistics only; the running
    /// statistics are updated by both passes (the model is evaluated on all kinds of slices).
    #[default]
    Separate,
    /// One forward pass over the concatenated batch (the 0.1.0 behaviour, kept as an
    /// ablation: the labeled loss then back-propagates through statistics that include the
    /// unlabeled slices).
    Joint,
}

/// The form of L_semi, the agreement loss between the two decoders on unlabeled slices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SemiLoss {
    /// The paper's §3.3: `1 − (1/K) Σ_k 2 Σ s1·s2 / Σ (s1 + s2)` over batch and pixels.
    #[default]
    DicePaper,
    /// `1 − (1/K) Σ_k 2 Σ s1·s2 / Σ (s1² + s2²)` (V-Net's squared denominator): its only
    /// optimum is s1 = s2, so agreement cannot be bought with extra foreground.
    DiceSquared,
    /// MC-Net's mutual consistency: per-pixel mean squared error of each decoder's
    /// probabilities against the other decoder's sharpened, detached probabilities.
    Mse,
}

/// The training method (`--method`, `[train] method`, an arm's `method`): DMNet (with its
/// ablation `variant`s) or a comparator that trains the single network (ResNet encoder + U-Net
/// decoder). Every method shares the protocol (optimiser, schedule, steps, batch sizes,
/// supervised loss); what is its own is in its table (`[train.mean_teacher]`, `[train.cps]`,
/// `[train.bcp]`). Docs: `docs/methods.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// DMNet (Fang & Li 2020): shared encoder, U-Net + DeepLab v3+ decoders, L_semi, L_adv.
    #[default]
    Dmnet,
    /// The single network trained on the labeled slices only (the comparators' baseline).
    SupervisedSingle,
    /// Mean Teacher (Tarvainen & Valpola 2017; SSL4MIS `train_mean_teacher_2D.py`).
    MeanTeacher,
    /// Cross pseudo supervision (Chen et al. 2021; SSL4MIS `train_cross_pseudo_supervision_2D.py`).
    Cps,
    /// Bidirectional copy-paste (Bai et al. 2023; BCP `ACDC_BCP_train.py`).
    Bcp,
    /// semiFCN (Bai et al. 2017): self-training with pseudo-masks, rounds of retraining (the
    /// DMNet paper's baseline; without the authors' CRF).
    Semifcn,
}

impl Method {
    /// Every method.
    pub const ALL: [Method; 6] = [
        Method::Dmnet,
        Method::SupervisedSingle,
        Method::MeanTeacher,
        Method::Cps,
        Method::Bcp,
        Method::Semifcn,
    ];
    /// `dmnet`, `supervised-single`, `mean-teacher`, `cps`, `bcp`, `semifcn`.
    pub fn name(self) -> &'static str {
        match self {
            Method::Dmnet => "dmnet",
            Method::SupervisedSingle => "supervised-single",
            Method::MeanTeacher => "mean-teacher",
            Method::Cps => "cps",
            Method::Bcp => "bcp",
            Method::Semifcn => "semifcn",
        }
    }
    /// Whether the method's stages are fractions of the run (a finished run cannot then be
    /// extended: the stage boundaries would move behind steps already trained).
    pub fn staged(self) -> bool {
        matches!(self, Method::Bcp | Method::Semifcn)
    }
    /// The network the method trains and exports.
    pub fn decoders(self) -> crate::model::Decoders {
        match self {
            Method::Dmnet => crate::model::Decoders::Both,
            _ => crate::model::Decoders::Unet,
        }
    }
}

/// What the best checkpoint is selected on, every validation round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Selection {
    /// Val mIoU, slices pooled (the paper's metric).
    #[default]
    Miou,
    /// Val mean per-case Dice over the foreground classes, source grid (SSL4MIS selects on
    /// its val volumes' mean Dice).
    CaseDice,
}

impl Selection {
    /// `val mIoU` or `val per-case Dice`.
    pub fn name(self) -> &'static str {
        match self {
            Selection::Miou => "val mIoU",
            Selection::CaseDice => "val per-case Dice",
        }
    }
}

/// The training augmentation, part of the protocol every arm shares (`[train] augment`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Augment {
    /// The paper's (§4.2): a horizontal flip with probability `flip_prob`.
    #[default]
    Flip,
    /// SSL4MIS's `RandomGenerator` (`dataloaders/dataset.py`), per slice: with probability
    /// 0.5 a rotation by k·90° (k uniform in 0..4) then a flip along a random axis; else with
    /// probability 0.5 a rotation about the centre by a uniform integer angle in [−20°, 20°)
    /// (nearest neighbour, zero fill: `ndimage.rotate(order=0, reshape=False)` up to ties at
    /// pixel borders); else nothing. Image and mask together.
    Ssl4mis,
}

/// The supervised loss every method uses on labeled pixels (one protocol for every arm).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SupervisedLoss {
    /// Soft Dice over the K classes (DMNet's, paper §3.2).
    #[default]
    Dice,
    /// (soft Dice + cross-entropy) / 2, as SSL4MIS's and BCP's scripts train.
    DiceCe,
}

/// Mean Teacher's own settings (SSL4MIS `train_mean_teacher_2D.py`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MeanTeacherConfig {
    /// EMA rate α of the teacher (`ema_decay` 0.99; α = min(1 − 1/(step + 1), α)).
    pub ema: f64,
    /// Weight of the MSE consistency on softmax (`consistency` 0.1).
    pub consistency: f64,
    /// Sigmoid ramp-up of that weight over this fraction of the run (the authors ramp over
    /// 200 × 150 iterations of 30000: the whole run, 1.0).
    pub ramp_up: f64,
    /// Gaussian noise std on the teacher's input, clipped to ±2·std (0.1, clip 0.2).
    pub noise: f64,
}

impl Default for MeanTeacherConfig {
    fn default() -> Self {
        MeanTeacherConfig {
            ema: 0.99,
            consistency: 0.1,
            ramp_up: 1.0,
            noise: 0.1,
        }
    }
}

/// Cross pseudo supervision's own settings (SSL4MIS `train_cross_pseudo_supervision_2D.py`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CpsConfig {
    /// Weight of the cross pseudo-label cross-entropy (`consistency` 0.1).
    pub weight: f64,
    /// Sigmoid ramp-up over this fraction of the run (the authors': the whole run, 1.0).
    pub ramp_up: f64,
}

impl Default for CpsConfig {
    fn default() -> Self {
        CpsConfig {
            weight: 0.1,
            ramp_up: 1.0,
        }
    }
}

/// BCP's own settings (`ACDC_BCP_train.py`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BcpConfig {
    /// Fraction of the run spent in the supervised copy-paste pre-training stage (the
    /// authors' 10000 pre-training of 40000 iterations: 0.25).
    pub pretrain: f64,
    /// EMA rate of the teacher in the self-training stage (0.99).
    pub ema: f64,
    /// Weight of the pseudo-labeled pixels (`u_weight` 0.5).
    pub u_weight: f64,
    /// Side of the pasted box as a fraction of the slice (2/3).
    pub box_fraction: f64,
}

impl Default for BcpConfig {
    fn default() -> Self {
        BcpConfig {
            pretrain: 0.25,
            ema: 0.99,
            u_weight: 0.5,
            box_fraction: 2.0 / 3.0,
        }
    }
}

/// semiFCN's own settings (Bai et al., MICCAI 2017).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SemifcnConfig {
    /// Rounds of pseudo-labelling and retraining after the supervised stage: the run is cut
    /// into `rounds + 1` equal stages (3: our choice; the sources we could read give no N).
    pub rounds: usize,
    /// Weight of the pseudo-labelled slices' loss beside the labeled slices' (1: retraining
    /// on both sets alike).
    pub weight: f64,
}

impl Default for SemifcnConfig {
    fn default() -> Self {
        SemifcnConfig {
            rounds: 3,
            weight: 1.0,
        }
    }
}

/// SSL4MIS's `sigmoid_rampup`: `exp(−5 (1 − t)²)` with `t = step / (fraction · total)` clipped
/// to [0, 1]; 1 when the ramp has zero length. Every ramp of every method is this one, its
/// length a fraction of the run (the authors' iterations converted).
pub fn sigmoid_rampup(step: usize, total: usize, fraction: f64) -> f64 {
    let len = fraction * total as f64;
    if len <= 0.0 {
        return 1.0;
    }
    let t = (step as f64 / len).clamp(0.0, 1.0);
    (-5.0 * (1.0 - t) * (1.0 - t)).exp()
}

/// The losses and their weights (paper §3.2–3.5; `[train.loss]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LossConfig {
    /// λ1: weight of the adversarial loss on labeled batches.
    pub lambda_adv: f64,
    /// Weight of the adversarial loss on unlabeled batches (`None`: λ1, as in the paper).
    pub lambda_adv_unlabeled: Option<f64>,
    /// λ2: weight of L_semi.
    pub lambda_semi: f64,
    /// Sharpening temperature T (variants that sharpen).
    pub temperature: f64,
    /// The form of L_semi.
    pub semi_loss: SemiLoss,
    /// Detach each sharpened mask when it serves as the other decoder's target in the Dice
    /// forms of L_semi (the paper back-propagates through both; `mse` always detaches).
    pub semi_stop_gradient: bool,
    /// Sigmoid ramp-up (SSL4MIS `sigmoid_rampup`, `exp(−5(1 − t)²)`) of λ2 and of the
    /// unlabeled adversarial weight over this fraction of the run's steps; 0 = full weight
    /// from the first step (the paper).
    pub ramp_up: f64,
    /// How labeled and unlabeled slices go through the network.
    pub unlabeled_pass: UnlabeledPass,
}

impl Default for LossConfig {
    fn default() -> Self {
        LossConfig {
            lambda_adv: 0.01,
            lambda_adv_unlabeled: None,
            lambda_semi: 1.0,
            temperature: 0.5,
            semi_loss: SemiLoss::default(),
            semi_stop_gradient: false,
            ramp_up: 0.4,
            unlabeled_pass: UnlabeledPass::default(),
        }
    }
}

impl LossConfig {
    /// The unlabeled adversarial weight.
    pub(crate) fn lambda_adv_unlabeled(&self) -> f64 {
        self.lambda_adv_unlabeled.unwrap_or(self.lambda_adv)
    }
    /// The ramp-up factor in [0, 1] at `step` of `total` steps ([`sigmoid_rampup`]).
    pub fn ramp(&self, step: usize, total: usize) -> f64 {
        sigmoid_rampup(step, total, self.ramp_up)
    }
    fn validate(&self) -> std::result::Result<(), String> {
        let weights = [
            self.lambda_adv,
            self.lambda_adv_unlabeled(),
            self.lambda_semi,
        ];
        if weights.iter().any(|w| !(w.is_finite() && *w >= 0.0)) {
            return Err("loss weights (lambda_*) must be finite and ≥ 0".into());
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(format!("temperature must be > 0, got {}", self.temperature));
        }
        if !(0.0..=1.0).contains(&self.ramp_up) {
            return Err(format!(
                "ramp_up is a fraction of the run's steps in [0, 1], got {}",
                self.ramp_up
            ));
        }
        Ok(())
    }
}

/// Hyper-parameters of one training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// The training method (DMNet, or a comparator; see [`Method`]).
    pub method: Method,
    /// The supervised loss of every method.
    pub supervised_loss: SupervisedLoss,
    /// Mean Teacher's own settings (`method = "mean-teacher"`).
    pub mean_teacher: MeanTeacherConfig,
    /// CPS's own settings (`method = "cps"`).
    pub cps: CpsConfig,
    /// BCP's own settings (`method = "bcp"`).
    pub bcp: BcpConfig,
    /// semiFCN's own settings (`method = "semifcn"`).
    pub semifcn: SemifcnConfig,
    /// Keep the labels of the first N training patients only (the order of the shards'
    /// `_splits.json`: the input's list order for SSL4MIS folders, the seeded order otherwise)
    /// and use the other training patients' labeled slices as unlabeled. `None`: every labeled
    /// training patient. Applied before `labeled_slice_fraction`.
    pub labeled_patients: Option<usize>,
    /// The network (`[train.model]`). Its `in_channels`, `num_classes` and `input_size` are
    /// filled in from the shards when a run starts, its `decoders` from the method.
    pub model: ModelConfig,
    /// The losses (`[train.loss]`).
    pub loss: LossConfig,
    /// Expected slice size S. Prep is the only resampler: shards of another size are an error
    /// that says to re-ingest. `None`: the shards' size.
    pub size: Option<usize>,
    /// Run length in epochs of the labeled slices (⌈labeled slices / labeled_batch⌉ steps each)
    /// when `steps` is not given.
    pub epochs: usize,
    /// Run length in optimiser steps, independent of the labeled fraction; wins over `epochs`.
    /// The poly schedule and the ramp-up follow it.
    pub steps: Option<usize>,
    /// Steps between validations (and checkpoints). `None`: one labeled epoch, but at least
    /// 1/50 of the run.
    pub eval_every: Option<usize>,
    /// Labeled slices per step.
    pub labeled_batch: usize,
    /// Unlabeled slices per step (variants with unlabeled data).
    pub unlabeled_batch: usize,
    /// Slices per evaluation batch.
    pub eval_batch: usize,
    /// Adam learning rate of the segmentation network.
    pub lr: f64,
    /// Adam learning rate of the discriminator.
    pub lr_discriminator: f64,
    /// Adam weight decay (L2, both optimisers).
    pub weight_decay: f64,
    /// Poly schedule power: lr·(1 − iter/max_iter)^power.
    pub poly_power: f64,
    /// The augmentation of training slices (`flip`: the paper's; `ssl4mis`: SSL4MIS's).
    pub augment: Augment,
    /// Probability of a horizontal flip per slice (`augment = "flip"`).
    pub flip_prob: f64,
    /// Fraction of the *training labeled slices* used with labels (paper §4.1: 10/30/50/100 %),
    /// `0.1` or `"10%"`. (Which *patients* are labeled at all is prep's
    /// `labeled_patient_fraction`.)
    pub labeled_slice_fraction: Fraction,
    /// Seed of initialisation, fraction selection, shuffling and flips.
    pub seed: u64,
    /// auto | cpu | cuda.
    pub device: DeviceChoice,
    /// Mixed precision (autocast + dynamic loss scaling) on CUDA; ignored on CPU (logged).
    pub amp: bool,
    /// Same seed, same numbers, across processes, on CPU: one libtorch thread (multi-threaded
    /// reductions sum in a schedule-dependent order). On CUDA it only turns cuDNN's autotuner
    /// off (tch 0.24 does not expose libtorch's deterministic-algorithms switch), so CUDA runs
    /// are not guaranteed bit-identical.
    pub deterministic: bool,
    /// Cap on steps per epoch (`None`: ⌈labeled slices / labeled_batch⌉). For smoke runs.
    pub max_steps_per_epoch: Option<usize>,
    /// Batches held in each prefetch queue.
    pub prefetch: usize,
    /// Shuffle-buffer size in slices (the row-group order is permuted too).
    pub shuffle_window: usize,
    /// What the best checkpoint is selected on (`miou` or `case-dice`).
    pub select_on: Selection,
    /// A second convention `dmnet-train eval` and the grid report beside `convention`, from
    /// the same predictions (e.g. `ssl4mis`, so that figures sit beside published ones).
    pub also_convention: Option<crate::metrics::Convention>,
    /// How per-case metrics score a structure missing on one side or both
    /// (`metrics::evaluate`): `nnunet` (default), `brats` or `ssl4mis`. Recorded in every
    /// report; `dmnet-infer` takes the exported model's.
    pub convention: crate::metrics::Convention,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            method: Method::Dmnet,
            supervised_loss: SupervisedLoss::Dice,
            mean_teacher: MeanTeacherConfig::default(),
            cps: CpsConfig::default(),
            bcp: BcpConfig::default(),
            semifcn: SemifcnConfig::default(),
            labeled_patients: None,
            model: ModelConfig::default(),
            loss: LossConfig::default(),
            size: None,
            epochs: 150,
            steps: None,
            eval_every: None,
            labeled_batch: 8,
            unlabeled_batch: 8,
            eval_batch: 16,
            lr: 1e-4,
            lr_discriminator: 1e-5,
            weight_decay: 5e-5,
            poly_power: 0.9,
            augment: Augment::Flip,
            flip_prob: 0.5,
            labeled_slice_fraction: Fraction::ONE,
            seed: 0,
            device: DeviceChoice::Auto,
            amp: false,
            deterministic: false,
            max_steps_per_epoch: None,
            prefetch: 4,
            shuffle_window: 256,
            select_on: Selection::Miou,
            also_convention: None,
            convention: crate::metrics::Convention::Nnunet,
        }
    }
}

/// How long a run is and how often it validates, resolved from [`TrainConfig`] and the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Schedule {
    /// Optimiser steps in the whole run (the poly schedule's `max_iter`).
    pub total_steps: usize,
    /// Steps between validations; a "round" (`epoch` in `metrics.jsonl`) is this many steps.
    pub eval_every: usize,
    /// The length every ramp-up is a fraction of: the run's length when it started. Extending
    /// a run (`--resume --steps`) keeps it, so a resumed run keeps the ramp weight it had
    /// reached (0 in configs written before it existed: the run length).
    #[serde(default)]
    pub ramp_steps: usize,
}

impl Schedule {
    /// The steps the ramps are measured against.
    pub(crate) fn ramp_total(&self) -> usize {
        if self.ramp_steps == 0 {
            self.total_steps
        } else {
            self.ramp_steps
        }
    }
    /// Rounds in the run (the last one may be shorter).
    pub(crate) fn rounds(&self) -> usize {
        self.total_steps.div_ceil(self.eval_every.max(1))
    }
    /// Steps in round `r` (from 1).
    pub(crate) fn steps_in(&self, r: usize) -> usize {
        let start = (r - 1) * self.eval_every;
        self.eval_every.min(self.total_steps.saturating_sub(start))
    }
}

impl TrainConfig {
    /// Reads the `[train]` table of a pipeline file (absent table: defaults).
    pub(crate) fn from_pipeline(path: &Path) -> Result<TrainConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let doc: toml::Table = toml::from_str(&text).map_err(|e| Error::Config {
            path: path.into(),
            msg: e.to_string(),
        })?;
        match doc.get("train") {
            None => Ok(TrainConfig::default()),
            Some(t) => t
                .clone()
                .try_into()
                .map_err(|e: toml::de::Error| Error::Config {
                    path: path.into(),
                    msg: format!("[train]: {e}"),
                }),
        }
    }

    /// The run's length and validation interval for `labeled` training slices.
    pub fn schedule(&self, labeled: usize) -> Schedule {
        let mut epoch = labeled.div_ceil(self.labeled_batch.max(1)).max(1);
        if let Some(cap) = self.max_steps_per_epoch {
            epoch = epoch.min(cap.max(1));
        }
        let total = self.steps.unwrap_or(epoch * self.epochs).max(1);
        let every = self
            .eval_every
            .unwrap_or_else(|| epoch.max(total.div_ceil(50)))
            .clamp(1, total);
        Schedule {
            total_steps: total,
            eval_every: every,
            ramp_steps: total,
        }
    }

    /// Whether the run reads unlabeled batches.
    pub fn uses_unlabeled(&self) -> bool {
        match self.method {
            Method::Dmnet => self.model.variant.uses_unlabeled(),
            Method::SupervisedSingle => false,
            Method::MeanTeacher | Method::Cps | Method::Bcp | Method::Semifcn => true,
        }
    }

    /// The arm's name as the tables show it: the method, or DMNet's variant.
    pub fn method_name(&self) -> &'static str {
        match self.method {
            Method::Dmnet => self.model.variant.name(),
            m => m.name(),
        }
    }

    /// Checks the fields (and the model config).
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: &str| {
            Err(Error::Config {
                path: "<train>".into(),
                msg: msg.into(),
            })
        };
        self.model.validate()?;
        if let Err(msg) = self.loss.validate() {
            return bad(&msg);
        }
        if self.epochs == 0 || self.labeled_batch == 0 || self.eval_batch == 0 {
            return bad("epochs, labeled_batch and eval_batch must be ≥ 1");
        }
        if self.steps == Some(0) || self.eval_every == Some(0) {
            return bad("steps and eval_every must be ≥ 1");
        }
        if self.model.variant.uses_unlabeled() && self.unlabeled_batch == 0 {
            return bad("unlabeled_batch must be ≥ 1 for variants that use unlabeled slices");
        }
        if !(0.0..=1.0).contains(&self.flip_prob) {
            return bad("flip_prob must be in [0, 1]");
        }
        if self.method != Method::Dmnet && self.model.variant != crate::model::Variant::Dmnet {
            return bad(&format!(
                "variant {} is an ablation of DMNet; method {} trains its own network (drop the variant)",
                self.model.variant.name(),
                self.method.name()
            ));
        }
        if self.labeled_patients == Some(0) {
            return bad("labeled_patients must be ≥ 1");
        }
        let fractions = [
            ("mean_teacher.ema", self.mean_teacher.ema),
            ("mean_teacher.ramp_up", self.mean_teacher.ramp_up),
            ("cps.ramp_up", self.cps.ramp_up),
            ("bcp.pretrain", self.bcp.pretrain),
            ("bcp.ema", self.bcp.ema),
            ("bcp.box_fraction", self.bcp.box_fraction),
        ];
        if let Some((name, v)) = fractions.iter().find(|(_, v)| !(0.0..=1.0).contains(v)) {
            return bad(&format!("{name} must be in [0, 1], got {v}"));
        }
        if self.method == Method::Semifcn && self.semifcn.rounds == 0 {
            return bad("semifcn.rounds must be ≥ 1 (0 is supervised-single)");
        }
        if self.method == Method::Bcp
            && (self.labeled_batch < 2
                || self.labeled_batch != self.unlabeled_batch
                || !self.labeled_batch.is_multiple_of(2))
        {
            return bad("bcp mixes the halves of a labeled and an unlabeled batch pairwise: labeled_batch and unlabeled_batch must be equal, even and ≥ 2");
        }
        Ok(())
    }
}

/// What the data plan found (recorded in `config.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DataSummary {
    /// Labeled training slices in the shards.
    pub labeled_total: usize,
    /// Labeled training slices used with labels (after the fraction).
    pub labeled_used: usize,
    /// Training slices used without labels.
    pub unlabeled: usize,
    /// Validation slices.
    pub val: usize,
    /// The run's length and validation interval, fixed when the run starts (a resume with a
    /// new `--steps` extends `total_steps`, see the README).
    #[serde(default)]
    pub schedule: Schedule,
    /// Slice size in the shards (height = width).
    pub shard_size: usize,
    /// Channel names of the images.
    pub channel_names: Vec<String>,
    /// Class names (index = class).
    pub label_names: Vec<String>,
    /// SHA-256 over the shard folder's part hashes when the run started (`--resume` refuses a
    /// folder that changed since).
    #[serde(default)]
    pub shards_fingerprint: String,
    /// Rows in the shard folder when the run started.
    #[serde(default)]
    pub shards_rows: usize,
}

/// The complete configuration of a run (`RUN/config.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    /// dmnet version that made the run.
    pub dmnet_version: String,
    /// The shard folder trained on.
    pub shards: PathBuf,
    /// The pipeline file the `[train]` table came from, if any.
    pub pipeline: Option<PathBuf>,
    /// The training hyper-parameters (model config included).
    pub train: TrainConfig,
    /// The data that was found.
    pub data: DataSummary,
    /// The prep config the shards were written with (from their metadata), if present.
    pub prep_config: Option<serde_json::Value>,
}

impl RunConfig {
    /// Reads `RUN/config.json`.
    pub fn load(run_dir: &Path) -> Result<RunConfig> {
        let p = run_dir.join("config.json");
        let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
        serde_json::from_str(&text).map_err(|e| Error::invalid(&p, e.to_string()))
    }
    /// Writes `RUN/config.json`.
    pub fn save(&self, run_dir: &Path) -> Result<()> {
        let p = run_dir.join("config.json");
        let text = serde_json::to_string_pretty(self).expect("serialisable");
        std::fs::write(&p, text + "\n").map_err(|e| Error::io(&p, e))
    }
}
