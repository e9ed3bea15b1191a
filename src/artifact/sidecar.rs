//! The model sidecar `model.json` (schema `schemas/model-sidecar-v1.json`): everything
//! dmnet-infer needs to repeat the training-time preprocessing and to name the outputs
//! (input name/shape/dtype, channel and class names, preprocessing steps, source run and
//! checkpoint, validation metrics, opset, dmnet version). The same facts go into the ONNX
//! `metadata_props` as `dmnet.<field>` = JSON.
use crate::model::ModelConfig;
use crate::preprocess::PreprocessConfig;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Name of the graph input.
pub(crate) const INPUT: &str = "image";
/// Name of the averaged probability output.
pub const PROBABILITIES: &str = "probabilities";
/// Name of the argmax output.
pub(crate) const LABELS: &str = "labels";

/// The `schema` field of every sidecar.
pub(crate) const SCHEMA: &str = "dmnet.model-sidecar";
/// The sidecar schema version this dmnet writes and reads.
pub const SCHEMA_VERSION: u32 = 1;

/// Name, dtype and shape of a graph input or output (`"N"` = dynamic batch).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorSpec {
    /// Name in the ONNX graph.
    pub name: String,
    /// Element type (`float32`, `uint8`).
    pub dtype: String,
    /// Dimensions; `"N"` for the dynamic batch, numbers otherwise.
    pub shape: Vec<serde_json::Value>,
    /// What it holds.
    pub description: String,
}

/// The preprocessing dmnet-infer repeats (the same code as `dmnet-prep`, `prep::preprocess`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preprocessing {
    /// The ordered steps in words (for people and other tools).
    pub steps: Vec<String>,
    /// The preprocessing config of the training shards (normalisation, window, size, axis, …).
    pub config: PreprocessConfig,
}

/// Where the weights came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Source {
    /// The run directory given to dmnet-export.
    pub run_dir: PathBuf,
    /// `best` or `last`.
    pub checkpoint: super::CheckpointKind,
    /// The checkpoint file.
    pub checkpoint_file: PathBuf,
    /// SHA-256 of the checkpoint file.
    pub checkpoint_sha256: String,
}

/// The sidecar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSidecar {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// Always [`SCHEMA_VERSION`] for this dmnet.
    pub schema_version: u32,
    /// dmnet version that exported the model.
    pub dmnet_version: String,
    /// The ONNX file name (beside the sidecar).
    pub model_file: String,
    /// ONNX opset.
    pub opset: i64,
    /// The input: float32 `[N, C, S, S]`, NCHW.
    pub input: TensorSpec,
    /// The outputs: `probabilities` then `labels`.
    pub outputs: Vec<TensorSpec>,
    /// Channel names in input-channel order.
    pub channel_names: Vec<String>,
    /// Class names, index = class (0 = background).
    pub class_names: Vec<String>,
    /// Preprocessing.
    pub preprocessing: Preprocessing,
    /// The network configuration.
    pub model: ModelConfig,
    /// Source run and checkpoint.
    pub source: Source,
    /// The evaluation of the exported checkpoint on the **val** split (`dmnet-train eval`'s
    /// report: `checkpoint`, `epoch`, `split`, `shards`, `metrics`, `cases`), or `None` when
    /// that checkpoint was not evaluated on val. Never test figures.
    pub validation_metrics: Option<serde_json::Value>,
    /// The same on the **test** split, when it was evaluated.
    #[serde(default)]
    pub test_metrics: Option<serde_json::Value>,
    /// How per-case metrics score missing structures (`dmnet-infer`'s default convention).
    #[serde(default)]
    pub convention: crate::metrics::Convention,
}

impl ModelSidecar {
    /// The sidecar path of a model file: `model.onnx` → `model.json`.
    pub(crate) fn path_for(model: &Path) -> PathBuf {
        model.with_extension("json")
    }

    /// Reads the sidecar beside `model`; a missing model, a missing or foreign sidecar, or a
    /// sidecar that contradicts itself (class names vs K, channel names vs C) is an error
    /// naming the file.
    pub fn read_for(model: &Path) -> Result<Self> {
        if !model.is_file() {
            return Err(Error::invalid(
                model,
                "model file not found (pass the .onnx file dmnet-export wrote)",
            ));
        }
        let path = Self::path_for(model);
        if !path.exists() {
            return Err(Error::invalid(
                model,
                format!(
                    "model without sidecar: {} not found (dmnet-export writes it next to the .onnx; \
                     it carries the preprocessing dmnet-infer must repeat)",
                    path.display()
                ),
            ));
        }
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let s: ModelSidecar = serde_json::from_str(&text)
            .map_err(|e| Error::invalid(&path, format!("not a dmnet model sidecar: {e}")))?;
        s.validate(&path)?;
        Ok(s)
    }

    /// Checks the schema and that the fields agree with each other (K class names, C channel
    /// names, S everywhere); the error names `path`.
    pub fn validate(&self, path: &Path) -> Result<()> {
        if self.schema != SCHEMA || self.schema_version != SCHEMA_VERSION {
            return Err(Error::invalid(
                path,
                format!(
                    "sidecar schema {} v{}, this dmnet reads {SCHEMA} v{SCHEMA_VERSION}",
                    self.schema, self.schema_version
                ),
            ));
        }
        let m = &self.model;
        let bad = |what: String| {
            Err(Error::invalid(
                path,
                format!("inconsistent sidecar: {what}"),
            ))
        };
        if m.num_classes < 2 || self.class_names.len() != m.num_classes {
            return bad(format!(
                "model.num_classes = {} but class_names has {} entries",
                m.num_classes,
                self.class_names.len()
            ));
        }
        if m.in_channels == 0 || self.channel_names.len() != m.in_channels {
            return bad(format!(
                "model.in_channels = {} but channel_names has {} entries",
                m.in_channels,
                self.channel_names.len()
            ));
        }
        if self.preprocessing.config.size != m.input_size {
            return bad(format!(
                "preprocessing.config.size = {} but model.input_size = {}",
                self.preprocessing.config.size, m.input_size
            ));
        }
        crate::model::validate_input_size(m.input_size)
    }

    /// Rebuilds a sidecar from an ONNX file's `metadata_props` (`dmnet.<field>` = JSON), as
    /// [`ModelSidecar::metadata_props`] wrote them; `None` when the model carries no `dmnet.*`
    /// entries (not exported by dmnet), an error when they are there but unreadable.
    pub(crate) fn from_metadata_props(
        props: &std::collections::BTreeMap<String, String>,
        model: &Path,
    ) -> Result<Option<Self>> {
        let mut obj = serde_json::Map::new();
        for (k, v) in props {
            if let Some(field) = k.strip_prefix("dmnet.") {
                let value = serde_json::from_str(v).map_err(|e| {
                    Error::invalid(model, format!("metadata_props {k} is not JSON: {e}"))
                })?;
                obj.insert(field.to_string(), value);
            }
        }
        if obj.is_empty() {
            return Ok(None);
        }
        let s: ModelSidecar = serde_json::from_value(serde_json::Value::Object(obj))
            .map_err(|e| Error::invalid(model, format!("dmnet metadata_props: {e}")))?;
        s.validate(model)?;
        Ok(Some(s))
    }

    /// The fields inference depends on (preprocessing, channels, classes, network, tensors)
    /// whose values differ between `self` and `other`.
    pub(crate) fn differing_fields(&self, other: &ModelSidecar) -> Vec<&'static str> {
        let mut out = Vec::new();
        macro_rules! cmp {
            ($($f:ident),*) => { $(if self.$f != other.$f { out.push(stringify!($f)); })* };
        }
        cmp!(
            preprocessing,
            channel_names,
            class_names,
            model,
            input,
            outputs
        );
        out
    }

    /// What the model expects, for the compatibility check ([`crate::artifact::compat`]).
    pub fn facts(&self, model: &Path) -> crate::artifact::compat::ModelFacts {
        let pre = &self.preprocessing.config;
        crate::artifact::compat::ModelFacts {
            name: format!("model {}", model.display()),
            channels: self.channel_names.clone(),
            modality: crate::artifact::compat::Modality::of_training(pre, &self.channel_names),
            classes: self.class_names.clone(),
            slice_size: Some(self.size()),
        }
    }

    /// Writes the sidecar as pretty JSON.
    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).expect("serialisable");
        crate::atomic::write_bytes(path, text + "\n")
    }

    /// The `metadata_props` entries: `dmnet.<field>` = the field as JSON.
    pub fn metadata_props(&self) -> Vec<(String, String)> {
        let v = serde_json::to_value(self).expect("serialisable");
        v.as_object()
            .expect("object")
            .iter()
            .map(|(k, v)| (format!("dmnet.{k}"), v.to_string()))
            .collect()
    }

    /// Input size S.
    pub fn size(&self) -> usize {
        self.model.input_size
    }
}

/// The preprocessing steps in words, for the sidecar.
pub(crate) fn describe_steps(p: &PreprocessConfig) -> Vec<String> {
    use crate::preprocess::Normalization as N;
    let norm = match p.normalization {
        N::Ct => format!(
            "normalise each channel: clip to the HU window [{}, {}], then z-score over the volume",
            p.ct_window[0], p.ct_window[1]
        ),
        N::Mri | N::Auto => {
            "normalise each channel: z-score over the non-zero voxels (zeros stay 0)".into()
        }
        N::Zscore => "normalise each channel: z-score over all voxels".into(),
        N::None => "no intensity normalisation".into(),
    };
    use crate::preprocess::SliceAxis as A;
    let axis = match p.slice_axis {
        A::Voxel(a) => format!("slice through voxel axis {a}"),
        A::Auto => "slice through the through-plane axis (largest spacing; near-isotropic: the axis closest to S-I)".into(),
        named => format!("slice {named}: through the voxel axis closest to the world {} axis", ["L-R", "A-P", "S-I"][named.world_axis().unwrap_or(2)]),
    };
    vec![
        "read the volume (NIfTI with scl_slope/inter applied, or a DICOM series)".into(),
        norm,
        axis,
        "in-plane axes p < q: pixel (r, c) = voxel r on axis p, c on axis q".into(),
        format!(
            "resize each slice bilinearly (half-pixel centres, align_corners=false) to {0}x{0}",
            p.size
        ),
        "stack channels in channel_names order: float32 [N, C, S, S]".into(),
        "outputs: resize probabilities bilinearly back to the source in-plane size, argmax → uint8 mask".into(),
    ]
}
