//! The Parquet side of writing shards: writer properties (zstd; `image` float32 with
//! BYTE_STREAM_SPLIT, without dictionary or statistics; `mask` without dictionary;
//! `source_mask` without statistics; the version and prep config in the key-value and Arrow
//! schema metadata), [`RowGroupEncoder`], which turns rows into compressed column chunks on any
//! thread (so `dmnet-prep`'s workers encode in parallel), and [`PartFile`], which appends
//! encoded row groups to a part file under its temporary name, hashing every byte it writes
//! (SHA-256, for the manifest's [`PartInfo`]), and renames it when complete.
//!
//! parquet-rs writes no page checksums; the whole-file SHA-256 in `_manifest.json` covers the
//! pages, their headers and the footer alike (`schemas/shard-v3.md`, "Integrity").
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
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::ColumnPath;
use sha2::{Digest, Sha256};
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
        // the value checks live in the manifest (written by this writer, covered by the part's
        // hash), so the image and source-mask columns need no statistics
        match path.parts().first().map(String::as_str) {
            Some("image") => {
                b = b
                    .set_column_dictionary_enabled(path.clone(), false)
                    .set_column_encoding(path.clone(), Encoding::BYTE_STREAM_SPLIT)
                    .set_column_statistics_enabled(path.clone(), EnabledStatistics::None);
            }
            Some("mask") => b = b.set_column_dictionary_enabled(path.clone(), false),
            Some("source_mask") => {
                b = b
                    .set_column_dictionary_enabled(path.clone(), false)
                    .set_column_statistics_enabled(path.clone(), EnabledStatistics::None);
            }
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
    /// The largest mask value of the group (0 when no row has a mask).
    pub mask_max: u8,
}

/// What the writer knows about a finished part (one entry of `_manifest.json`'s `parts`):
/// its size and SHA-256, and the value checks every row passed before it was encoded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PartInfo {
    /// File name under `data/`.
    pub name: String,
    /// Rows.
    pub rows: u64,
    /// File size in bytes.
    pub bytes: u64,
    /// SHA-256 of the whole file, lower-case hex (`sha256sum data/part-*.parquet`).
    pub sha256: String,
    /// Every image value is finite (and within float16 range for float16 precision).
    pub finite_images: bool,
    /// The largest `mask` / `source_mask` value in the part.
    pub mask_max: u8,
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
        let mask_max = records
            .iter()
            .flat_map(|r| r.mask.iter().chain(&r.source_mask))
            .filter_map(|m| m.iter().max())
            .max()
            .copied()
            .unwrap_or(0);
        Ok(EncodedRowGroup {
            chunks,
            rows: records.len(),
            shape: self.shape,
            mask_max,
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

/// A file writer that hashes (SHA-256) and counts every byte it passes on.
pub(crate) struct HashingWriter<W> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: std::io::Write> HashingWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hash: Sha256::new(),
            bytes: 0,
        }
    }
    /// The inner writer, the hex digest and the byte count.
    pub(crate) fn finish(self) -> (W, String, u64) {
        (self.inner, hex::encode(self.hash.finalize()), self.bytes)
    }
}

impl<W: std::io::Write> std::io::Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// SHA-256 (lower-case hex) and size of a file, read in large blocks.
pub(crate) fn file_sha256(path: &Path) -> Result<(String, u64)> {
    use std::io::Read;
    let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        bytes += n as u64;
    }
    Ok((hex::encode(h.finalize()), bytes))
}

type PartWriter = SerializedFileWriter<HashingWriter<std::io::BufWriter<File>>>;

/// A part file being written under its temporary name.
pub(crate) struct PartFile {
    writer: PartWriter,
    tmp: PathBuf,
    /// The slice shape of its rows.
    pub shape: SliceShape,
    /// Rows appended.
    pub rows: u64,
    mask_max: u8,
}

impl PartFile {
    /// Creates `tmp` for slices of `shape`.
    pub fn create(tmp: &Path, shape: &SliceShape, opts: &PartOptions) -> Result<PartFile> {
        let f = File::create(tmp).map_err(|e| Error::io(tmp, e))?;
        let sink = HashingWriter::new(std::io::BufWriter::with_capacity(1 << 20, f));
        let schema = arrow_schema(shape, Some(&opts.prep_config));
        let props = properties(shape, opts)?;
        let (writer, _) = ArrowWriter::try_new(sink, schema, Some(props))
            .and_then(|w| w.into_serialized_writer())
            .map_err(|e| Error::invalid(tmp, format!("opening Parquet writer: {e}")))?;
        Ok(PartFile {
            writer,
            tmp: tmp.to_path_buf(),
            shape: *shape,
            rows: 0,
            mask_max: 0,
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
        self.mask_max = self.mask_max.max(g.mask_max);
        Ok(())
    }

    /// Bytes written so far.
    pub(crate) fn bytes_written(&self) -> u64 {
        self.writer.bytes_written() as u64
    }

    /// Writes the footer and syncs the file; it is then complete under its temporary name.
    /// Returns the temporary path and the part's manifest entry (named `name`).
    pub fn finish(self, name: &str) -> Result<(PathBuf, PartInfo)> {
        let tmp = self.tmp;
        let (rows, mask_max) = (self.rows, self.mask_max);
        let sink = self
            .writer
            .into_inner()
            .map_err(|e| Error::invalid(&tmp, format!("closing Parquet: {e}")))?;
        let (buf, sha256, bytes) = sink.finish();
        let f = buf
            .into_inner()
            .map_err(|e| Error::io(&tmp, e.into_error()))?;
        f.sync_all().map_err(|e| Error::io(&tmp, e))?;
        let info = PartInfo {
            name: name.to_string(),
            rows,
            bytes,
            sha256,
            finite_images: true,
            mask_max,
        };
        Ok((tmp, info))
    }
}

/// Writes `records` as one complete part at `dest` (row groups of ≤ `max_rows`): written to a
/// hidden temporary name, synced, renamed. Returns its manifest entry.
pub fn write_part(
    dest: &Path,
    records: &[SliceRecord],
    shape: &SliceShape,
    max_rows: usize,
    opts: &PartOptions,
) -> Result<PartInfo> {
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
    let (_, info) = part.finish(name)?;
    std::fs::rename(&tmp, dest).map_err(|e| Error::io(dest, e))?;
    Ok(info)
}
