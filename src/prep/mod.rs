//! Prep: studies → preprocessed slices → versioned Parquet shards (`dmnet-prep`).
//!
//! [`layout`] lists studies, [`split`] assigns patients, [`study`] reads and slices one study
//! with [`crate::preprocess`] (shared with inference), [`writer`] streams rows into part files
//! of the [`crate::shard`] format,
//! [`ingest`](mod@ingest) runs it all in parallel, [`inspect`](mod@inspect) checks a shard folder,
//! [`upgrade`](mod@upgrade) rewrites a schema-v1 folder as v2.
//!
//! # Reuse by inference (torch-free)
//! 1. [`crate::volume::read_volume`] (NIfTI file or one-series DICOM folder) or
//!    [`crate::volume::read_nifti`] per channel;
//! 2. [`crate::preprocess::prepare_volume`] with the [`crate::preprocess::PreprocessConfig`] saved in the
//!    shards / model sidecar (`prep_config.preprocess`): grid checks, normalisation, slicing axis;
//! 3. per slice `k`: [`crate::preprocess::PreparedVolume::slice_image`] (C×S×S input);
//! 4. per prediction: [`crate::preprocess::probabilities_to_mask`] (bilinear back to the original
//!    in-plane size, argmax) and [`crate::preprocess::insert_slice`] into a `dims`-sized `u8` mask;
//! 5. [`crate::volume::write_nifti_mask`] with the input volume as reference.
pub mod cli;
pub mod config;
pub mod ingest;
pub mod inspect;
pub mod layout;
pub mod split;
pub mod study;
pub mod synth;
mod synth_dicom;
pub mod upgrade;
pub mod writer;

pub(crate) use config::{IngestOptions, Layout, PrepConfig, Protocol};
pub use ingest::{ingest, merge, Manifest};
pub use inspect::inspect;
pub use inspect::InspectReport;
