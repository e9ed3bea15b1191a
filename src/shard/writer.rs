//! The Parquet side of writing shards: writer properties (zstd; `image` without dictionary and
//! with BYTE_STREAM_SPLIT; the version and prep config in the key-value and Arrow schema
//! metadata), [`RowGroupEncoder`], which turns rows into compressed column chunks on any thread
//! (so `dmnet-prep`'s workers encode in parallel), and [`PartFile`], which appends encoded row
//! groups to a part file under its temporary name and renames it when complete.
use super::schema::{
    arrow_schema, records_to_batch, SliceRecord, SliceShape, META_PREP_CONFIG, META_SCHEMA_VERSION,
    SCHEMA_VERSION,
};
use crate::{Error, Result};
use arrow_schema::SchemaRef;
use parquet::arrow::arrow_writer::{compute_leaves, ArrowColumnChunk, ArrowRowGroupWriterFactory};
use parquet::arrow::{ArrowSchemaConverter, ArrowWriter};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::ColumnPath;
use std::fs::File;
use std::path::{Path, PathBuf};

/// How parts are written (from the prep config).
#[derive(Debug, Clone)]
pub struct PartOptions {
    /// zstd level.
    pub zstd_level: i32,
    /// The complete prep config as JSON (recorded in every part).
    pub prep_config: String,
}

/// Values handed to a column writer at a time (parquet's default is 1024: with 50 000 values
/// per slice the per-batch overhead then dominates the encoding).
const WRITE_BATCH_VALUES: usize = 1 << 16;

/// The writer properties of a part holding slices of `shape`.
fn properties(shape: &SliceShape, opts: &PartOptions) -> Result<WriterProperties> {
    let level = ZstdLevel::try_new(opts.zstd_level).map_err(|e| Error::Config {
        path: "<prep>".into(),
        msg: format!("zstd_level {}: {e}", opts.zstd_level),
    })?;
    let schema = arrow_schema(shape, Some(&opts.prep_config));
    let parquet = ArrowSchemaConverter::new()
        .convert(&schema)
        .map_err(|e| Error::invalid("<shard schema>", e.to_string()))?;
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_key_value_metadata(Some(vec![
            KeyValue::new(META_SCHEMA_VERSION.into(), SCHEMA_VERSION.to_string()),
            KeyValue::new(META_PREP_CONFIG.into(), opts.prep_config.clone()),
        ]));
    b = b.set_write_batch_size(WRITE_BATCH_VALUES);
    for col in parquet.columns() {
        let path: &ColumnPath = col.path();
        match path.parts().first().map(String::as_str) {
            Some("image") => {
                b = b
                    .set_column_dictionary_enabled(path.clone(), false)
                    .set_column_encoding(path.clone(), Encoding::BYTE_STREAM_SPLIT);
            }
            Some("mask") => b = b.set_column_dictionary_enabled(path.clone(), false),
            _ => {}
        }
    }
    Ok(b.build())
}

/// A row group encoded and compressed, ready to be appended to a part file.
pub(crate) struct EncodedRowGroup {
    chunks: Vec<ArrowColumnChunk>,
    /// Rows in the group.
    pub rows: usize,
    /// Their slice shape.
    pub shape: SliceShape,
}

impl std::fmt::Debug for EncodedRowGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EncodedRowGroup({} rows of {})", self.rows, self.shape)
    }
}

/// Encodes rows of one shape into row groups; usable from any thread.
pub(crate) struct RowGroupEncoder {
    schema: SchemaRef,
    factory: ArrowRowGroupWriterFactory,
    shape: SliceShape,
}

impl RowGroupEncoder {
    /// An encoder for slices of `shape`.
    pub fn new(shape: &SliceShape, opts: &PartOptions) -> Result<RowGroupEncoder> {
        let schema = arrow_schema(shape, Some(&opts.prep_config));
        let props = properties(shape, opts)?;
        let (_, factory) = ArrowWriter::try_new(std::io::sink(), schema.clone(), Some(props))
            .and_then(|w| w.into_serialized_writer())
            .map_err(|e| Error::invalid("<shard writer>", e.to_string()))?;
        Ok(RowGroupEncoder {
            schema,
            factory,
            shape: *shape,
        })
    }

    /// Encodes `records` as one row group (checked: see [`records_to_batch`]).
    pub fn encode(&self, records: &[SliceRecord]) -> Result<EncodedRowGroup> {
        let batch = records_to_batch(records, &self.shape)?;
        let err = |e: parquet::errors::ParquetError| {
            Error::invalid("<shard writer>", format!("encoding a row group: {e}"))
        };
        let mut writers = self.factory.create_column_writers(0).map_err(err)?;
        // one write per slice: parquet-rs copies a float16 leaf into one buffer per write, and
        // the statistics' min/max keep that buffer alive until the part is finished (a write
        // per row group kept every image column of a part in memory)
        for row in 0..batch.num_rows() {
            let slice = batch.slice(row, 1);
            let mut next = writers.iter_mut();
            for (array, field) in slice.columns().iter().zip(self.schema.fields()) {
                for leaf in compute_leaves(field, array).map_err(err)? {
                    next.next()
                        .ok_or_else(|| {
                            Error::invalid("<shard writer>", "more leaves than column writers")
                        })?
                        .write(&leaf)
                        .map_err(err)?;
                }
            }
        }
        let chunks = writers
            .into_iter()
            .map(|w| w.close().map_err(err))
            .collect::<Result<Vec<_>>>()?;
        Ok(EncodedRowGroup {
            chunks,
            rows: records.len(),
            shape: self.shape,
        })
    }

    /// Encodes `records` as row groups of at most `max_rows` rows of balanced sizes (88 rows
    /// with 64 → 44 + 44); in parallel on the current rayon pool when `parallel`. (Inside a
    /// parallel loop over studies, a worker waiting for its groups would steal and start
    /// another study while holding this one's rows: peak memory then grows with the number of
    /// studies. `dmnet-prep` encodes in parallel only when fewer studies than threads are left.)
    pub(crate) fn encode_groups(
        &self,
        records: &[SliceRecord],
        max_rows: usize,
        parallel: bool,
    ) -> Result<Vec<EncodedRowGroup>> {
        use rayon::prelude::*;
        let groups = records.len().div_ceil(max_rows.max(1)).max(1);
        let size = records.len().div_ceil(groups).max(1);
        if parallel {
            records.par_chunks(size).map(|c| self.encode(c)).collect()
        } else {
            records.chunks(size).map(|c| self.encode(c)).collect()
        }
    }
}

/// A part file being written under its temporary name.
pub(crate) struct PartFile {
    writer: SerializedFileWriter<File>,
    tmp: PathBuf,
    /// The slice shape of its rows.
    pub shape: SliceShape,
    /// Rows appended.
    pub rows: u64,
}

impl PartFile {
    /// Creates `tmp` for slices of `shape`.
    pub fn create(tmp: &Path, shape: &SliceShape, opts: &PartOptions) -> Result<PartFile> {
        let f = File::create(tmp).map_err(|e| Error::io(tmp, e))?;
        let schema = arrow_schema(shape, Some(&opts.prep_config));
        let props = properties(shape, opts)?;
        let (writer, _) = ArrowWriter::try_new(f, schema, Some(props))
            .and_then(|w| w.into_serialized_writer())
            .map_err(|e| Error::invalid(tmp, format!("opening Parquet writer: {e}")))?;
        Ok(PartFile {
            writer,
            tmp: tmp.to_path_buf(),
            shape: *shape,
            rows: 0,
        })
    }

    /// Appends an encoded row group (of this part's shape).
    pub(crate) fn append(&mut self, g: EncodedRowGroup) -> Result<()> {
        if g.shape != self.shape {
            return Err(Error::invalid(
                &self.tmp,
                format!("slices are {}, this part holds {}", g.shape, self.shape),
            ));
        }
        let err = |e: parquet::errors::ParquetError| {
            Error::invalid(&self.tmp, format!("writing Parquet: {e}"))
        };
        let mut rg = self.writer.next_row_group().map_err(err)?;
        for c in g.chunks {
            c.append_to_row_group(&mut rg).map_err(err)?;
        }
        rg.close().map_err(err)?;
        self.rows += g.rows as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub(crate) fn bytes_written(&self) -> u64 {
        self.writer.bytes_written() as u64
    }

    /// Writes the footer and syncs the file; it is then complete under its temporary name.
    pub fn finish(self) -> Result<PathBuf> {
        let tmp = self.tmp;
        let f = self
            .writer
            .into_inner()
            .map_err(|e| Error::invalid(&tmp, format!("closing Parquet: {e}")))?;
        f.sync_all().map_err(|e| Error::io(&tmp, e))?;
        Ok(tmp)
    }
}

/// Writes `records` as one complete part at `dest` (row groups of ≤ `max_rows`): written to a
/// hidden temporary name, synced, renamed.
pub fn write_part(
    dest: &Path,
    records: &[SliceRecord],
    shape: &SliceShape,
    max_rows: usize,
    opts: &PartOptions,
) -> Result<()> {
    let name = dest
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::invalid(dest, "not a file name"))?;
    let tmp = dest.with_file_name(format!(".{name}.tmp"));
    let enc = RowGroupEncoder::new(shape, opts)?;
    let mut part = PartFile::create(&tmp, shape, opts)?;
    for g in enc.encode_groups(records, max_rows, true)? {
        part.append(g)?;
    }
    part.finish()?;
    std::fs::rename(&tmp, dest).map_err(|e| Error::io(dest, e))
}
