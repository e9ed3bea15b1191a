//! Training (paper §3, §4.2): losses, the data loader over shards, the methods (DMNet and the
//! comparators, one interface: [`methods`]), the loop, the evaluation and the experiment grid. `grid`, `data` and the curves plot are torch-free;
//! everything that touches tensors needs `torch`. The run config and records a run writes live
//! in [`crate::artifact`], the metrics in [`crate::metrics`] (dmnet-infer reports the same ones).
pub mod data;
pub mod grid;

mod plot;
#[cfg(feature = "torch")]
pub(crate) use plot::draw_curves;

#[cfg(feature = "torch")]
pub mod batch;
#[cfg(feature = "torch")]
pub mod cli;
#[cfg(feature = "torch")]
mod eval;
#[cfg(feature = "torch")]
pub mod grid_run;
#[cfg(feature = "torch")]
pub mod losses;
#[cfg(feature = "torch")]
mod methods;
#[cfg(feature = "torch")]
pub mod optim;
#[cfg(feature = "torch")]
mod pieces;
#[cfg(feature = "torch")]
mod run;
#[cfg(feature = "torch")]
pub use eval::evaluate;
#[cfg(feature = "torch")]
pub use run::{run, Extend, RunSpec};
