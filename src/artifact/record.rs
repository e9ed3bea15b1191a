//! What a run writes besides its config: one [`EpochRecord`] per line of `RUN/metrics.jsonl`,
//! the resume state beside each checkpoint ([`TrainState`]) and the run's [`RunSummary`].
//! Torch-free.
use crate::metrics::{Diagnostics, SegMetrics};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One validation round of training (a line of `metrics.jsonl`; `eval_every` steps, one
/// labeled epoch by default). Losses are means over the round's steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Round number, from 1.
    pub epoch: usize,
    /// Optimiser steps taken at the end of the round.
    #[serde(default)]
    pub step: usize,
    /// Segmenter learning rate at the epoch's last step.
    pub lr: f64,
    /// Discriminator learning rate at the epoch's last step.
    pub lr_discriminator: f64,
    /// L_S = L_dice + λ1·L_adv + λ2·L_semi.
    pub loss_seg: f64,
    /// Dice loss, summed over both decoders (0–2; the log shows the mean of the two).
    pub loss_dice: f64,
    /// L_semi (0 for variants without unlabeled data).
    pub loss_semi: f64,
    /// Adversarial loss of the segmenter on labeled batches (0 without discriminator).
    pub loss_adv: f64,
    /// Adversarial loss of the segmenter on unlabeled batches.
    #[serde(default)]
    pub loss_adv_unlabeled: f64,
    /// Ramp-up factor of the unlabeled terms at the round's last step.
    #[serde(default)]
    pub ramp: f64,
    /// Discriminator loss (0 without discriminator).
    pub loss_dis: f64,
    /// Validation metrics (None when the shards have no val split).
    pub val: Option<SegMetrics>,
    /// Validation diagnostics: foreground fractions, agreement of the two decoders.
    #[serde(default)]
    pub val_diagnostics: Option<Diagnostics>,
    /// Mean per-case Dice on val (source grid) when the run selects on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_case_dice: Option<f64>,
    /// Training steps this round.
    pub steps: usize,
    /// Training slices per second (labeled + unlabeled).
    pub slices_per_s: f64,
    /// Seconds of the training steps (data waits included, validation excluded).
    pub train_seconds: f64,
    /// Wall-clock seconds of the epoch (training + validation + checkpoints).
    pub seconds: f64,
}

/// Resume state saved with a checkpoint (`checkpoints/<kind>/state.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct TrainState {
    /// Validation rounds completed.
    pub epoch: usize,
    /// Optimiser steps taken (the poly schedule's iteration).
    pub global_step: usize,
    /// Best validation score so far (the run's `select_on` metric: val mIoU, or val mean
    /// per-case Dice).
    #[serde(alias = "best_miou")]
    pub best_score: Option<f64>,
    /// Epoch of the best checkpoint.
    pub best_epoch: Option<usize>,
    /// Base seed; every round's shuffles, flips and libtorch RNG derive from (seed, round), so
    /// this and `epoch` are the whole RNG state.
    pub seed: u64,
    /// Loss scale of mixed precision.
    pub loss_scale: f64,
}

/// What [`super::run`] returns.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSummary {
    /// The run directory.
    pub run_dir: PathBuf,
    /// Epochs completed (including those of a resumed run).
    pub epochs: usize,
    /// Epoch of the best-on-validation checkpoint.
    pub best_epoch: Option<usize>,
    /// The best checkpoint's validation score (the `select_on` metric).
    pub best_score: Option<f64>,
    /// What the best checkpoint was selected on.
    #[serde(default)]
    pub select_on: crate::artifact::run_config::Selection,
    /// The last epoch's record.
    pub last: Option<EpochRecord>,
    /// Whether the run had a validation split (without one, "best" is the last round).
    #[serde(default)]
    pub validated: bool,
}

impl RunSummary {
    /// The one line `dmnet-train` prints at the end (the JSON is behind `--json`).
    pub fn line(&self) -> String {
        let best = match (self.best_score, self.best_epoch, self.validated) {
            (Some(m), Some(e), true) => format!(
                "best {} {:.1} % (round {e})",
                self.select_on.name(),
                m * 100.0
            ),
            _ => "no validation split: best = last".into(),
        };
        let last = self.last.as_ref().map_or(String::new(), |l| {
            let val = l.val.as_ref().map_or(String::new(), |v| {
                format!(", val mIoU {:.1} %", v.miou * 100.0)
            });
            format!(
                "; last round: step {}, loss {:.4} (supervised {:.4}){val}",
                l.step, l.loss_seg, l.loss_dice
            )
        });
        format!(
            "trained {}: {} rounds, {best}{last}; checkpoints in {}",
            self.run_dir.display(),
            self.epochs,
            self.run_dir.join("checkpoints").display()
        )
    }
}

/// One line of `metrics.jsonl`: the record and its text exactly as written. History is
/// append-only: a resume keeps the text of the lines it keeps, byte for byte, instead of
/// re-serialising what it parsed (a parse–print round trip may change the last digit).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MetricsLine {
    /// The parsed record.
    pub record: EpochRecord,
    /// The line as written (without the newline).
    pub text: String,
}

impl MetricsLine {
    /// A new line for `record`.
    pub(crate) fn new(record: EpochRecord) -> MetricsLine {
        let text = serde_json::to_string(&record).expect("serialisable");
        MetricsLine { record, text }
    }
}

/// Reads `metrics.jsonl` (missing file: empty).
pub(crate) fn read_metrics(run_dir: &Path) -> Result<Vec<MetricsLine>> {
    let p = run_dir.join("metrics.jsonl");
    let text = match std::fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(&p, e)),
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let record = serde_json::from_str(l).map_err(|e| Error::invalid(&p, e.to_string()))?;
            Ok(MetricsLine {
                record,
                text: l.to_string(),
            })
        })
        .collect()
}

/// Writes `metrics.jsonl` with `lines` (on resume: the lines up to the checkpoint, unchanged).
pub(crate) fn write_metrics(run_dir: &Path, lines: &[MetricsLine]) -> Result<()> {
    let p = run_dir.join("metrics.jsonl");
    let mut text = String::new();
    for l in lines {
        text.push_str(&l.text);
        text.push('\n');
    }
    crate::atomic::write_bytes(&p, text)
}

/// Which checkpoint to read.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum CheckpointKind {
    /// Best validation mIoU.
    Best,
    /// End of the last completed epoch.
    Last,
}

impl CheckpointKind {
    /// `best` or `last`.
    pub fn name(self) -> &'static str {
        match self {
            CheckpointKind::Best => "best",
            CheckpointKind::Last => "last",
        }
    }
}

impl std::fmt::Display for CheckpointKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The resume state saved beside a run's checkpoint `kind`.
pub(crate) fn read_state(run_dir: &Path, kind: CheckpointKind) -> Result<TrainState> {
    super::RunDir::new(run_dir).state(kind)
}
