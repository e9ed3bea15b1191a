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
    read_metrics, read_state, write_metrics, EpochRecord, RunSummary, TrainState,
};
pub use run_config::{DataSummary, RunConfig, TrainConfig, UnlabeledPass};
#[cfg_attr(not(feature = "torch"), allow(unused_imports))]
pub(crate) use run_config::{Fraction, Schedule, SemiLoss};
pub(crate) use run_dir::RunDir;
