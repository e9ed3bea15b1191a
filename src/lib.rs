//! dmnet: semi-supervised medical image segmentation with DMNet (Fang & Li, MICCAI 2020).
//!
//! One module per stage: [`volume`] reads NIfTI/DICOM studies, [`prep`] turns them into Parquet
//! slice shards, [`model`] and [`train`] build and train the two-decoder network with tch
//! (feature `torch`), [`export`] writes the averaged model to ONNX, and [`infer`] runs it with
//! ONNX Runtime. [`cli`] holds what the four binaries share (logging, device flags).
#![deny(missing_docs)]

pub mod cli;
pub mod error;
pub mod export;
pub mod infer;
pub mod model;
pub mod prep;
pub mod train;
pub mod volume;

#[cfg(feature = "torch")]
pub mod device;

pub use error::{Error, Result};

/// The dmnet version written into every artifact (shards, run dirs, model sidecars).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
