//! The shard reader: [`ShardIndex::open`] validates a whole folder once (finished, every part
//! listed in the manifest, every part's bytes equal to the SHA-256 the writer recorded, schema
//! version and schema, row counts, mask values below the number of classes, finite images) and
//! indexes the small columns; [`Part`] reads one row group at a time from a footer parsed once;
//! [`ShardReader`] streams every row.
//!
//! The value checks on open come from the manifest: the writer checked every value before
//! encoding it and recorded that (`finite_images`, `mask_max`) beside the part's hash, so a
//! part whose bytes match its hash needs no decoding to be trusted. A part whose entry does not
//! prove the invariant (more classes in the mask than label names) is decoded and checked row
//! by row. Every row decoded later is checked again ([`super::schema::check_record`]).
use super::folder;
use super::schema::{
    batch_to_records, shape_of_schema, SliceRecord, SliceShape, Split, META_SCHEMA_VERSION,
    SCHEMA_VERSION, V2,
};
use super::writer::PartInfo;
use crate::{Error, Result};
use arrow_array::RecordBatch;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::ProjectionMask;
use rayon::prelude::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where one slice lives: file, row group, row within the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SliceRef {
    /// Index into the folder's sorted part files.
    pub file: usize,
    /// Row group within the file.
    pub row_group: usize,
    /// Row within the row group.
    pub row: usize,
}

/// One part file with its footer parsed once.
#[derive(Debug, Clone)]
pub struct Part {
    /// The file.
    pub path: PathBuf,
    meta: ArrowReaderMetadata,
    /// The slice shape of its rows.
    pub shape: SliceShape,
    /// Its schema version (3; 2 only when opened for the upgrade).
    version: &'static str,
}

fn parquet_err(path: &Path) -> impl Fn(parquet::errors::ParquetError) -> Error + '_ {
    move |e| Error::invalid(path, format!("reading Parquet: {e}"))
}

impl Part {
    /// Opens a part: parses the footer, checks the schema version (3) and the schema.
    pub fn open(path: &Path) -> Result<Part> {
        Self::open_versions(path, &[SCHEMA_VERSION])
    }

    /// Opens a part of schema v3 or v2 (`dmnet-prep upgrade`'s reader).
    pub(crate) fn open_for_upgrade(path: &Path) -> Result<Part> {
        Self::open_versions(path, &[SCHEMA_VERSION, V2])
    }

    fn open_versions(path: &Path, accept: &[&'static str]) -> Result<Part> {
        let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let meta = ArrowReaderMetadata::load(&f, ArrowReaderOptions::new())
            .map_err(|e| Error::invalid(path, format!("not a readable Parquet file: {e}")))?;
        let kv = key_values(&meta);
        let found = kv
            .get(META_SCHEMA_VERSION)
            .or_else(|| meta.schema().metadata().get(META_SCHEMA_VERSION))
            .cloned();
        let Some(version) = accept
            .iter()
            .copied()
            .find(|v| found.as_deref() == Some(*v))
        else {
            return Err(version_refusal(path, found.as_deref()));
        };
        let shape = shape_of_schema(meta.schema(), path, version)?;
        Ok(Part {
            path: path.to_path_buf(),
            meta,
            shape,
            version,
        })
    }

    /// The file's `dmnet.*` key-value metadata.
    pub(crate) fn key_values(&self) -> HashMap<String, String> {
        key_values(&self.meta)
    }

    /// Number of row groups.
    pub fn num_row_groups(&self) -> usize {
        self.meta.metadata().num_row_groups()
    }

    /// Rows in the file.
    pub fn num_rows(&self) -> u64 {
        self.meta.metadata().file_metadata().num_rows().max(0) as u64
    }

    fn builder(&self, rg: usize) -> Result<ParquetRecordBatchReaderBuilder<std::fs::File>> {
        let Some(group) = self.meta.metadata().row_groups().get(rg) else {
            return Err(Error::invalid(&self.path, format!("no row group {rg}")));
        };
        let rows = group.num_rows().max(1) as usize;
        let f = std::fs::File::open(&self.path).map_err(|e| Error::io(&self.path, e))?;
        Ok(
            ParquetRecordBatchReaderBuilder::new_with_metadata(f, self.meta.clone())
                .with_row_groups(vec![rg])
                .with_batch_size(rows),
        )
    }

    /// Reads the named columns of row group `rg`.
    fn read_columns(&self, rg: usize, names: &[&str]) -> Result<Vec<RecordBatch>> {
        let b = self.builder(rg)?;
        let roots = names
            .iter()
            .map(|n| {
                b.schema()
                    .index_of(n)
                    .map_err(|_| Error::invalid(&self.path, format!("no column `{n}`")))
            })
            .collect::<Result<Vec<_>>>()?;
        let mask = ProjectionMask::roots(b.parquet_schema(), roots);
        self.collect(b.with_projection(mask))
    }

    fn collect(
        &self,
        b: ParquetRecordBatchReaderBuilder<std::fs::File>,
    ) -> Result<Vec<RecordBatch>> {
        b.build()
            .map_err(parquet_err(&self.path))?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::invalid(&self.path, format!("reading Parquet: {e}")))
    }

    /// Reads row group `rg` as records, each checked.
    pub(crate) fn read_row_group(&self, rg: usize) -> Result<Vec<SliceRecord>> {
        let mut out = Vec::new();
        for b in self.collect(self.builder(rg)?)? {
            out.extend(batch_to_records(&b, &self.path, self.version)?);
        }
        Ok(out)
    }

    /// Reads row group `rg` as records without the per-row value checks (for `inspect`, which
    /// reports every bad row itself).
    pub(crate) fn read_row_group_unchecked(&self, rg: usize) -> Result<Vec<SliceRecord>> {
        let mut out = Vec::new();
        for b in self.collect(self.builder(rg)?)? {
            out.extend(super::schema::batch_to_records_unchecked(
                &b,
                &self.path,
                self.version,
            )?);
        }
        Ok(out)
    }

    /// The index rows of every row group; each group's values are decoded and checked unless
    /// the manifest's entry `info` proves them (finite images, mask values < classes).
    fn index(
        &self,
        file: usize,
        info: &PartInfo,
        mixtures: &mut super::checks::Mixtures,
    ) -> Result<Vec<IndexRow>> {
        let mut out = Vec::new();
        for rg in 0..self.num_row_groups() {
            let mut rows = Vec::new();
            for b in self.read_columns(
                rg,
                &[
                    "patient_key",
                    "source_path",
                    "slice_index",
                    "slice_axis",
                    "num_slices",
                    "split",
                    "labeled",
                    "channel_names",
                    "label_names",
                    "affine",
                ],
            )? {
                let first = rows.len();
                rows.extend(index_rows(&b, file, rg, first, &self.path, mixtures)?);
            }
            let classes = rows.iter().map(|r| r.classes).min().unwrap_or(0);
            if !(info.finite_images && (info.mask_max as usize) < classes.max(1)) {
                self.read_row_group(rg)?; // decodes and checks every row
            }
            out.extend(rows);
        }
        Ok(out)
    }
}

/// The refusal of a part whose schema version this reader does not read.
fn version_refusal(path: &Path, found: Option<&str>) -> Error {
    let parent = path.parent().unwrap_or(Path::new("."));
    let dir = match parent.file_name().and_then(|n| n.to_str()) {
        Some(folder::DATA_DIR) => parent.parent().unwrap_or(parent),
        _ => parent,
    };
    let msg = match found {
        Some(v @ ("1" | V2)) => format!(
            "shard schema version {v}, this dmnet reads version {SCHEMA_VERSION}: upgrade the folder with `{}`",
            folder::upgrade_command(dir)
        ),
        Some(v) => format!(
            "shard schema version {v}, this dmnet reads version {SCHEMA_VERSION} (written by a newer dmnet?)"
        ),
        None => format!(
            "no shard schema version in its metadata: not a dmnet shard part (this dmnet reads version {SCHEMA_VERSION})"
        ),
    };
    Error::invalid(path, msg)
}

fn key_values(meta: &ArrowReaderMetadata) -> HashMap<String, String> {
    meta.metadata()
        .file_metadata()
        .key_value_metadata()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|kv| kv.value.map(|v| (kv.key, v)))
        .filter(|(k, _)| k.starts_with("dmnet."))
        .collect()
}

/// One row of the index (small columns only).
#[derive(Debug, Clone)]
pub struct IndexRow {
    /// Where the slice lives.
    pub at: SliceRef,
    /// Patient key.
    pub patient_key: String,
    /// The study (source) the slice comes from.
    pub source_path: String,
    /// Slice index in the source volume.
    pub slice_index: i32,
    /// Slices of the source volume along the slicing axis.
    pub num_slices: i32,
    /// The patient's split.
    pub split: Split,
    /// Whether the row has a mask for supervision.
    pub labeled: bool,
    /// Number of label names (classes).
    pub classes: usize,
}

fn index_rows(
    b: &RecordBatch,
    file: usize,
    rg: usize,
    first: usize,
    path: &Path,
    mixtures: &mut super::checks::Mixtures,
) -> Result<Vec<IndexRow>> {
    let c = super::schema::Columns {
        batch: b,
        origin: path,
        version: super::schema::SCHEMA_VERSION,
    };
    let (channels, axes, affines) = (
        c.str_lists("channel_names")?,
        c.i32s("slice_axis")?,
        c.affines()?,
    );
    for ((ch, axis), affine) in channels.iter().zip(&axes).zip(&affines) {
        mixtures.add(ch, affine, *axis);
    }
    let (keys, idx) = (c.strs("patient_key")?, c.i32s("slice_index")?);
    let (mut sources, num) = (c.strs("source_path")?, c.i32s("num_slices")?);
    let (split, labeled) = (c.values::<Split>("split")?, c.bools("labeled")?);
    let classes = c.list_lens("label_names")?;
    Ok(keys
        .into_iter()
        .enumerate()
        .map(|(i, patient_key)| IndexRow {
            at: SliceRef {
                file,
                row_group: rg,
                row: first + i,
            },
            patient_key,
            source_path: std::mem::take(&mut sources[i]),
            slice_index: idx[i],
            num_slices: num[i],
            split: split[i],
            labeled: labeled[i],
            classes: classes[i],
        })
        .collect())
}

/// A validated shard folder: its parts (footers parsed once), slice shape and index.
#[derive(Debug, Clone)]
pub struct ShardIndex {
    /// The folder.
    pub dir: PathBuf,
    /// The part files in name order.
    pub parts: Arc<Vec<Part>>,
    /// The slice shape every row shares.
    pub shape: SliceShape,
    /// Every row, in file and row order.
    pub rows: Vec<IndexRow>,
    /// SHA-256 over the parts' names and hashes: changes whenever any part does.
    pub fingerprint: String,
    /// The training patients in the folder's order (`_splits.json`'s `train`; empty without
    /// one): the order in which a labeled-patient budget takes them.
    pub train_order: Vec<String>,
}

impl ShardIndex {
    /// Opens and validates a shard folder (see the module docs); the first problem is the
    /// error, naming the file.
    pub fn open(dir: &Path) -> Result<ShardIndex> {
        let manifest = folder::finished_manifest(dir)?;
        let files = folder::part_files(dir)?;
        folder::check_parts_listed(dir, &manifest, &files)?;
        let infos = files
            .iter()
            .map(|f| {
                let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                folder::part_entry(dir, &manifest, name)
            })
            .collect::<Result<Vec<_>>>()?;
        // every byte of every part against its recorded hash, before any row is used
        files
            .par_iter()
            .zip(&infos)
            .map(|(f, info)| folder::verify_part(f, info))
            .collect::<Result<Vec<()>>>()?;
        let mut parts = Vec::with_capacity(files.len());
        let mut rows = Vec::new();
        let mut mixtures = super::checks::Mixtures::default();
        for (fi, (f, info)) in files.iter().zip(&infos).enumerate() {
            let part = Part::open(f)?;
            if let Some(first) = parts.first().map(|p: &Part| p.shape) {
                if part.shape != first {
                    return Err(Error::invalid(
                        f,
                        format!(
                            "slices are {}, the folder's first part holds {first}",
                            part.shape
                        ),
                    ));
                }
            }
            if part.num_rows() != info.rows {
                return Err(Error::invalid(
                    f,
                    format!(
                        "{} rows, {} lists {}: re-ingest into a new folder",
                        part.num_rows(),
                        folder::MANIFEST,
                        info.rows
                    ),
                ));
            }
            rows.extend(part.index(fi, info, &mut mixtures)?);
            parts.push(part);
        }
        if let Some(p) = mixtures
            .problems(&manifest.allowed_mixtures())
            .into_iter()
            .next()
        {
            return Err(Error::invalid(
                dir,
                format!("broken shard folder (`dmnet-prep inspect` reports it too): {p}"),
            ));
        }
        let shape = parts
            .first()
            .map(|p| p.shape)
            .ok_or_else(|| Error::invalid(dir, "the shards hold no part file"))?;
        let fingerprint = {
            use sha2::Digest;
            let mut h = sha2::Sha256::new();
            for info in &infos {
                h.update(info.name.as_bytes());
                h.update(b"\0");
                h.update(info.sha256.as_bytes());
                h.update(b"\n");
            }
            hex::encode(h.finalize())
        };
        Ok(ShardIndex {
            dir: dir.to_path_buf(),
            parts: Arc::new(parts),
            shape,
            rows,
            fingerprint,
            train_order: folder::train_order(dir),
        })
    }

    /// The part file paths, in index order.
    pub fn files(&self) -> Arc<Vec<PathBuf>> {
        Arc::new(self.parts.iter().map(|p| p.path.clone()).collect())
    }

    /// The prep config JSON recorded in the first part.
    pub fn prep_config(&self) -> Option<String> {
        self.parts
            .first()
            .and_then(|p| p.key_values().remove(super::schema::META_PREP_CONFIG))
    }

    /// Streams every row group in file and row order.
    pub fn reader(&self) -> ShardReader {
        let groups = self
            .parts
            .iter()
            .enumerate()
            .flat_map(|(fi, p)| (0..p.num_row_groups()).map(move |rg| (fi, rg)))
            .collect();
        ShardReader {
            parts: self.parts.clone(),
            groups,
        }
    }
}

/// Reads row groups from part files, opening each file's footer once (the training streams).
#[derive(Debug)]
pub struct PartCache {
    files: Arc<Vec<PathBuf>>,
    open: Vec<Option<Part>>,
}

impl PartCache {
    /// A cache over `files` (nothing opened yet).
    pub fn new(files: Arc<Vec<PathBuf>>) -> PartCache {
        let open = vec![None; files.len()];
        PartCache { files, open }
    }

    /// Row group `rg` of file `file`, checked.
    pub fn read(&mut self, file: usize, rg: usize) -> Result<Vec<SliceRecord>> {
        let path = self
            .files
            .get(file)
            .ok_or_else(|| Error::invalid("<shards>", format!("no part file #{file}")))?;
        let slot = &mut self.open[file];
        if slot.is_none() {
            *slot = Some(Part::open(path)?);
        }
        match slot {
            Some(p) => p.read_row_group(rg),
            None => Err(Error::invalid(path, "part not open")),
        }
    }
}

/// Streams the slices of a shard folder one row group at a time, in file and row order. A row
/// group that fails to read is reported once and the stream moves on.
#[derive(Debug)]
pub struct ShardReader {
    parts: Arc<Vec<Part>>,
    groups: std::collections::VecDeque<(usize, usize)>,
}

impl Iterator for ShardReader {
    type Item = Result<Vec<SliceRecord>>;
    fn next(&mut self) -> Option<Self::Item> {
        let (fi, rg) = self.groups.pop_front()?;
        Some(match self.parts.get(fi) {
            Some(p) => p.read_row_group(rg),
            None => Err(Error::invalid("<shards>", format!("no part file #{fi}"))),
        })
    }
}

/// Validates a shard folder ([`ShardIndex::open`]) and streams its rows.
pub fn read_shards(dir: &Path) -> Result<ShardReader> {
    Ok(ShardIndex::open(dir)?.reader())
}

/// The part files of a shard folder, sorted (v2 `data/part-*.parquet`, or a v1 folder's parts so
/// that readers can refuse it with the upgrade command).
pub fn shard_files(dir: &Path) -> Result<Vec<PathBuf>> {
    folder::part_files(dir)
}

/// The `dmnet.*` key-value metadata of one part file (schema version, prep config JSON, …).
pub(crate) fn file_metadata(file: &Path) -> Result<HashMap<String, String>> {
    Ok(Part::open(file)?.key_values())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::schema::{ImageDtype, Role, SliceShape, Split};
    use crate::shard::writer::{write_part, PartOptions};

    fn record(i: i32) -> SliceRecord {
        SliceRecord {
            patient_key: format!("p{i}"),
            source_path: "a.nii.gz".into(),
            spacing_known: true,
            slice_index: i,
            split: Split::Train,
            labeled: i % 2 == 0,
            role: Role::of(i % 2 == 0),
            height: 2,
            width: 3,
            channel_names: vec!["mri".into()],
            image: (0..6).map(|v| v as f32 - i as f32).collect(),
            mask: (i % 2 == 0).then(|| vec![0, 1, 1, 0, 0, 1]),
            label_names: vec!["background".into(), "fg".into()],
            ..Default::default()
        }
    }

    #[test]
    fn parts_carry_their_hash_and_value_checks() {
        let t = tempfile::tempdir().unwrap();
        for dtype in [ImageDtype::Float16, ImageDtype::Float32] {
            let shape = SliceShape {
                channels: 1,
                height: 2,
                width: 3,
                dtype,
            };
            let p = t.path().join("part-00000.parquet");
            let rows: Vec<_> = (0..5).map(record).collect();
            let opts = PartOptions {
                zstd_level: 3,
                prep_config: "{}".into(),
            };
            let info = write_part(&p, &rows, &shape, 2, &opts).unwrap();
            let (sha, bytes) = crate::shard::writer::file_sha256(&p).unwrap();
            assert_eq!((info.sha256.as_str(), info.bytes), (sha.as_str(), bytes));
            assert_eq!((info.rows, info.mask_max, info.finite_images), (5, 1, true));
            folder::verify_part(&p, &info).unwrap();
            let part = Part::open(&p).unwrap();
            assert_eq!(part.shape, shape);
            assert_eq!(part.num_row_groups(), 3, "5 rows in balanced groups of ≤ 2");
            let back: Vec<_> = (0..3)
                .flat_map(|rg| part.read_row_group(rg).unwrap())
                .collect();
            assert_eq!(back, rows);
            let mut bytes = std::fs::read(&p).unwrap();
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0x40;
            std::fs::write(&p, bytes).unwrap();
            let e = folder::verify_part(&p, &info).unwrap_err().to_string();
            assert!(
                e.contains("part-00000.parquet") && e.contains("SHA-256"),
                "{e}"
            );
        }
    }
}
