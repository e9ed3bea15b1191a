//! The Parquet slice shards, the contract between `dmnet-prep` (writer) and `dmnet-train` /
//! `dmnet-infer` (readers): [`schema`] maps slice records to Arrow and back
//! (`schemas/shard-v1.md`).
pub mod schema;
