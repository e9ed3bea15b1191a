//! Training (paper §3, §4.2): losses, the data loader over shards, the loop and evaluation.
//! `metrics`, `grid`, `data`, the config and record types and the curves plot are torch-free
//! (dmnet-infer reports the same metrics); everything that touches tensors needs `torch`.
pub mod data;
pub mod grid;
pub mod metrics;

mod config;
mod plot;
mod record;
pub use config::{DataSummary, RunConfig, TrainConfig};
pub use plot::draw_curves;
pub use record::{read_metrics, write_metrics, EpochRecord, RunSummary, TrainState};

#[cfg(feature = "torch")]
pub mod batch;
#[cfg(feature = "torch")]
pub mod grid_run;
#[cfg(feature = "torch")]
pub mod losses;
#[cfg(feature = "torch")]
pub mod optim;
#[cfg(feature = "torch")]
mod run;
#[cfg(feature = "torch")]
pub use run::{evaluate, evaluate_net, read_state, run, CheckpointKind, EvalReport, RunSpec};
