//! Model–data compatibility: what a model was trained on (a model sidecar or a run's
//! `config.json`) against what an input says it holds (shards, a DICOM series' Modality
//! (0008,0060), an MSD/nnU-Net `dataset.json`). Compared: number and names of channels,
//! modality where both sides know it, number and names of classes, and the slice size of shard
//! inputs. A mismatch is one error naming both sides; `--allow-mismatch` turns it into a
//! warning. `dmnet-infer` checks every input; `dmnet-train eval` calls
//! [`check_run_against_shards`].
use crate::artifact::RunConfig;
use crate::preprocess::{Normalization, PreprocessConfig};
use crate::{Error, Result};
use std::fmt;
use std::path::{Path, PathBuf};

/// An imaging modality, as far as dmnet tells them apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Modality {
    /// Computed tomography (Hounsfield units).
    Ct,
    /// Magnetic resonance (any sequence).
    Mr,
    /// Anything else, by its DICOM / dataset name (`PT`, `US`, …).
    Other(String),
}

impl fmt::Display for Modality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Modality::Ct => write!(f, "CT"),
            Modality::Mr => write!(f, "MR"),
            Modality::Other(s) => write!(f, "{s}"),
        }
    }
}

/// MR sequence names used as channel names (BraTS, nnU-Net `channel_names`, MSD `modality`).
const MR_NAMES: [&str; 16] = [
    "mr", "mri", "t1", "t1w", "t1ce", "t1gd", "t2", "t2w", "flair", "adc", "dwi", "pd", "pdw",
    "swi", "bold", "lge",
];

impl Modality {
    /// From a DICOM Modality (0008,0060) or a dataset's channel / modality name (`CT`, `MRI`,
    /// `T2w`, `FLAIR`, …); `None` when the name says nothing (`image`, `channel0`, empty).
    pub(crate) fn from_name(name: &str) -> Option<Modality> {
        let n = name.trim().to_ascii_lowercase();
        if n.is_empty() || n.starts_with("channel") || n == "image" {
            return None;
        }
        if n == "ct" || n.starts_with("ct ") || n.starts_with("ct_") {
            return Some(Modality::Ct);
        }
        if MR_NAMES
            .iter()
            .any(|m| n == *m || n.starts_with(&format!("{m}_")))
        {
            return Some(Modality::Mr);
        }
        if n.len() <= 3 && n.chars().all(|c| c.is_ascii_alphabetic()) {
            return Some(Modality::Other(name.trim().to_ascii_uppercase()));
        }
        None
    }

    /// What a training preprocessing implies: `ct` normalisation = CT, `mri` = MR, else the
    /// channel names decide (all must agree).
    pub(crate) fn of_training(pre: &PreprocessConfig, channels: &[String]) -> Option<Modality> {
        match pre.normalization {
            Normalization::Ct => Some(Modality::Ct),
            Normalization::Mri => Some(Modality::Mr),
            _ => common(channels.iter().map(|c| Modality::from_name(c))),
        }
    }
}

/// The one modality all names agree on, if every name gives one.
fn common(mut it: impl Iterator<Item = Option<Modality>>) -> Option<Modality> {
    let first = it.next()??;
    it.all(|m| m.as_ref() == Some(&first)).then_some(first)
}

/// What a model expects.
#[derive(Debug, Clone)]
pub struct ModelFacts {
    /// How to name the model in messages (`model models/ct.onnx`, `run runs/la`).
    pub name: String,
    /// Channel names, in input order.
    pub channels: Vec<String>,
    /// Training modality, when known.
    pub modality: Option<Modality>,
    /// Class names, index = class.
    pub classes: Vec<String>,
    /// Slice size of the training shards.
    pub slice_size: Option<usize>,
}

/// What an input says about itself; `None` = the input does not say.
#[derive(Debug, Clone, Default)]
pub struct DataFacts {
    /// The input (file or folder) named in messages.
    pub source: PathBuf,
    /// Channel names (shards, dataset.json).
    pub channels: Option<Vec<String>>,
    /// Number of channels (volumes: files per case).
    pub num_channels: Option<usize>,
    /// Modality (DICOM tag, dataset.json, shard preprocessing).
    pub modality: Option<Modality>,
    /// Class names (shards, dataset.json `labels`).
    pub classes: Option<Vec<String>>,
    /// Slice size (shards).
    pub slice_size: Option<usize>,
}

/// `Left_Atrium` and `left atrium` are the same class; `class1` / `channel0` match anything.
fn same_name(a: &str, b: &str) -> bool {
    let norm = |s: &str| s.trim().to_lowercase().replace(['_', '-'], " ");
    let generic = |s: &str| {
        let s = s.trim().to_lowercase();
        ["class", "channel"].iter().any(|p| {
            s.strip_prefix(p)
                .is_some_and(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()))
        })
    };
    generic(a) || generic(b) || norm(a) == norm(b)
}

fn same_names(a: &[String], b: &[String]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same_name(x, y))
}

/// Every disagreement between `model` and `data`, one phrase each.
pub fn mismatches(model: &ModelFacts, data: &DataFacts) -> Vec<String> {
    let mut out = Vec::new();
    let list = |v: &[String]| format!("[{}]", v.join(", "));
    let c = model.channels.len();
    if let Some(ch) = &data.channels {
        if !same_names(ch, &model.channels) {
            out.push(format!(
                "channels: model {} vs input {}",
                list(&model.channels),
                list(ch)
            ));
        }
    } else if let Some(n) = data.num_channels.filter(|&n| n != c) {
        out.push(format!(
            "channels: model takes {c} ({}), input gives {n}",
            list(&model.channels)
        ));
    }
    if let (Some(m), Some(d)) = (&model.modality, &data.modality) {
        if m != d {
            out.push(format!("modality: model trained on {m}, input is {d}"));
        }
    }
    if let Some(cl) = &data.classes {
        if !same_names(cl, &model.classes) {
            out.push(format!(
                "classes: model has {} {}, input has {} {}",
                model.classes.len(),
                list(&model.classes),
                cl.len(),
                list(cl)
            ));
        }
    }
    if let (Some(m), Some(d)) = (model.slice_size, data.slice_size) {
        if m != d {
            out.push(format!("slice size: model {m}×{m}, input {d}×{d}"));
        }
    }
    out
}

/// Checks `data` against `model`: a mismatch is an error naming both sides (the input's path
/// and the model); with `allow` it is logged as a warning and `Ok` is returned.
pub(crate) fn enforce(model: &ModelFacts, data: &DataFacts, allow: bool) -> Result<()> {
    let found = mismatches(model, data);
    if found.is_empty() {
        return Ok(());
    }
    let msg = format!("does not match {}: {}", model.name, found.join("; "));
    if allow {
        tracing::warn!(
            "{}: {msg} (--allow-mismatch: going on)",
            data.source.display()
        );
        return Ok(());
    }
    Err(Error::invalid(
        &data.source,
        format!("{msg}. Use a model trained for this data, or pass --allow-mismatch to run anyway"),
    ))
}

/// What a shard folder holds: channel and class names and slice size of its first slice,
/// modality from its prep config (`dmnet.prep_config` metadata).
pub(crate) fn shard_facts(dir: &Path) -> Result<DataFacts> {
    use crate::shard::schema::{file_metadata, read_shards, shard_files, META_PREP_CONFIG};
    let files = shard_files(dir)?;
    let first_file = files
        .first()
        .ok_or_else(|| Error::invalid(dir, "no shard files"))?;
    let prep: Option<PreprocessConfig> = file_metadata(first_file)?
        .get(META_PREP_CONFIG)
        .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
        .and_then(|v| serde_json::from_value(v.get("preprocess")?.clone()).ok());
    let first = read_shards(dir)?
        .next()
        .transpose()?
        .and_then(|g| g.into_iter().next())
        .ok_or_else(|| Error::invalid(dir, "the shards hold no slices"))?;
    let modality = match &prep {
        Some(p) => Modality::of_training(p, &first.channel_names),
        None => common(first.channel_names.iter().map(|c| Modality::from_name(c))),
    };
    Ok(DataFacts {
        source: dir.to_path_buf(),
        num_channels: Some(first.channel_names.len()),
        channels: Some(first.channel_names),
        modality,
        classes: Some(first.label_names),
        slice_size: (first.height == first.width).then_some(first.height.max(0) as usize),
    })
}

/// The facts of a training run (`RUN/config.json`).
pub(crate) fn run_facts(run_dir: &Path, rc: &RunConfig) -> ModelFacts {
    let pre: Option<PreprocessConfig> = rc
        .prep_config
        .as_ref()
        .and_then(|v| serde_json::from_value(v.get("preprocess")?.clone()).ok());
    let channels = rc.data.channel_names.clone();
    ModelFacts {
        name: format!("run {}", run_dir.display()),
        modality: match &pre {
            Some(p) => Modality::of_training(p, &channels),
            None => common(channels.iter().map(|c| Modality::from_name(c))),
        },
        channels,
        classes: rc.data.label_names.clone(),
        slice_size: (rc.data.shard_size > 0).then_some(rc.data.shard_size),
    }
}

/// `dmnet-train eval`'s check: the run's training data against the shards it is evaluated on
/// (see [`enforce`]).
pub fn check_run_against_shards(
    run_dir: &Path,
    rc: &RunConfig,
    shards: &Path,
    allow_mismatch: bool,
) -> Result<()> {
    enforce(
        &run_facts(run_dir, rc),
        &shard_facts(shards)?,
        allow_mismatch,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> ModelFacts {
        ModelFacts {
            name: "model ct.onnx".into(),
            channels: vec!["ct".into()],
            modality: Some(Modality::Ct),
            classes: vec!["background".into(), "kidney".into(), "tumour".into()],
            slice_size: Some(64),
        }
    }

    #[test]
    fn modality_names_map_to_ct_and_mr() {
        assert_eq!(Modality::from_name("CT"), Some(Modality::Ct));
        for mr in ["MR", "MRI", "T2w", "flair", "ADC"] {
            assert_eq!(Modality::from_name(mr), Some(Modality::Mr), "{mr}");
        }
        assert_eq!(
            Modality::from_name("PT"),
            Some(Modality::Other("PT".into()))
        );
        assert_eq!(Modality::from_name("channel0"), None);
    }

    #[test]
    fn every_mismatch_is_named_and_generic_names_match_anything() {
        let data = DataFacts {
            source: "la".into(),
            channels: Some(vec!["mri".into()]),
            modality: Some(Modality::Mr),
            classes: Some(vec!["background".into(), "left atrium".into()]),
            slice_size: Some(64),
            ..Default::default()
        };
        let m = mismatches(&model(), &data);
        assert_eq!(m.len(), 3, "{m:?}");
        assert!(m[1].contains("CT") && m[1].contains("MR"));
        assert!(enforce(&model(), &data, true).is_ok());
        let e = enforce(&model(), &data, false).unwrap_err().to_string();
        assert!(
            e.contains("ct.onnx") && e.contains("--allow-mismatch"),
            "{e}"
        );
        let generic = DataFacts {
            source: "x".into(),
            classes: Some(vec!["class0".into(), "Kidney".into(), "tumour".into()]),
            num_channels: Some(1),
            ..Default::default()
        };
        assert!(mismatches(&model(), &generic).is_empty());
    }
}
