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

pub use record::{
    read_metrics, read_state, write_metrics, CheckpointKind, EpochRecord, RunSummary, TrainState,
};
pub use run_config::{
    DataSummary, Fraction, LossConfig, RunConfig, Schedule, SemiLoss, TrainConfig, UnlabeledPass,
};
pub use run_dir::{CheckpointFiles, RunDir};
