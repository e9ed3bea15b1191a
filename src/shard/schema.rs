//! The shard format, version 1: one Parquet row per 2-D slice (see `schemas/shard-v1.md` and
//! `docs/contracts.md`). This module is the one place that maps [`SliceRecord`] to Arrow and
//! back; the writer (`dmnet-prep`), the training loader and `dmnet-infer` all go through it.
use crate::{Error, Result};
use arrow_array::builder::{
    BooleanBuilder, Float32Builder, Float64Builder, Int32Builder, ListBuilder,
};
use arrow_array::builder::{StringBuilder, UInt8Builder};
use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type, Int32Type, UInt8Type};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The shard schema version written to `dmnet.schema_version`.
pub const SCHEMA_VERSION: &str = "1";
/// Parquet key-value metadata key holding [`SCHEMA_VERSION`].
pub const META_SCHEMA_VERSION: &str = "dmnet.schema_version";
/// Parquet key-value metadata key holding the complete prep config as JSON.
pub const META_PREP_CONFIG: &str = "dmnet.prep_config";

/// One slice: a row of a shard.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SliceRecord {
    /// Pseudonymous patient key (salted hash unless ids were kept on purpose).
    pub patient_key: String,
    /// First image file (or DICOM series folder) relative to the ingest input.
    pub source_path: String,
    /// Index along the slicing axis in the source volume.
    pub slice_index: i32,
    /// Voxel axis (0, 1, 2) sliced through.
    pub slice_axis: i32,
    /// World position (mm) of the slice centre along the slice normal.
    pub slice_position: f64,
    /// Source extent along `slice_axis`.
    pub num_slices: i32,
    /// `train`, `val` or `test`.
    pub split: String,
    /// Whether `mask` is present and may be used for supervision.
    pub labeled: bool,
    /// `labeled` or `unlabeled`.
    pub role: String,
    /// Slice height after resize.
    pub height: i32,
    /// Slice width after resize.
    pub width: i32,
    /// In-plane height before resize (source voxels along the first in-plane axis).
    pub orig_height: i32,
    /// In-plane width before resize.
    pub orig_width: i32,
    /// Channel names, in the order of `image`.
    pub channel_names: Vec<String>,
    /// C×H×W, row-major, preprocessed.
    pub image: Vec<f32>,
    /// H×W class indices; `None` when unlabeled.
    pub mask: Option<Vec<u8>>,
    /// Class names; index = mask value.
    pub label_names: Vec<String>,
    /// Source voxel spacing (mm) along voxel axes 0, 1, 2.
    pub spacing: [f64; 3],
    /// mm per pixel of the resized slice (rows, cols).
    pub pixel_spacing: [f64; 2],
    /// Source voxel→RAS 4×4, row-major.
    pub affine: [f64; 16],
    /// Source voxel dims.
    pub volume_shape: [i32; 3],
}

fn list_of(item: DataType, nullable: bool) -> DataType {
    DataType::List(Arc::new(Field::new("item", item, nullable)))
}

/// The Arrow schema of a version-1 shard.
pub fn arrow_schema() -> SchemaRef {
    let utf8_list = list_of(DataType::Utf8, true);
    Arc::new(Schema::new(vec![
        Field::new("patient_key", DataType::Utf8, false),
        Field::new("source_path", DataType::Utf8, false),
        Field::new("slice_index", DataType::Int32, false),
        Field::new("slice_axis", DataType::Int32, false),
        Field::new("slice_position", DataType::Float64, false),
        Field::new("num_slices", DataType::Int32, false),
        Field::new("split", DataType::Utf8, false),
        Field::new("labeled", DataType::Boolean, false),
        Field::new("role", DataType::Utf8, false),
        Field::new("height", DataType::Int32, false),
        Field::new("width", DataType::Int32, false),
        Field::new("orig_height", DataType::Int32, false),
        Field::new("orig_width", DataType::Int32, false),
        Field::new("channel_names", utf8_list.clone(), false),
        Field::new("image", list_of(DataType::Float32, true), false),
        Field::new("mask", list_of(DataType::UInt8, true), true),
        Field::new("label_names", utf8_list, false),
        Field::new("spacing", list_of(DataType::Float64, true), false),
        Field::new("pixel_spacing", list_of(DataType::Float64, true), false),
        Field::new("affine", list_of(DataType::Float64, true), false),
        Field::new("volume_shape", list_of(DataType::Int32, true), false),
    ]))
}

/// Arrow builders for every column, in schema order.
struct Builders {
    strings: [StringBuilder; 4],
    ints: [Int32Builder; 7],
    position: Float64Builder,
    labeled: BooleanBuilder,
    channel_names: ListBuilder<StringBuilder>,
    image: ListBuilder<Float32Builder>,
    mask: ListBuilder<UInt8Builder>,
    label_names: ListBuilder<StringBuilder>,
    f64_lists: [ListBuilder<Float64Builder>; 3],
    volume_shape: ListBuilder<Int32Builder>,
}

impl Builders {
    fn new() -> Self {
        Builders {
            strings: std::array::from_fn(|_| StringBuilder::new()),
            ints: std::array::from_fn(|_| Int32Builder::new()),
            position: Float64Builder::new(),
            labeled: BooleanBuilder::new(),
            channel_names: ListBuilder::new(StringBuilder::new()),
            image: ListBuilder::new(Float32Builder::new()),
            mask: ListBuilder::new(UInt8Builder::new()),
            label_names: ListBuilder::new(StringBuilder::new()),
            f64_lists: std::array::from_fn(|_| ListBuilder::new(Float64Builder::new())),
            volume_shape: ListBuilder::new(Int32Builder::new()),
        }
    }

    fn push(&mut self, r: &SliceRecord) {
        let [key, source, split, role] = &mut self.strings;
        key.append_value(&r.patient_key);
        source.append_value(&r.source_path);
        split.append_value(&r.split);
        role.append_value(&r.role);
        let ints = [
            r.slice_index,
            r.slice_axis,
            r.num_slices,
            r.height,
            r.width,
            r.orig_height,
            r.orig_width,
        ];
        for (b, v) in self.ints.iter_mut().zip(ints) {
            b.append_value(v);
        }
        self.position.append_value(r.slice_position);
        self.labeled.append_value(r.labeled);
        self.channel_names
            .append_value(r.channel_names.iter().map(Some));
        self.image.values().append_slice(&r.image);
        self.image.append(true);
        match &r.mask {
            Some(m) => {
                self.mask.values().append_slice(m);
                self.mask.append(true);
            }
            None => self.mask.append_null(),
        }
        self.label_names
            .append_value(r.label_names.iter().map(Some));
        let lists: [&[f64]; 3] = [&r.spacing, &r.pixel_spacing, &r.affine];
        for (b, v) in self.f64_lists.iter_mut().zip(lists) {
            b.values().append_slice(v);
            b.append(true);
        }
        self.volume_shape.values().append_slice(&r.volume_shape);
        self.volume_shape.append(true);
    }

    fn finish(mut self) -> Vec<ArrayRef> {
        let [key, source, split, role] = &mut self.strings;
        let [index, axis, num, h, w, oh, ow] = &mut self.ints;
        let [spacing, pixel_spacing, affine] = &mut self.f64_lists;
        vec![
            Arc::new(key.finish()),
            Arc::new(source.finish()),
            Arc::new(index.finish()),
            Arc::new(axis.finish()),
            Arc::new(self.position.finish()),
            Arc::new(num.finish()),
            Arc::new(split.finish()),
            Arc::new(self.labeled.finish()),
            Arc::new(role.finish()),
            Arc::new(h.finish()),
            Arc::new(w.finish()),
            Arc::new(oh.finish()),
            Arc::new(ow.finish()),
            Arc::new(self.channel_names.finish()),
            Arc::new(self.image.finish()),
            Arc::new(self.mask.finish()),
            Arc::new(self.label_names.finish()),
            Arc::new(spacing.finish()),
            Arc::new(pixel_spacing.finish()),
            Arc::new(affine.finish()),
            Arc::new(self.volume_shape.finish()),
        ]
    }
}

/// Converts slices to one Arrow record batch of [`arrow_schema`].
pub fn records_to_batch(records: &[SliceRecord]) -> Result<RecordBatch> {
    let mut b = Builders::new();
    for r in records {
        b.push(r);
    }
    RecordBatch::try_new(arrow_schema(), b.finish())
        .map_err(|e| Error::invalid("<records>", format!("building a shard record batch: {e}")))
}

/// Typed access to a record batch's columns, with errors naming the file and column.
struct Columns<'a> {
    batch: &'a RecordBatch,
    origin: &'a Path,
}

impl<'a> Columns<'a> {
    fn col(&self, name: &str) -> Result<&'a ArrayRef> {
        self.batch.column_by_name(name).ok_or_else(|| {
            Error::invalid(
                self.origin,
                format!("shard has no column `{name}` (schema v{SCHEMA_VERSION})"),
            )
        })
    }
    fn wrong(&self, name: &str) -> Error {
        let found = self
            .batch
            .column_by_name(name)
            .map(|c| c.data_type().to_string())
            .unwrap_or_default();
        Error::invalid(
            self.origin,
            format!("shard column `{name}` has type {found}, not the v{SCHEMA_VERSION} type"),
        )
    }
    fn strs(&self, name: &str) -> Result<Vec<String>> {
        let a = self
            .col(name)?
            .as_string_opt::<i32>()
            .ok_or_else(|| self.wrong(name))?;
        Ok((0..a.len()).map(|i| a.value(i).to_string()).collect())
    }
    fn i32s(&self, name: &str) -> Result<Vec<i32>> {
        let a = self
            .col(name)?
            .as_primitive_opt::<Int32Type>()
            .ok_or_else(|| self.wrong(name))?;
        Ok(a.values().to_vec())
    }
    fn f64s(&self, name: &str) -> Result<Vec<f64>> {
        let a = self
            .col(name)?
            .as_primitive_opt::<Float64Type>()
            .ok_or_else(|| self.wrong(name))?;
        Ok(a.values().to_vec())
    }
    fn bools(&self, name: &str) -> Result<Vec<bool>> {
        let a = self
            .col(name)?
            .as_boolean_opt()
            .ok_or_else(|| self.wrong(name))?;
        Ok((0..a.len()).map(|i| a.value(i)).collect())
    }
    fn str_lists(&self, name: &str) -> Result<Vec<Vec<String>>> {
        let l = self
            .col(name)?
            .as_list_opt::<i32>()
            .ok_or_else(|| self.wrong(name))?;
        (0..l.len())
            .map(|i| {
                let v = l.value(i);
                let s = v.as_string_opt::<i32>().ok_or_else(|| self.wrong(name))?;
                Ok((0..s.len()).map(|j| s.value(j).to_string()).collect())
            })
            .collect()
    }
    /// A list column of primitives as one `Vec` per row (`None` for a null row).
    fn prim_lists<T: arrow_array::ArrowPrimitiveType>(
        &self,
        name: &str,
    ) -> Result<Vec<Option<Vec<T::Native>>>> {
        let l = self
            .col(name)?
            .as_list_opt::<i32>()
            .ok_or_else(|| self.wrong(name))?;
        let values = l
            .values()
            .as_primitive_opt::<T>()
            .ok_or_else(|| self.wrong(name))?;
        let offsets = l.value_offsets();
        Ok((0..l.len())
            .map(|i| {
                let (a, b) = (offsets[i] as usize, offsets[i + 1] as usize);
                l.is_valid(i).then(|| values.values()[a..b].to_vec())
            })
            .collect())
    }
    fn fixed<T: arrow_array::ArrowPrimitiveType, const N: usize>(
        &self,
        name: &str,
    ) -> Result<Vec<[T::Native; N]>> {
        self.prim_lists::<T>(name)?
            .into_iter()
            .map(|v| {
                v.and_then(|v| <[T::Native; N]>::try_from(v).ok())
                    .ok_or_else(|| {
                        Error::invalid(
                            self.origin,
                            format!("shard column `{name}` must hold {N} values per row"),
                        )
                    })
            })
            .collect()
    }
}

/// Converts a record batch read from `origin` back to slices.
pub fn batch_to_records(batch: &RecordBatch, origin: &Path) -> Result<Vec<SliceRecord>> {
    let c = Columns { batch, origin };
    let (keys, sources, splits, roles) = (
        c.strs("patient_key")?,
        c.strs("source_path")?,
        c.strs("split")?,
        c.strs("role")?,
    );
    let (index, axis, num) = (
        c.i32s("slice_index")?,
        c.i32s("slice_axis")?,
        c.i32s("num_slices")?,
    );
    let (h, w, oh, ow) = (
        c.i32s("height")?,
        c.i32s("width")?,
        c.i32s("orig_height")?,
        c.i32s("orig_width")?,
    );
    let (position, labeled) = (c.f64s("slice_position")?, c.bools("labeled")?);
    let (channels, labels) = (c.str_lists("channel_names")?, c.str_lists("label_names")?);
    let (image, mask) = (
        c.prim_lists::<Float32Type>("image")?,
        c.prim_lists::<UInt8Type>("mask")?,
    );
    let (spacing, pixel) = (
        c.fixed::<Float64Type, 3>("spacing")?,
        c.fixed::<Float64Type, 2>("pixel_spacing")?,
    );
    let (affine, shape) = (
        c.fixed::<Float64Type, 16>("affine")?,
        c.fixed::<Int32Type, 3>("volume_shape")?,
    );
    let mut out = Vec::with_capacity(batch.num_rows());
    for (i, img) in image.into_iter().enumerate() {
        let r = SliceRecord {
            patient_key: keys[i].clone(),
            source_path: sources[i].clone(),
            slice_index: index[i],
            slice_axis: axis[i],
            slice_position: position[i],
            num_slices: num[i],
            split: splits[i].clone(),
            labeled: labeled[i],
            role: roles[i].clone(),
            height: h[i],
            width: w[i],
            orig_height: oh[i],
            orig_width: ow[i],
            channel_names: channels[i].clone(),
            image: img.unwrap_or_default(),
            mask: mask[i].clone(),
            label_names: labels[i].clone(),
            spacing: spacing[i],
            pixel_spacing: pixel[i],
            affine: affine[i],
            volume_shape: shape[i],
        };
        check_record(&r, origin)?;
        out.push(r);
    }
    Ok(out)
}

/// Checks that a row's arrays agree with its declared shape.
fn check_record(r: &SliceRecord, origin: &Path) -> Result<()> {
    let (h, w, c) = (r.height as usize, r.width as usize, r.channel_names.len());
    let shape_err = |what: &str, expected: Vec<usize>, found: usize| Error::Shape {
        path: origin.to_path_buf(),
        case: format!("{} slice {} ({what})", r.patient_key, r.slice_index),
        expected,
        found: vec![found],
    };
    if r.image.len() != c * h * w {
        return Err(shape_err("image", vec![c, h, w], r.image.len()));
    }
    match &r.mask {
        Some(m) if m.len() != h * w => Err(shape_err("mask", vec![h, w], m.len())),
        None if r.labeled => Err(Error::invalid(
            origin,
            format!(
                "{} slice {}: labeled row without a mask",
                r.patient_key, r.slice_index
            ),
        )),
        _ => Ok(()),
    }
}

/// The `part-*.parquet` files of a shard folder, sorted by name (temporary files are skipped).
pub fn shard_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.starts_with("part-") && name.ends_with(".parquet")
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::invalid(
            dir,
            "no part-*.parquet shard files (run `dmnet-prep ingest` first)",
        ));
    }
    Ok(files)
}

/// The dmnet key-value metadata of one shard file (schema version, prep config JSON, …).
pub fn file_metadata(file: &Path) -> Result<std::collections::HashMap<String, String>> {
    let f = std::fs::File::open(file).map_err(|e| Error::io(file, e))?;
    let reader = parquet::file::reader::SerializedFileReader::new(f)
        .map_err(|e| Error::invalid(file, format!("not a readable Parquet file: {e}")))?;
    let meta = parquet::file::reader::FileReader::metadata(&reader);
    let kv = meta
        .file_metadata()
        .key_value_metadata()
        .cloned()
        .unwrap_or_default();
    Ok(kv
        .into_iter()
        .filter_map(|kv| kv.value.map(|v| (kv.key, v)))
        .collect())
}

/// Streams the slices of a shard folder one row group at a time, in file and row order.
pub fn read_shards(dir: &Path) -> Result<ShardReader> {
    Ok(ShardReader {
        files: shard_files(dir)?.into(),
        current: None,
    })
}

/// Iterator over row groups (each a `Vec<SliceRecord>`) of a shard folder.
pub struct ShardReader {
    files: std::collections::VecDeque<PathBuf>,
    current: Option<(
        PathBuf,
        parquet::arrow::arrow_reader::ParquetRecordBatchReader,
    )>,
}

impl ShardReader {
    fn open(file: &Path) -> Result<parquet::arrow::arrow_reader::ParquetRecordBatchReader> {
        let f = std::fs::File::open(file).map_err(|e| Error::io(file, e))?;
        let meta = file_metadata(file)?;
        match meta.get(META_SCHEMA_VERSION).map(String::as_str) {
            Some(SCHEMA_VERSION) => {}
            other => {
                return Err(Error::invalid(
                    file,
                    format!(
                        "shard schema version {other:?}, this dmnet reads version {SCHEMA_VERSION}"
                    ),
                ))
            }
        }
        let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
            .map_err(|e| Error::invalid(file, format!("not a readable Parquet file: {e}")))?;
        let rows = builder
            .metadata()
            .row_groups()
            .iter()
            .map(|g| g.num_rows())
            .max()
            .unwrap_or(1);
        builder
            .with_batch_size(rows.max(1) as usize)
            .build()
            .map_err(|e| Error::invalid(file, format!("reading Parquet: {e}")))
    }
}

impl Iterator for ShardReader {
    type Item = Result<Vec<SliceRecord>>;
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some((path, reader)) = &mut self.current {
                match reader.next() {
                    Some(Ok(batch)) => return Some(batch_to_records(&batch, path)),
                    Some(Err(e)) => {
                        return Some(Err(Error::invalid(
                            path.clone(),
                            format!("reading Parquet: {e}"),
                        )))
                    }
                    None => self.current = None,
                }
            }
            let file = self.files.pop_front()?;
            match Self::open(&file) {
                Ok(r) => self.current = Some((file, r)),
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: i32, labeled: bool) -> SliceRecord {
        SliceRecord {
            patient_key: format!("p{i}"),
            source_path: "imagesTr/a.nii.gz".into(),
            slice_index: i,
            split: "train".into(),
            labeled,
            role: if labeled { "labeled" } else { "unlabeled" }.into(),
            height: 2,
            width: 3,
            channel_names: vec!["mri".into()],
            image: (0..6).map(|v| v as f32 * 0.5 + i as f32).collect(),
            mask: labeled.then(|| vec![0, 1, 1, 0, 0, 1]),
            label_names: vec!["background".into(), "left atrium".into()],
            spacing: [0.625, 0.625, 0.625],
            pixel_spacing: [1.0, 2.0],
            affine: std::array::from_fn(|k| k as f64),
            volume_shape: [4, 5, 6],
            ..Default::default()
        }
    }

    #[test]
    fn records_survive_arrow_round_trip() {
        let rs = vec![record(0, true), record(1, false)];
        let batch = records_to_batch(&rs).unwrap();
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch_to_records(&batch, Path::new("mem")).unwrap(), rs);
    }

    #[test]
    fn image_of_the_wrong_length_is_a_shape_error() {
        let mut r = record(0, true);
        r.image.pop();
        let batch = records_to_batch(&[r]).unwrap();
        let err = batch_to_records(&batch, Path::new("x.parquet"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("x.parquet") && err.contains("image") && err.contains("[1, 2, 3]"),
            "{err}"
        );
    }

    fn write_part(path: &Path, rs: &[SliceRecord], version: &str) {
        use parquet::file::metadata::KeyValue;
        let props = parquet::file::properties::WriterProperties::builder()
            .set_key_value_metadata(Some(vec![KeyValue::new(
                META_SCHEMA_VERSION.into(),
                version.to_string(),
            )]))
            .set_max_row_group_row_count(Some(1))
            .build();
        let f = std::fs::File::create(path).unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(f, arrow_schema(), Some(props)).unwrap();
        w.write(&records_to_batch(rs).unwrap()).unwrap();
        w.close().unwrap();
    }

    #[test]
    fn read_shards_streams_row_groups_in_file_order_and_checks_the_version() {
        let dir = tempfile::tempdir().unwrap();
        write_part(
            &dir.path().join("part-00001.parquet"),
            &[record(2, true)],
            "1",
        );
        write_part(
            &dir.path().join("part-00000.parquet"),
            &[record(0, true), record(1, false)],
            "1",
        );
        std::fs::write(dir.path().join("part-00002.parquet.tmp"), b"partial").unwrap();
        let groups: Vec<_> = read_shards(dir.path())
            .unwrap()
            .map(|g| g.unwrap())
            .collect();
        let sizes: Vec<_> = groups.iter().map(Vec::len).collect();
        assert_eq!(
            sizes,
            [1, 1, 1],
            "one row group per row with max row count 1"
        );
        let idx: Vec<_> = groups.iter().flatten().map(|r| r.slice_index).collect();
        assert_eq!(idx, [0, 1, 2]);

        write_part(
            &dir.path().join("part-00003.parquet"),
            &[record(3, true)],
            "99",
        );
        let err = read_shards(dir.path())
            .unwrap()
            .find_map(|g| g.err())
            .unwrap()
            .to_string();
        assert!(
            err.contains("part-00003.parquet") && err.contains("99"),
            "{err}"
        );
        let empty = tempfile::tempdir().unwrap();
        assert!(read_shards(empty.path())
            .err()
            .unwrap()
            .to_string()
            .contains("no part-*.parquet"));
    }
}
