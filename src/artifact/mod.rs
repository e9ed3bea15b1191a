//! What one stage writes and a later stage reads, torch-free: the run config
//! ([`run_config`], `RUN/config.json`), the run directory and its atomically committed
//! checkpoints ([`RunDir`]), the run's records and checkpoint states ([`record`]),
//! the model sidecar with the ONNX graph's I/O names ([`sidecar`]), and the model–data
//! compatibility check of `dmnet-infer` and `dmnet-train eval` ([`compat`]).
pub mod compat;
pub mod record;
pub mod run_config;
mod run_dir;
pub mod sidecar;

pub use record::CheckpointKind;
#[cfg_attr(not(feature = "torch"), allow(unused_imports))]
pub(crate) use record::{
    read_metrics, read_state, write_metrics, EpochRecord, MetricsLine, RunSummary, TrainState,
};
pub use run_config::{
    Augment, BcpConfig, CpsConfig, DataSummary, MeanTeacherConfig, Method, RunConfig, Selection,
    SemifcnConfig, SupervisedLoss, TrainConfig, UnlabeledPass,
};
#[cfg_attr(not(feature = "torch"), allow(unused_imports))]
pub(crate) use run_config::{Fraction, Schedule, SemiLoss};
pub(crate) use run_dir::RunDir;

/// The fields where two JSON configs differ, as `path: old → new` (nested objects by dotted
/// path; at most 8 listed), for messages that say which setting changed.
pub(crate) fn json_diff(old: &serde_json::Value, new: &serde_json::Value) -> Vec<String> {
    fn walk(path: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
        use serde_json::Value::Object;
        match (a, b) {
            (Object(x), Object(y)) => {
                let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                for k in keys {
                    let null = serde_json::Value::Null;
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    walk(
                        &p,
                        x.get(k).unwrap_or(&null),
                        y.get(k).unwrap_or(&null),
                        out,
                    );
                }
            }
            _ if a != b => out.push(format!("{path}: {a} → {b}")),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk("", old, new, &mut out);
    if out.len() > 8 {
        let more = out.len() - 8;
        out.truncate(8);
        out.push(format!("… {more} more"));
    }
    out
}
