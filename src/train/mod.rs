//! Training (paper §3, §4.2): losses, the data loader over shards, the loop and evaluation.
//! `metrics`, `grid` and the run-config types are torch-free (dmnet-infer reports the same
//! metrics); everything that touches tensors needs feature `torch`.
pub mod grid;
pub mod metrics;

#[cfg(feature = "torch")]
pub mod losses;
