//! Prep: studies → preprocessed slices → versioned Parquet shards (`dmnet-prep`).
pub mod preprocess;
pub mod schema;
pub mod synth;
mod synth_dicom;
