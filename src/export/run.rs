//! `dmnet-export`: read a run directory (`config.json`, `checkpoints/{best,last}/`,
//! `eval-<split>-<checkpoint>.json`; layout in `docs/contracts.md`), build the DMNet graph from the checkpoint
//! with the pure-Rust safetensors reader and write `model.onnx` + the `model.json` sidecar.
use super::{dmnet, graph};
use crate::artifact::sidecar::{describe_steps, ModelSidecar, Preprocessing, Source, TensorSpec};
use crate::artifact::CheckpointKind;
use crate::model::ModelConfig;
use crate::preprocess::PreprocessConfig;
use crate::shard::Split;
use crate::{Error, Result};
use serde_json::{json, Value};
use sha2::Digest;
use std::path::{Path, PathBuf};

/// What to export.
#[derive(Debug, Clone)]
pub(crate) struct ExportOptions {
    /// The run directory.
    pub run: PathBuf,
    /// The ONNX file to write (the sidecar goes beside it, `.json`).
    pub out: PathBuf,
    /// Which checkpoint of the run.
    pub checkpoint: CheckpointKind,
    /// ONNX opset.
    pub opset: i64,
}

/// What was written.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct ExportSummary {
    /// The ONNX file.
    pub onnx: PathBuf,
    /// The sidecar.
    pub sidecar: PathBuf,
    /// Number of initializers (= model variables).
    pub initializers: usize,
    /// Size of the ONNX file in bytes.
    pub bytes: usize,
}

/// The first value under `key` anywhere in `v` (depth first) that `ok` accepts.
fn find<'a>(v: &'a Value, key: &str, ok: &dyn Fn(&Value) -> bool) -> Option<&'a Value> {
    match v {
        Value::Object(m) => {
            if let Some(x) = m.get(key).filter(|x| ok(x)) {
                return Some(x);
            }
            m.values().find_map(|x| find(x, key, ok))
        }
        Value::Array(a) => a.iter().find_map(|x| find(x, key, ok)),
        _ => None,
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::invalid(path, format!("invalid JSON: {e}")))
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The run's model config, preprocessing config, channel names and class names: from
/// `train::RunConfig` (`train.model`, `prep_config.preprocess`, `data.channel_names`,
/// `data.label_names`), else found by key anywhere in `config.json` (hand-made run dirs).
pub(crate) fn read_run_config(
    run: &Path,
) -> Result<(ModelConfig, PreprocessConfig, Vec<String>, Vec<String>)> {
    let path = run.join("config.json");
    let cfg = read_json(&path)?;
    let rc = crate::artifact::RunConfig::load(run).ok();
    let model: ModelConfig = match &rc {
        Some(rc) => rc.train.model.clone(),
        None => find(&cfg, "model", &|x| {
            serde_json::from_value::<ModelConfig>(x.clone()).is_ok()
        })
        .map(|v| serde_json::from_value(v.clone()).expect("checked"))
        .ok_or_else(|| Error::invalid(&path, "no model config (`train.model`) found"))?,
    };
    model.validate()?;
    let prep: PreprocessConfig = find(&cfg, "preprocess", &|x| {
        serde_json::from_value::<PreprocessConfig>(x.clone()).is_ok()
    })
    .map(|x| serde_json::from_value(x.clone()).expect("checked"))
    .ok_or_else(|| {
        Error::invalid(
            &path,
            "no preprocessing config (`prep_config.preprocess`): the shards the run was trained \
             on carried no dmnet.prep_config metadata, so inference could not repeat their \
             preprocessing",
        )
    })?;
    let manifest = read_json(&run.join("prep-manifest.json")).unwrap_or(Value::Null);
    let is_list = |x: &Value| x.is_array();
    let pick = |key: &str, from_rc: Option<Vec<String>>| {
        let mut v = from_rc.unwrap_or_default();
        if v.is_empty() {
            v = strings(find(&cfg, key, &is_list));
        }
        if v.is_empty() {
            v = strings(find(&manifest, key, &is_list));
        }
        v
    };
    let mut channels = pick(
        "channel_names",
        rc.as_ref().map(|r| r.data.channel_names.clone()),
    );
    if channels.is_empty() {
        channels = prep.channels.clone();
    }
    if channels.len() != model.in_channels {
        channels = (0..model.in_channels)
            .map(|i| format!("channel{i}"))
            .collect();
    }
    let mut classes = pick(
        "label_names",
        rc.as_ref().map(|r| r.data.label_names.clone()),
    );
    if classes.is_empty() {
        classes = prep.label_names.clone();
    }
    if classes.len() != model.num_classes {
        classes = (0..model.num_classes)
            .map(|i| format!("class{i}"))
            .collect();
    }
    Ok((model, prep, channels, classes))
}

/// The checkpoint weights of a run.
pub(crate) fn checkpoint_path(run: &Path, kind: CheckpointKind) -> Result<PathBuf> {
    Ok(crate::artifact::RunDir::new(run).checkpoint(kind)?.weights)
}

/// The evaluation of the exported checkpoint on `split`: `RUN/eval-<split>-<checkpoint>.json`
/// (written by `dmnet-train eval`) whose checkpoint is the exported one and whose validation
/// round (`epoch`) and optimiser step are those the checkpoint was saved at
/// (`checkpoints/<kind>/state.json`), so a stale evaluation of an older best checkpoint, or of
/// the other checkpoint, is never carried. The value names its checkpoint, round, step, split
/// and shard folder. `None` (logged) when no such evaluation exists. The sidecar carries the
/// val split's as `validation_metrics` and the test split's as `test_metrics`, never one in
/// the other's field.
pub fn split_metrics(run: &Path, kind: CheckpointKind, split: Split) -> Option<Value> {
    let checkpoint = kind.name();
    let saved = crate::artifact::read_state(run, kind)
        .ok()
        .map(|s| (s.epoch, s.global_step));
    let at = |v: &Value, key: &str| v.get(key).and_then(Value::as_u64).map(|e| e as usize);
    let path = run.join(format!("eval-{split}-{checkpoint}.json"));
    let v = read_json(&path).ok()?;
    let same_ckpt = v.get("checkpoint").and_then(Value::as_str) == Some(checkpoint);
    let evaluated = at(&v, "epoch").zip(at(&v, "step"));
    if same_ckpt && saved.is_some() && evaluated == saved && v.get("metrics").is_some() {
        return Some(v);
    }
    let fmt =
        |x: Option<(usize, usize)>| x.map_or("?".into(), |(e, s)| format!("round {e}, step {s}"));
    tracing::warn!(
        "{}: not an evaluation of the exported {checkpoint} checkpoint ({}; evaluated {}); ignored",
        path.display(),
        fmt(saved),
        fmt(evaluated)
    );
    None
}

/// [`split_metrics`] of the val split, with the log line when there is none.
pub fn validation_metrics(run: &Path, kind: CheckpointKind) -> Option<Value> {
    let v = split_metrics(run, kind, Split::Val);
    if v.is_none() {
        let round =
            crate::artifact::read_state(run, kind).map_or("?".into(), |s| s.epoch.to_string());
        tracing::warn!(
            "validation metrics: none (no `dmnet-train eval --split val --checkpoint {}` of round {round}); \
             the sidecar's validation_metrics is null",
            kind.name()
        );
    }
    v
}

fn spec(name: &str, dtype: &str, shape: Vec<Value>, description: &str) -> TensorSpec {
    TensorSpec {
        name: name.into(),
        dtype: dtype.into(),
        shape,
        description: description.into(),
    }
}

/// Builds the sidecar for a run and checkpoint.
pub(crate) fn make_sidecar(opts: &ExportOptions, ckpt: &Path) -> Result<ModelSidecar> {
    let (model, prep, channel_names, class_names) = read_run_config(&opts.run)?;
    let bytes = std::fs::read(ckpt).map_err(|e| Error::io(ckpt, e))?;
    let (s, c, k) = (model.input_size, model.in_channels, model.num_classes);
    let mut prep = prep;
    prep.size = s;
    Ok(ModelSidecar {
        schema: crate::artifact::sidecar::SCHEMA.into(),
        schema_version: crate::artifact::sidecar::SCHEMA_VERSION,
        dmnet_version: crate::VERSION.into(),
        model_file: opts
            .out
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default(),
        opset: opts.opset,
        input: spec(
            dmnet::INPUT,
            "float32",
            vec![json!("N"), json!(c), json!(s), json!(s)],
            "preprocessed slices, NCHW, channels in channel_names order",
        ),
        outputs: vec![
            spec(
                dmnet::PROBABILITIES,
                "float32",
                vec![json!("N"), json!(k), json!(s), json!(s)],
                "(softmax(decoder 1) + softmax(decoder 2)) / 2",
            ),
            spec(
                dmnet::LABELS,
                "uint8",
                vec![json!("N"), json!(s), json!(s)],
                "argmax of probabilities over classes",
            ),
        ],
        channel_names,
        class_names,
        preprocessing: Preprocessing {
            steps: describe_steps(&prep),
            config: prep,
        },
        model,
        source: Source {
            run_dir: opts.run.clone(),
            checkpoint: opts.checkpoint,
            checkpoint_file: ckpt.to_path_buf(),
            checkpoint_sha256: hex::encode(sha2::Sha256::digest(&bytes)),
        },
        validation_metrics: validation_metrics(&opts.run, opts.checkpoint),
        test_metrics: split_metrics(&opts.run, opts.checkpoint, Split::Test),
        convention: rc_convention(&opts.run),
    })
}

/// The run's evaluation convention (the default for runs that predate it).
fn rc_convention(run: &Path) -> crate::metrics::Convention {
    crate::artifact::RunConfig::load(run)
        .map(|rc| rc.train.convention)
        .unwrap_or_default()
}

/// Exports a run: `opts.out` (ONNX) and its sidecar.
pub(crate) fn export_run(opts: &ExportOptions) -> Result<(ModelSidecar, ExportSummary)> {
    let ckpt = checkpoint_path(&opts.run, opts.checkpoint)?;
    let sidecar = make_sidecar(opts, &ckpt)?;
    let weights = super::weights::Weights::open(&ckpt)?;
    let model = dmnet::build_model(
        &sidecar.model,
        &weights,
        opts.opset,
        &sidecar.metadata_props(),
    )?;
    let initializers = model.graph.as_ref().map_or(0, |g| g.initializer.len());
    let bytes = graph::encode(&model);
    if let Some(dir) = opts.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    crate::atomic::write_bytes(&opts.out, &bytes)?;
    let side = ModelSidecar::path_for(&opts.out);
    sidecar.write(&side)?;
    tracing::info!(
        "wrote {} ({} initializers, {:.1} MB) and {}",
        opts.out.display(),
        initializers,
        bytes.len() as f64 / 1e6,
        side.display()
    );
    Ok((
        sidecar,
        ExportSummary {
            onnx: opts.out.clone(),
            sidecar: side,
            initializers,
            bytes: bytes.len(),
        },
    ))
}
