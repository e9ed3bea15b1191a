//! Training configuration (the `[train]` table of a pipeline file, with `[train.model]`) and
//! the complete run config written to `RUN/config.json`. Torch-free. Defaults are the paper's
//! (§4.2): Adam 1e-4 / 1e-5 (discriminator), weight decay 5e-5, poly 0.9, 150 epochs, flip 0.5.
use crate::cli::DeviceChoice;
use crate::model::ModelConfig;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Hyper-parameters of one training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// The network and loss weights (`[train.model]`). Its `in_channels`, `num_classes` and
    /// `input_size` are filled in from the shards (and `size`) when a run starts.
    pub model: ModelConfig,
    /// Input size S; `None`: the shards' slice size. Slices of another size are resized
    /// (bilinear images, nearest masks) on the fly.
    pub size: Option<usize>,
    /// Epochs; one epoch is one pass over the (fraction-selected) labeled training slices.
    pub epochs: usize,
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
    /// Probability of a horizontal flip per slice.
    pub flip_prob: f64,
    /// Fraction (0, 1] of the training labeled slices used with labels (0.1/0.3/0.5/1.0).
    pub labeled_fraction: f64,
    /// Seed of initialisation, fraction selection, shuffling and flips.
    pub seed: u64,
    /// auto | cpu | cuda.
    pub device: DeviceChoice,
    /// Mixed precision (autocast + dynamic loss scaling) on CUDA; ignored on CPU (logged).
    pub amp: bool,
    /// Cap on steps per epoch (`None`: ⌈labeled slices / labeled_batch⌉). For smoke runs.
    pub max_steps_per_epoch: Option<usize>,
    /// Batches held in each prefetch queue.
    pub prefetch: usize,
    /// Shuffle-buffer size in slices (the row-group order is permuted too).
    pub shuffle_window: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            model: ModelConfig::default(),
            size: None,
            epochs: 150,
            labeled_batch: 8,
            unlabeled_batch: 8,
            eval_batch: 16,
            lr: 1e-4,
            lr_discriminator: 1e-5,
            weight_decay: 5e-5,
            poly_power: 0.9,
            flip_prob: 0.5,
            labeled_fraction: 1.0,
            seed: 0,
            device: DeviceChoice::Auto,
            amp: false,
            max_steps_per_epoch: None,
            prefetch: 4,
            shuffle_window: 256,
        }
    }
}

impl TrainConfig {
    /// Reads the `[train]` table of a pipeline file (absent table: defaults).
    pub fn from_pipeline(path: &Path) -> Result<TrainConfig> {
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

    /// Checks the fields (and the model config).
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: &str| {
            Err(Error::Config {
                path: "<train>".into(),
                msg: msg.into(),
            })
        };
        self.model.validate()?;
        if self.epochs == 0 || self.labeled_batch == 0 || self.eval_batch == 0 {
            return bad("epochs, labeled_batch and eval_batch must be ≥ 1");
        }
        if self.model.variant.uses_unlabeled() && self.unlabeled_batch == 0 {
            return bad("unlabeled_batch must be ≥ 1 for variants that use unlabeled slices");
        }
        if !(self.labeled_fraction > 0.0 && self.labeled_fraction <= 1.0) {
            return bad("labeled_fraction must be in (0, 1]");
        }
        if !(0.0..=1.0).contains(&self.flip_prob) {
            return bad("flip_prob must be in [0, 1]");
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
    /// Steps per epoch.
    pub steps_per_epoch: usize,
    /// Slice size in the shards (height = width).
    pub shard_size: usize,
    /// Channel names of the images.
    pub channel_names: Vec<String>,
    /// Class names (index = class).
    pub label_names: Vec<String>,
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
