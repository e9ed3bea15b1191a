//! Prep: studies → preprocessed slices → versioned Parquet shards (`dmnet-prep`).
