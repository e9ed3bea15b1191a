//! The Parquet slice shards, the contract between `dmnet-prep` (writer) and `dmnet-train` /
//! `dmnet-infer` (readers), and the only module that reads or writes Parquet
//! (`schemas/shard-v3.md`):
//! - [`schema`]: one row per 2-D slice, [`SliceRecord`] ↔ Arrow (tensor columns as
//!   `arrow.fixed_shape_tensor`, image as float16 or float32);
//! - [`folder`]: the folder layout (`data/part-*.parquet`, `_`-prefixed side files) and the
//!   refusals of v1, unfinished and foreign-file folders;
//! - [`reader`]: [`ShardIndex`] validates a folder once and indexes it; row groups are read
//!   from footers parsed once;
//! - [`writer`]: row groups encoded on any thread, appended to part files written under a
//!   temporary name;
//! - [`checks`]: the folder-level invariants (one orientation, one modality) every reader
//!   enforces;
//! - [`v1`]: the v1 reader behind `dmnet-prep upgrade` (v2 is decoded by [`schema`]);
//! - [`predictions`]: `predictions.parquet` of `dmnet-infer`.
pub mod checks;
pub mod folder;
pub mod predictions;
pub mod reader;
pub mod schema;
pub mod v1;
pub mod writer;

pub(crate) use reader::Part;
pub use reader::{read_shards, shard_files, PartCache, ShardIndex};
pub use schema::{ImageDtype, Role, SliceRecord, SliceShape, Split};
