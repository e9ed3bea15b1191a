//! dmnet: semi-supervised medical image segmentation with DMNet (Fang & Li, MICCAI 2020).
//!
//! One module per stage: [`prep`] turns NIfTI/DICOM studies into Parquet slice shards,
//! [`train`] trains the two-decoder network with tch (feature `torch`), [`export`] writes the
//! averaged model to ONNX, and [`infer`] runs it with ONNX Runtime. The stages never import
//! each other: what they share sits below them, in the contract modules ([`shard`],
//! [`preprocess`], [`metrics`], [`artifact`], [`onnxrt`], [`model`]) and the floor ([`volume`]
//! for NIfTI/DICOM I/O, [`cli`] for logging and device flags, [`error`]). See
//! `docs/architecture.md`.
#![deny(missing_docs)]
// Items are `pub(crate)` unless a binary, test, example or fuzz target names them. Without the
// `torch` feature, the training and export code that only their (torch) CLIs reach is unused:
// dead code is checked in the default (torch) build.
#![cfg_attr(not(feature = "torch"), allow(dead_code))]

// Floor: errors, CLI plumbing, atomic file writes, volume I/O.
mod atomic;
pub mod cli;
pub mod error;
pub mod volume;
// Contracts between the stages.
pub mod artifact;
pub mod metrics;
pub mod model;
pub mod onnxrt;
pub mod preprocess;
pub mod shard;
// Stages: they import the layers above, never each other (tests/integration/layers.rs).
pub mod export;
pub mod infer;
pub mod prep;
pub mod train;
// Fuzzing entry points (cargo fuzz targets in fuzz/, their regression tests): not an API.
#[doc(hidden)]
pub mod fuzzing;

#[cfg(feature = "torch")]
pub mod device;

pub use error::{Error, Result};

/// The dmnet version written into every artifact (shards, run dirs, model sidecars).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
