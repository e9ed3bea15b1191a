//! Opening an exported model for inference and deciding which description of it to trust.
//! The sidecar `model.json` and the ONNX file's own `metadata_props` (`dmnet.<field>`, written
//! by the same export) must agree on everything inference depends on: preprocessing, channel
//! and class names, network config, tensor specs. When they differ the sidecar was edited or
//! belongs to another model, and running would silently change the masks; that is an error
//! naming both files and the fields. `--use-model-metadata` makes the model's own metadata win
//! (the metadata travels inside the weights file, so it cannot drift from them). The graph's
//! `probabilities` output must have the sidecar's K classes.
use crate::artifact::sidecar::{ModelSidecar, PROBABILITIES};
use crate::cli::DeviceChoice;
use crate::onnxrt::session::OnnxModel;
use crate::{Error, Result};
use std::path::Path;

/// An open model and the description inference follows.
pub struct LoadedModel {
    /// The ONNX Runtime session.
    pub onnx: OnnxModel,
    /// The preprocessing / names / config used.
    pub sidecar: ModelSidecar,
}

/// Opens `model` (see the module docs).
pub fn open(
    model: &Path,
    device: DeviceChoice,
    ort_lib: Option<&Path>,
    use_model_metadata: bool,
) -> Result<LoadedModel> {
    let sidecar = ModelSidecar::read_for(model)?;
    let onnx = OnnxModel::open(model, device, ort_lib)?;
    let sidecar = reconcile(sidecar, &onnx, model, use_model_metadata)?;
    let (c, s, k) = (
        sidecar.model.in_channels,
        sidecar.size(),
        sidecar.model.num_classes,
    );
    onnx.check_input(&[1, c, s, s], &ModelSidecar::path_for(model))?;
    let out = onnx.output_shape(PROBABILITIES).ok_or_else(|| {
        Error::invalid(model, format!("the model has no `{PROBABILITIES}` output"))
    })?;
    if let Some(Some(graph_k)) = out.get(1) {
        if *graph_k != k {
            return Err(Error::invalid(
                ModelSidecar::path_for(model),
                format!(
                    "the sidecar says {k} classes ({}), the model {} outputs {graph_k}",
                    sidecar.class_names.join(", "),
                    model.display()
                ),
            ));
        }
    }
    Ok(LoadedModel { onnx, sidecar })
}

/// The sidecar checked against the model's embedded metadata (see the module docs).
fn reconcile(
    sidecar: ModelSidecar,
    onnx: &OnnxModel,
    model: &Path,
    use_model_metadata: bool,
) -> Result<ModelSidecar> {
    let side_path = ModelSidecar::path_for(model);
    let Some(embedded) = ModelSidecar::from_metadata_props(&onnx.metadata, model)? else {
        tracing::warn!(
            "{}: no dmnet metadata_props in the model; following {} alone",
            model.display(),
            side_path.display()
        );
        return Ok(sidecar);
    };
    let differ = sidecar.differing_fields(&embedded);
    if differ.is_empty() {
        return Ok(sidecar);
    }
    let fields = differ.join(", ");
    if use_model_metadata {
        tracing::warn!(
            "{} disagrees with the metadata of {} on {fields}; --use-model-metadata: following the model",
            side_path.display(),
            model.display()
        );
        return Ok(embedded);
    }
    let (a, b) = (
        serde_json::to_value(&sidecar).unwrap_or_default(),
        serde_json::to_value(&embedded).unwrap_or_default(),
    );
    let mut diffs = Vec::new();
    for f in &differ {
        json_diff(a.get(*f), b.get(*f), f, &mut diffs);
    }
    diffs.truncate(4);
    let detail = diffs.join("; ");
    Err(Error::invalid(
        &side_path,
        format!(
            "disagrees with the dmnet metadata inside {} on {fields} ({detail}). The sidecar was \
             edited or belongs to another model; re-export, or pass --use-model-metadata to \
             follow the model's own metadata",
            model.display()
        ),
    ))
}

/// The leaves where `a` and `b` differ, as `path: sidecar A vs model B`.
fn json_diff(
    a: Option<&serde_json::Value>,
    b: Option<&serde_json::Value>,
    path: &str,
    out: &mut Vec<String>,
) {
    use serde_json::Value;
    match (a, b) {
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                json_diff(x.get(k), y.get(k), &format!("{path}.{k}"), out);
            }
        }
        (x, y) if x != y => {
            let show = |v: Option<&Value>| v.map_or("absent".to_string(), |v| v.to_string());
            out.push(format!("{path}: sidecar {} vs model {}", show(x), show(y)));
        }
        _ => {}
    }
}
