//! Prep: studies → preprocessed slices → versioned Parquet shards (`dmnet-prep`).
//!
//! [`layout`] lists studies, [`split`] assigns patients, [`study`] reads and slices one study
//! with [`preprocess`] (shared with inference), [`writer`] streams rows into part files,
//! [`ingest`] runs it all in parallel, [`inspect`] checks a shard folder.
pub mod config;
pub mod ingest;
pub mod inspect;
pub mod layout;
pub mod preprocess;
pub mod schema;
pub mod split;
pub mod study;
pub mod synth;
mod synth_dicom;
pub mod writer;

pub use config::{IngestOptions, Layout, PrepConfig, Protocol};
pub use ingest::{ingest, merge, Manifest};
pub use inspect::{inspect, InspectReport};
