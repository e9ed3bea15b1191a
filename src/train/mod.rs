//! Training (paper §3, §4.2): losses, the data loader over shards, the loop and evaluation.
pub mod grid;
