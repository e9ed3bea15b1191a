//! Prep: studies → preprocessed slices → versioned Parquet shards (`dmnet-prep`).
pub mod schema;
