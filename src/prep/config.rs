//! The prep config: the `[prep]` table of a pipeline file (`pipelines/NAME.toml`) merged with
//! command-line overrides. Saved as `OUT/prep-config.json` and in every shard's key-value
//! metadata (`dmnet.prep_config`). Other top-level tables (`[train]`, …) are ignored; unknown
//! keys inside `[prep]` are rejected.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::artifact::Fraction;
use crate::preprocess::PreprocessConfig;
use crate::shard::schema::ImageDtype;
use crate::{Error, Result};

/// Input layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// Detect (and log) the layout.
    #[default]
    Auto,
    /// `case_XXXXX/imaging.nii.gz` + `segmentation.nii.gz`.
    Kits19,
    /// `<case>/<case>_{t1,t1ce,t2,flair}.nii.gz` + `<case>_seg.nii.gz`.
    Brats,
    /// `dataset.json`, `imagesTr/`, `labelsTr/`, optional `imagesTs/` (also nnU-Net raw).
    Msd,
    /// A folder tree of DICOM files (+ DICOM SEG).
    Dicom,
    /// A CSV `patient_id,image[,image…],label`.
    Manifest,
    /// SSL4MIS's h5 folder (ACDC): `train_slices.list`, `val.list`, `test.list`, `data/`;
    /// the lists are the split.
    Ssl4mis,
}

impl Layout {
    /// The name `--layout` takes (`msd`, `ssl4mis`, …).
    pub fn name(self) -> &'static str {
        match self {
            Layout::Auto => "auto",
            Layout::Kits19 => "kits19",
            Layout::Brats => "brats",
            Layout::Msd => "msd",
            Layout::Dicom => "dicom",
            Layout::Manifest => "manifest",
            Layout::Ssl4mis => "ssl4mis",
        }
    }
}

/// Slice protocol (domain notes §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// DMNet paper: per patient one labeled slice (+ two unlabeled for training patients),
    /// drawn with the seed among foreground slices.
    #[default]
    Paper,
    /// Every slice; a labeled budget of training patients, the others unlabeled.
    AllSlices,
}

/// Everything `dmnet-prep ingest` needs besides input/output folders.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrepConfig {
    /// Pipeline name (from the pipeline file's top-level `name`, or "custom").
    pub pipeline: String,
    /// Input layout.
    pub layout: Layout,
    /// Slice protocol.
    pub protocol: Protocol,
    /// Seed for the patient split and slice draws.
    pub seed: u64,
    /// Split ratios train:val:test.
    pub split_ratio: [u32; 3],
    /// `all-slices`: number of training patients whose slices stay labeled (None = all,
    /// unless `labeled_patient_fraction` is set).
    pub labeled_patients: Option<usize>,
    /// `all-slices`: fraction of the training *patients* whose slices stay labeled (`0.2` or
    /// `"20%"`). Training's `labeled_slice_fraction` is a different thing: a fraction of the
    /// labeled training *slices*. `labeled_fraction` is this field's 0.1.0 name.
    #[serde(alias = "labeled_fraction")]
    pub labeled_patient_fraction: Option<Fraction>,
    /// `paper`: unlabeled slices drawn per training patient.
    pub unlabeled_per_patient: usize,
    /// Write raw patient ids instead of salted hashes.
    pub keep_patient_ids: bool,
    /// The folder is meant to leave this machine (`--shareable`): a private salt is required,
    /// and no input file or folder name is written into it: `source_path` and the manifest's
    /// study names are salted keys (the key → path map is written outside the folder).
    pub shareable: bool,
    /// Slices per Parquet row group.
    pub row_group_slices: usize,
    /// Target size of one part file (bytes); parts are cut between studies.
    pub file_bytes: u64,
    /// zstd level.
    pub zstd_level: i32,
    /// Storage of the `image` column: `float16` (default; |error| ≤ 2⁻¹¹·|value|) or `float32`
    /// (exact; needed for values beyond ±65504, e.g. `normalization = "none"` on raw scanners).
    pub image_dtype: ImageDtype,
    /// Preprocessing (shared with inference).
    pub preprocess: PreprocessConfig,
    /// Time point (0-based) read from every 4-D series or 4-D NIfTI (3-D volumes are read as
    /// they are); `None`: a 4-D input is a per-study error (`--timepoint N`).
    pub timepoint: Option<usize>,
    /// Mixtures `inspect` accepts instead of reporting a broken invariant: `"orientation"`
    /// (slices of several orientations), `"modality"` (several channel sets, e.g. CT and MR).
    pub allow_mixed: Vec<Mixture>,
}

/// A mixture of shards that `inspect` reports as broken unless the pipeline allows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mixture {
    /// Slices of several orientations (axial, coronal, sagittal).
    Orientation,
    /// Several channel sets / modalities.
    Modality,
}

impl Default for PrepConfig {
    fn default() -> Self {
        PrepConfig {
            pipeline: "custom".into(),
            layout: Layout::Auto,
            protocol: Protocol::Paper,
            seed: 0,
            split_ratio: [7, 1, 2],
            labeled_patients: None,
            labeled_patient_fraction: None,
            unlabeled_per_patient: 2,
            keep_patient_ids: false,
            shareable: false,
            row_group_slices: 64,
            file_bytes: 256 << 20,
            zstd_level: 3,
            image_dtype: ImageDtype::Float16,
            preprocess: PreprocessConfig::default(),
            timepoint: None,
            allow_mixed: Vec::new(),
        }
    }
}

/// A pipeline file: top-level `name`, `description`, and the `[prep]` table (others ignored).
#[derive(Debug, Deserialize)]
struct PipelineFile {
    name: Option<String>,
    #[allow(dead_code)]
    description: Option<String>,
    #[serde(default)]
    prep: Option<toml::Value>,
}

impl PrepConfig {
    /// Reads the `[prep]` table of a pipeline file (serde defaults, unknown keys rejected).
    pub(crate) fn from_pipeline(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let cfg_err = |msg: String| Error::Config {
            path: path.to_path_buf(),
            msg,
        };
        let file: PipelineFile = toml::from_str(&text).map_err(|e| cfg_err(e.to_string()))?;
        let mut cfg: PrepConfig = match file.prep {
            Some(v) => v
                .try_into()
                .map_err(|e: toml::de::Error| cfg_err(format!("[prep]: {e}")))?,
            None => PrepConfig::default(),
        };
        if let Some(n) = file.name {
            cfg.pipeline = n;
        }
        cfg.validate().map_err(cfg_err)?;
        Ok(cfg)
    }

    /// Checks value ranges; returns a message for a config error.
    pub fn validate(&self) -> std::result::Result<(), String> {
        // the size the network accepts (model::SIZE_MULTIPLE), checked before any work
        crate::model::validate_input_size(self.preprocess.size).map_err(|e| match e {
            Error::Config { msg, .. } => format!("--size / preprocess.size: {msg}"),
            other => other.to_string(),
        })?;
        if self.split_ratio.iter().sum::<u32>() == 0 || self.split_ratio[0] == 0 {
            return Err(format!(
                "split_ratio {:?}: train share must be > 0",
                self.split_ratio
            ));
        }
        if self.row_group_slices == 0 {
            return Err("row_group_slices must be > 0".into());
        }
        Ok(())
    }
}

/// Options of one ingest run that are not part of the saved config.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// Input folder (or manifest CSV).
    pub input: PathBuf,
    /// Output shard folder.
    pub out: PathBuf,
    /// Worker threads (0 = all cores).
    pub threads: usize,
    /// Reuse this `splits.json`.
    pub splits: Option<PathBuf>,
    /// Salt of the patient-key hash (never written anywhere; keep it to resume or add data).
    pub salt: String,
    /// This worker's index and the number of workers.
    pub worker: (usize, usize),
    /// Process only the first N studies (sorted), e.g. for benchmarks.
    pub max_studies: Option<usize>,
    /// Where a `shareable` ingest writes its study key → input path map (default: beside the
    /// output folder, `<out>.source-map.json`; never inside it).
    pub source_map: Option<PathBuf>,
}
