//! The shard format, version 3: one Parquet row per 2-D slice (`schemas/shard-v3.md`,
//! `docs/contracts.md`). This module maps [`SliceRecord`] to Arrow and back; the tensor columns
//! are fixed-size lists tagged with Arrow's canonical `arrow.fixed_shape_tensor` extension
//! (`image` [C, H, W], `mask` [H, W], `affine` [4, 4]), so Arrow clients get `[N, C, H, W]` arrays
//! in one call. `image` is a float32 column holding values of float16 precision (default) or
//! exact float32 values ([`ImageDtype`]); float32 is the one image type pyarrow, polars and
//! DuckDB all decode with BYTE_STREAM_SPLIT, which keeps float16-rounded values almost as
//! small as a float16 column (`schemas/shard-v3.md`, "The image encoding"). v3 adds
//! `spacing_known` (false for sources without a physical spacing, e.g. SSL4MIS h5 files:
//! spacings are then in voxels) and `source_mask` (the label slice on the source grid, for
//! the source-grid evaluator of `metrics::evaluate`). Version 2 (float16 image column) is still
//! decoded here, for `dmnet-prep upgrade` only.
use crate::{Error, Result};
use arrow_array::builder::StringBuilder;
use arrow_array::builder::{BooleanBuilder, Float64Builder, Int32Builder, ListBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::{Float16Type, Float32Type, Float64Type, Int32Type, UInt8Type};
use arrow_array::{Array, ArrayRef, FixedSizeListArray, PrimitiveArray, RecordBatch};
use arrow_buffer::NullBuffer;
use arrow_schema::{DataType, Field, FieldRef, Schema, SchemaRef};
use half::f16;
use half::slice::HalfFloatSliceExt;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

pub(crate) use super::reader::file_metadata;
pub use super::reader::{read_shards, shard_files};

/// The shard schema version written to `dmnet.schema_version`.
pub const SCHEMA_VERSION: &str = "3";
/// The previous version, decoded only by `dmnet-prep upgrade`.
pub(crate) const V2: &str = "2";
/// Parquet key-value and Arrow schema metadata key holding [`SCHEMA_VERSION`].
pub(crate) const META_SCHEMA_VERSION: &str = "dmnet.schema_version";
/// Parquet key-value and Arrow schema metadata key holding the complete prep config as JSON.
pub(crate) const META_PREP_CONFIG: &str = "dmnet.prep_config";
/// Arrow field metadata key naming an extension type.
const EXTENSION_NAME: &str = "ARROW:extension:name";
/// Arrow field metadata key holding an extension type's parameters.
const EXTENSION_METADATA: &str = "ARROW:extension:metadata";
/// Arrow's canonical fixed-shape tensor extension.
pub(crate) const TENSOR_EXTENSION: &str = "arrow.fixed_shape_tensor";
/// The largest finite float16 value; larger image values need [`ImageDtype::Float32`].
pub(crate) const F16_MAX: f32 = 65504.0;

/// The precision of the `image` values (`[prep] image_dtype`). Both are stored in a float32
/// column (schema v3; v2 had a float16 column).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum ImageDtype {
    /// IEEE half precision: relative error ≤ 2⁻¹¹ (round to nearest), half the size.
    #[default]
    Float16,
    /// IEEE single precision: exact.
    Float32,
}

impl ImageDtype {
    /// `float16` or `float32`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            ImageDtype::Float16 => "float16",
            ImageDtype::Float32 => "float32",
        }
    }
    fn parse(s: &str) -> Option<ImageDtype> {
        [ImageDtype::Float16, ImageDtype::Float32]
            .into_iter()
            .find(|d| d.name() == s)
    }
}

/// Arrow field metadata key of `image` naming its values' precision ([`ImageDtype::name`]).
const META_PRECISION: &str = "dmnet.precision";

/// The `split` column: the patient split a row belongs to (paper §4.1's 7:1:2 train:val:test).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Training patients (labeled and unlabeled slices).
    #[default]
    Train,
    /// Validation patients (checkpoint selection).
    Val,
    /// Test patients (reported metrics).
    Test,
}

/// The `role` column: whether a row's mask may be used for supervision (`labeled` column).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The mask is present and used.
    #[default]
    Labeled,
    /// No mask (or one that is withheld): the unlabeled stream of semi-supervised training.
    Unlabeled,
}

/// A string column whose values come from a closed set (`split`, `role`).
pub(crate) trait ColumnValue: Sized + Copy + 'static {
    /// Every value, in order.
    const ALL: &'static [Self];
    /// The value as stored.
    fn as_str(self) -> &'static str;
    /// The value stored as `s`, if any.
    fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| v.as_str() == s)
    }
}

impl ColumnValue for Split {
    const ALL: &'static [Split] = &[Split::Train, Split::Val, Split::Test];
    fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }
}

impl ColumnValue for Role {
    const ALL: &'static [Role] = &[Role::Labeled, Role::Unlabeled];
    fn as_str(self) -> &'static str {
        match self {
            Role::Labeled => "labeled",
            Role::Unlabeled => "unlabeled",
        }
    }
}

impl Split {
    /// `train`, `val` or `test`.
    pub fn as_str(self) -> &'static str {
        ColumnValue::as_str(self)
    }
}

impl Role {
    /// The role of a row whose `labeled` column is `labeled`.
    pub fn of(labeled: bool) -> Role {
        if labeled {
            Role::Labeled
        } else {
            Role::Unlabeled
        }
    }
    /// `labeled` or `unlabeled`.
    pub fn as_str(self) -> &'static str {
        ColumnValue::as_str(self)
    }
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The tensor shape that every row of one shard folder shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SliceShape {
    /// Channels C.
    pub channels: usize,
    /// Slice height H.
    pub height: usize,
    /// Slice width W.
    pub width: usize,
    /// Storage of `image`.
    pub dtype: ImageDtype,
}

impl SliceShape {
    /// The shape of a record, stored as `dtype`.
    pub fn of(r: &SliceRecord, dtype: ImageDtype) -> SliceShape {
        SliceShape {
            channels: r.channel_names.len(),
            height: r.height.max(0) as usize,
            width: r.width.max(0) as usize,
            dtype,
        }
    }
    /// Values in one `image` row (C·H·W).
    pub(crate) fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }
    /// Values in one `mask` row (H·W).
    pub(crate) fn mask_len(&self) -> usize {
        self.height * self.width
    }
}

impl std::fmt::Display for SliceShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}×{}×{} {}",
            self.channels,
            self.height,
            self.width,
            self.dtype.name()
        )
    }
}

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
    /// The patient's split.
    pub split: Split,
    /// Whether `mask` is present and may be used for supervision.
    pub labeled: bool,
    /// [`Role::of`] `labeled` (stored as its own column for queries).
    pub role: Role,
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
    /// Whether `spacing`, `pixel_spacing`, `affine` and `slice_position` are physical (mm).
    /// False for sources without one (SSL4MIS h5): they are then in voxels, and distances
    /// computed from them are in voxels.
    pub spacing_known: bool,
    /// The label slice on the source grid (`orig_height × orig_width` class indices, row-major),
    /// present exactly where `mask` is: what the source-grid evaluator scores against.
    pub source_mask: Option<Vec<u8>>,
}

fn list_of(item: DataType) -> DataType {
    DataType::List(Arc::new(Field::new("item", item, true)))
}

fn item(t: DataType, nullable: bool) -> FieldRef {
    Arc::new(Field::new("item", t, nullable))
}

fn fixed(t: DataType, n: usize) -> DataType {
    DataType::FixedSizeList(item(t, false), n as i32)
}

/// A fixed-size list field tagged as an `arrow.fixed_shape_tensor` of `shape`. The storage is
/// the extension's canonical `fixed_size_list<item: T>` (nullable items, although none is
/// null): readers such as pyarrow restore the extension type only on an exact storage match.
fn tensor_field(name: &str, t: DataType, shape: &[usize], nullable: bool) -> Field {
    let meta = HashMap::from([
        (EXTENSION_NAME.to_string(), TENSOR_EXTENSION.to_string()),
        (
            EXTENSION_METADATA.to_string(),
            serde_json::json!({ "shape": shape }).to_string(),
        ),
    ]);
    let storage = DataType::FixedSizeList(item(t, true), shape.iter().product::<usize>() as i32);
    Field::new(name, storage, nullable).with_metadata(meta)
}

/// The columns of a shard of `version` (3, or 2 for the upgrade's reader) holding slices of
/// `shape`, in schema order.
fn fields(shape: &SliceShape, version: &str) -> Vec<Field> {
    let (c, h, w) = (shape.channels, shape.height, shape.width);
    let image = if version == V2 {
        let t = match shape.dtype {
            ImageDtype::Float16 => DataType::Float16,
            ImageDtype::Float32 => DataType::Float32,
        };
        tensor_field("image", t, &[c, h, w], false)
    } else {
        let f = tensor_field("image", DataType::Float32, &[c, h, w], false);
        let mut meta = f.metadata().clone();
        meta.insert(META_PRECISION.to_string(), shape.dtype.name().to_string());
        f.with_metadata(meta)
    };
    let mut fields = vec![
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
        Field::new("channel_names", list_of(DataType::Utf8), false),
        image,
        tensor_field("mask", DataType::UInt8, &[h, w], true),
        Field::new("label_names", list_of(DataType::Utf8), false),
        Field::new("spacing", fixed(DataType::Float64, 3), false),
        Field::new("pixel_spacing", fixed(DataType::Float64, 2), false),
        tensor_field("affine", DataType::Float64, &[4, 4], false),
        Field::new("volume_shape", fixed(DataType::Int32, 3), false),
    ];
    if version != V2 {
        fields.push(Field::new("spacing_known", DataType::Boolean, false));
        fields.push(Field::new("source_mask", DataType::Binary, true));
    }
    fields
}

/// The Arrow schema of a version-3 shard holding slices of `shape`; the schema metadata holds
/// the version and, when given, the prep config.
pub fn arrow_schema(shape: &SliceShape, prep_config: Option<&str>) -> SchemaRef {
    let mut meta = HashMap::from([(META_SCHEMA_VERSION.to_string(), SCHEMA_VERSION.to_string())]);
    if let Some(cfg) = prep_config {
        meta.insert(META_PREP_CONFIG.to_string(), cfg.to_string());
    }
    Arc::new(Schema::new_with_metadata(
        fields(shape, SCHEMA_VERSION),
        meta,
    ))
}

/// Reads the slice shape back from an Arrow schema of `version` (3, or 2 for the upgrade's
/// reader); `origin` names the file.
pub(crate) fn shape_of_schema(schema: &Schema, origin: &Path, version: &str) -> Result<SliceShape> {
    let wrong =
        |what: String| Error::invalid(origin, format!("not a shard v{version} schema: {what}"));
    let image = schema
        .field_with_name("image")
        .map_err(|_| wrong("no column `image`".into()))?;
    let tensor_shape = image
        .metadata()
        .get(EXTENSION_METADATA)
        .and_then(|m| serde_json::from_str::<serde_json::Value>(m).ok())
        .and_then(|v| serde_json::from_value::<Vec<usize>>(v["shape"].clone()).ok());
    let (c, h, w) = match tensor_shape.as_deref() {
        Some(&[c, h, w]) => (c, h, w),
        _ => return Err(wrong("`image` lacks its [C, H, W] tensor shape".into())),
    };
    let stored = match image.data_type() {
        DataType::FixedSizeList(f, n) if *n as usize == c * h * w => f.data_type().clone(),
        t => {
            return Err(wrong(format!(
                "`image` is {t}, not a fixed-size list of {c}·{h}·{w}"
            )))
        }
    };
    let dtype = match (version, &stored) {
        (V2, DataType::Float16) => ImageDtype::Float16,
        (V2, DataType::Float32) => ImageDtype::Float32,
        (V2, t) => {
            return Err(wrong(format!(
                "`image` values are {t}, not float16/float32"
            )))
        }
        (_, DataType::Float32) => image
            .metadata()
            .get(META_PRECISION)
            .and_then(|p| ImageDtype::parse(p))
            .unwrap_or(ImageDtype::Float32),
        (_, t) => return Err(wrong(format!("`image` values are {t}, not float32"))),
    };
    let shape = SliceShape {
        channels: c,
        height: h,
        width: w,
        dtype,
    };
    for want in fields(&shape, version) {
        let got = schema
            .field_with_name(want.name())
            .map_err(|_| wrong(format!("no column `{}`", want.name())))?;
        if !same_type(got.data_type(), want.data_type()) {
            return Err(wrong(format!(
                "column `{}` is {}, expected {}",
                want.name(),
                got.data_type(),
                want.data_type()
            )));
        }
    }
    Ok(shape)
}

/// Type equality ignoring the names and nullability of list items (writers differ there).
fn same_type(a: &DataType, b: &DataType) -> bool {
    match (a, b) {
        (DataType::List(x), DataType::List(y)) => same_type(x.data_type(), y.data_type()),
        (DataType::FixedSizeList(x, n), DataType::FixedSizeList(y, m)) => {
            n == m && same_type(x.data_type(), y.data_type())
        }
        _ => a == b,
    }
}

/// Builders of the scalar and small list columns, in schema order.
struct Builders {
    strings: [StringBuilder; 4],
    ints: [Int32Builder; 7],
    position: Float64Builder,
    labeled: BooleanBuilder,
    channel_names: ListBuilder<StringBuilder>,
    label_names: ListBuilder<StringBuilder>,
}

impl Builders {
    fn new(n: usize) -> Self {
        Builders {
            strings: std::array::from_fn(|_| StringBuilder::with_capacity(n, n * 16)),
            ints: std::array::from_fn(|_| Int32Builder::with_capacity(n)),
            position: Float64Builder::with_capacity(n),
            labeled: BooleanBuilder::with_capacity(n),
            channel_names: ListBuilder::new(StringBuilder::new()),
            label_names: ListBuilder::new(StringBuilder::new()),
        }
    }

    fn push(&mut self, r: &SliceRecord) {
        let [key, source, split, role] = &mut self.strings;
        key.append_value(&r.patient_key);
        source.append_value(&r.source_path);
        split.append_value(r.split.as_str());
        role.append_value(r.role.as_str());
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
        self.label_names
            .append_value(r.label_names.iter().map(Some));
    }
}

/// A fixed-size list column from flat values (`n` rows of `size`).
fn fixed_column<T: arrow_array::ArrowPrimitiveType>(
    values: Vec<T::Native>,
    size: usize,
    nulls: Option<NullBuffer>,
    nullable_items: bool,
) -> ArrayRef {
    let values: ArrayRef = Arc::new(PrimitiveArray::<T>::new(values.into(), None));
    Arc::new(FixedSizeListArray::new(
        item(T::DATA_TYPE, nullable_items),
        size as i32,
        values,
        nulls,
    ))
}

/// Whether every value is finite and within `limit` (one branch-free pass the compiler
/// vectorises; NaN fails the comparison).
fn all_within(v: &[f32], limit: f32) -> bool {
    v.iter().fold(true, |ok, x| ok & (x.abs() <= limit))
}

/// The `image` column: every row's values, checked finite (and within float16 range), rounded
/// to float16 precision for [`ImageDtype::Float16`] and stored as float32.
fn image_column(records: &[SliceRecord], shape: &SliceShape) -> Result<ArrayRef> {
    let len = shape.image_len();
    let bad = |r: &SliceRecord, what: &str| {
        Error::invalid(
            &r.source_path,
            format!("{} slice {}: {what}", r.patient_key, r.slice_index),
        )
    };
    let limit = match shape.dtype {
        ImageDtype::Float16 => F16_MAX,
        ImageDtype::Float32 => f32::MAX,
    };
    for r in records.iter().filter(|r| !all_within(&r.image, limit)) {
        if let Some(v) = r.image.iter().find(|v| !v.is_finite()) {
            return Err(bad(r, &format!("image value {v} is not finite")));
        }
        if let Some(v) = r.image.iter().find(|v| v.abs() > F16_MAX) {
            return Err(bad(
                r,
                &format!("image value {v} exceeds the float16 range (±{F16_MAX}): set image_dtype = \"float32\""),
            ));
        }
    }
    let mut v = Vec::with_capacity(records.len() * len);
    for r in records {
        v.extend_from_slice(&r.image);
    }
    if shape.dtype == ImageDtype::Float16 {
        round_to_f16(&mut v);
    }
    Ok(fixed_column::<Float32Type>(v, len, None, true))
}

/// Rounds float32 values to the nearest float16 (ties to even), in place, through the hardware
/// conversions where the CPU has them.
pub(crate) fn round_to_f16(v: &mut [f32]) {
    let mut buf = [f16::ZERO; 4096];
    for chunk in v.chunks_mut(buf.len()) {
        let b = &mut buf[..chunk.len()];
        b.convert_from_f32_slice(chunk);
        b.convert_to_f32_slice(chunk);
    }
}

/// The `source_mask` column: each row's source-grid label slice as bytes, null where absent.
fn source_mask_column(records: &[SliceRecord]) -> ArrayRef {
    let mut b = arrow_array::builder::BinaryBuilder::with_capacity(
        records.len(),
        records
            .iter()
            .map(|r| r.source_mask.as_ref().map_or(0, Vec::len))
            .sum(),
    );
    for r in records {
        match &r.source_mask {
            Some(m) => b.append_value(m),
            None => b.append_null(),
        }
    }
    Arc::new(b.finish())
}

/// The `mask` column (zeros under null rows).
fn mask_column(records: &[SliceRecord], shape: &SliceShape) -> ArrayRef {
    let len = shape.mask_len();
    let mut v = vec![0u8; records.len() * len];
    for (dst, r) in v.chunks_exact_mut(len.max(1)).zip(records) {
        if let Some(m) = &r.mask {
            dst.copy_from_slice(m);
        }
    }
    let valid: Vec<bool> = records.iter().map(|r| r.mask.is_some()).collect();
    fixed_column::<UInt8Type>(v, len, Some(NullBuffer::from(valid)), true)
}

/// Checks that every record has the folder's shape and a valid mask.
fn check_shapes(records: &[SliceRecord], shape: &SliceShape) -> Result<()> {
    for r in records {
        let found = SliceShape::of(r, shape.dtype);
        let err = |what: &str, expected: Vec<usize>, found: Vec<usize>| Error::Shape {
            path: r.source_path.clone().into(),
            case: format!("{} slice {} ({what})", r.patient_key, r.slice_index),
            expected,
            found,
        };
        let dims = |s: &SliceShape| vec![s.channels, s.height, s.width];
        if found != *shape || r.image.len() != shape.image_len() {
            return Err(err("image", dims(shape), {
                let mut d = dims(&found);
                d.push(r.image.len());
                d
            }));
        }
        check_mask_values(r, Path::new(&r.source_path))?;
        if let Some(m) = &r.mask {
            if m.len() != shape.mask_len() {
                return Err(err("mask", vec![shape.height, shape.width], vec![m.len()]));
            }
        } else if r.labeled {
            return Err(Error::invalid(
                &r.source_path,
                format!(
                    "{} slice {}: labeled row without a mask",
                    r.patient_key, r.slice_index
                ),
            ));
        }
    }
    Ok(())
}

/// Converts slices of one `shape` to a record batch of [`arrow_schema`]`(shape)`. Refuses
/// non-finite images, values beyond float16 range when stored as float16, and rows whose shape
/// or mask values disagree.
pub(crate) fn records_to_batch(records: &[SliceRecord], shape: &SliceShape) -> Result<RecordBatch> {
    check_shapes(records, shape)?;
    let mut b = Builders::new(records.len());
    for r in records {
        b.push(r);
    }
    let n = records.len();
    let fixed_f64 = |f: &dyn Fn(&SliceRecord) -> &[f64], size: usize, tensor: bool| {
        let mut v = Vec::with_capacity(n * size);
        for r in records {
            v.extend_from_slice(f(r));
        }
        fixed_column::<Float64Type>(v, size, None, tensor)
    };
    let mut shapes = Vec::with_capacity(n * 3);
    for r in records {
        shapes.extend_from_slice(&r.volume_shape);
    }
    let [key, source, split, role] = &mut b.strings;
    let [index, axis, num, h, w, oh, ow] = &mut b.ints;
    let columns: Vec<ArrayRef> = vec![
        Arc::new(key.finish()),
        Arc::new(source.finish()),
        Arc::new(index.finish()),
        Arc::new(axis.finish()),
        Arc::new(b.position.finish()),
        Arc::new(num.finish()),
        Arc::new(split.finish()),
        Arc::new(b.labeled.finish()),
        Arc::new(role.finish()),
        Arc::new(h.finish()),
        Arc::new(w.finish()),
        Arc::new(oh.finish()),
        Arc::new(ow.finish()),
        Arc::new(b.channel_names.finish()),
        image_column(records, shape)?,
        mask_column(records, shape),
        Arc::new(b.label_names.finish()),
        fixed_f64(&|r| &r.spacing, 3, false),
        fixed_f64(&|r| &r.pixel_spacing, 2, false),
        fixed_f64(&|r| &r.affine, 16, true),
        fixed_column::<Int32Type>(shapes, 3, None, false),
        Arc::new(arrow_array::BooleanArray::from(
            records.iter().map(|r| r.spacing_known).collect::<Vec<_>>(),
        )),
        source_mask_column(records),
    ];
    RecordBatch::try_new(arrow_schema(shape, None), columns)
        .map_err(|e| Error::invalid("<records>", format!("building a shard record batch: {e}")))
}

/// Typed access to a record batch's columns, with errors naming the file, the column and the
/// schema version read (v2 here, v1 in [`super::v1`]).
pub(super) struct Columns<'a> {
    pub(super) batch: &'a RecordBatch,
    pub(super) origin: &'a Path,
    pub(super) version: &'a str,
}

impl<'a> Columns<'a> {
    pub(super) fn col(&self, name: &str) -> Result<&'a ArrayRef> {
        self.batch.column_by_name(name).ok_or_else(|| {
            Error::invalid(
                self.origin,
                format!("shard has no column `{name}` (schema v{})", self.version),
            )
        })
    }
    pub(super) fn wrong(&self, name: &str) -> Error {
        let found = self
            .batch
            .column_by_name(name)
            .map(|c| c.data_type().to_string())
            .unwrap_or_default();
        Error::invalid(
            self.origin,
            format!(
                "shard column `{name}` has type {found}, not the v{} type",
                self.version
            ),
        )
    }
    pub(super) fn strs(&self, name: &str) -> Result<Vec<String>> {
        let a = self
            .col(name)?
            .as_string_opt::<i32>()
            .ok_or_else(|| self.wrong(name))?;
        Ok((0..a.len()).map(|i| a.value(i).to_string()).collect())
    }
    /// A string column of closed-set values; an unknown value is an error naming the file.
    pub(super) fn values<T: ColumnValue>(&self, name: &str) -> Result<Vec<T>> {
        let a = self
            .col(name)?
            .as_string_opt::<i32>()
            .ok_or_else(|| self.wrong(name))?;
        (0..a.len())
            .map(|i| {
                T::parse(a.value(i)).ok_or_else(|| {
                    let known: Vec<&str> = T::ALL.iter().map(|v| v.as_str()).collect();
                    Error::invalid(
                        self.origin,
                        format!(
                            "row {i}: column `{name}` holds {:?}, not one of {}",
                            a.value(i),
                            known.join(", ")
                        ),
                    )
                })
            })
            .collect()
    }
    pub(super) fn i32s(&self, name: &str) -> Result<Vec<i32>> {
        let a = self
            .col(name)?
            .as_primitive_opt::<Int32Type>()
            .ok_or_else(|| self.wrong(name))?;
        Ok(a.values().to_vec())
    }
    pub(super) fn f64s(&self, name: &str) -> Result<Vec<f64>> {
        let a = self
            .col(name)?
            .as_primitive_opt::<Float64Type>()
            .ok_or_else(|| self.wrong(name))?;
        Ok(a.values().to_vec())
    }
    pub(super) fn bools(&self, name: &str) -> Result<Vec<bool>> {
        let a = self
            .col(name)?
            .as_boolean_opt()
            .ok_or_else(|| self.wrong(name))?;
        Ok((0..a.len()).map(|i| a.is_valid(i) && a.value(i)).collect())
    }
    pub(super) fn str_lists(&self, name: &str) -> Result<Vec<Vec<String>>> {
        let l = self
            .col(name)?
            .as_list_opt::<i32>()
            .ok_or_else(|| self.wrong(name))?;
        let s = l
            .values()
            .as_string_opt::<i32>()
            .ok_or_else(|| self.wrong(name))?;
        let offsets = l.value_offsets();
        Ok(offsets
            .windows(2)
            .map(|w| {
                (w[0].max(0) as usize..w[1].max(0) as usize)
                    .filter(|&j| j < s.len())
                    .map(|j| s.value(j).to_string())
                    .collect()
            })
            .collect())
    }
    /// The number of values in each row of a list column, without reading the values.
    pub(super) fn list_lens(&self, name: &str) -> Result<Vec<usize>> {
        let l = self
            .col(name)?
            .as_list_opt::<i32>()
            .ok_or_else(|| self.wrong(name))?;
        Ok((0..l.len())
            .map(|i| l.value_length(i).max(0) as usize)
            .collect())
    }
    /// A fixed-size list column's flat values and list size.
    fn fixed<T: arrow_array::ArrowPrimitiveType>(
        &self,
        name: &str,
    ) -> Result<(&'a FixedSizeListArray, &'a [T::Native], usize)> {
        let l = self
            .col(name)?
            .as_fixed_size_list_opt()
            .ok_or_else(|| self.wrong(name))?;
        let values = l
            .values()
            .as_primitive_opt::<T>()
            .ok_or_else(|| self.wrong(name))?;
        let size = l.value_length().max(0) as usize;
        let flat = values.values();
        if flat.len() < l.len() * size {
            return Err(self.wrong(name));
        }
        Ok((l, &flat[..], size))
    }
    /// The `affine` column's rows.
    pub(super) fn affines(&self) -> Result<Vec<[f64; 16]>> {
        self.arrays::<Float64Type, 16>("affine")
    }
    /// Rows of a fixed-size list column as arrays of `N` (the column must hold N per row).
    fn arrays<T: arrow_array::ArrowPrimitiveType, const N: usize>(
        &self,
        name: &str,
    ) -> Result<Vec<[T::Native; N]>> {
        let (l, flat, size) = self.fixed::<T>(name)?;
        if size != N {
            return Err(Error::invalid(
                self.origin,
                format!("shard column `{name}` must hold {N} values per row, has {size}"),
            ));
        }
        Ok((0..l.len())
            .map(|i| std::array::from_fn(|k| flat[i * N + k]))
            .collect())
    }
}

/// The `image` column as f32 rows (float16 widened exactly).
fn image_rows(c: &Columns) -> Result<Vec<Vec<f32>>> {
    let col = c.col("image")?;
    let dtype = match col.data_type() {
        DataType::FixedSizeList(f, _) => f.data_type().clone(),
        _ => return Err(c.wrong("image")),
    };
    match dtype {
        DataType::Float16 => {
            let (l, flat, size) = c.fixed::<Float16Type>("image")?;
            Ok((0..l.len())
                .map(|i| {
                    let mut out = vec![0f32; size];
                    flat[i * size..(i + 1) * size].convert_to_f32_slice(&mut out);
                    out
                })
                .collect())
        }
        DataType::Float32 => {
            let (l, flat, size) = c.fixed::<Float32Type>("image")?;
            Ok((0..l.len())
                .map(|i| flat[i * size..(i + 1) * size].to_vec())
                .collect())
        }
        _ => Err(c.wrong("image")),
    }
}

/// The `mask` column as rows (`None` for null rows).
fn mask_rows(c: &Columns) -> Result<Vec<Option<Vec<u8>>>> {
    let (l, flat, size) = c.fixed::<UInt8Type>("mask")?;
    Ok((0..l.len())
        .map(|i| {
            l.is_valid(i)
                .then(|| flat[i * size..(i + 1) * size].to_vec())
        })
        .collect())
}

/// The `source_mask` column as rows (`None` for null rows).
fn source_mask_rows(c: &Columns) -> Result<Vec<Option<Vec<u8>>>> {
    let a = c
        .col("source_mask")?
        .as_binary_opt::<i32>()
        .ok_or_else(|| c.wrong("source_mask"))?;
    Ok((0..a.len())
        .map(|i| a.is_valid(i).then(|| a.value(i).to_vec()))
        .collect())
}

/// Converts a record batch of schema `version` (3, or 2 for the upgrade) read from `origin`
/// back to slices, checking each row ([`check_record`]: shape, mask values < number of label
/// names, finite image values).
pub(crate) fn batch_to_records(
    batch: &RecordBatch,
    origin: &Path,
    version: &str,
) -> Result<Vec<SliceRecord>> {
    let rows = batch_to_records_unchecked(batch, origin, version)?;
    for r in &rows {
        check_record(r, origin)?;
    }
    Ok(rows)
}

/// [`batch_to_records`] without the per-row value checks (for `inspect`, which reports every
/// bad row itself).
pub(crate) fn batch_to_records_unchecked(
    batch: &RecordBatch,
    origin: &Path,
    version: &str,
) -> Result<Vec<SliceRecord>> {
    let c = Columns {
        batch,
        origin,
        version,
    };
    let mut rows = scalar_records(&c)?;
    let (image, mask) = (image_rows(&c)?, mask_rows(&c)?);
    let (spacing, pixel) = (
        c.arrays::<Float64Type, 3>("spacing")?,
        c.arrays::<Float64Type, 2>("pixel_spacing")?,
    );
    let (affine, shape) = (
        c.arrays::<Float64Type, 16>("affine")?,
        c.arrays::<Int32Type, 3>("volume_shape")?,
    );
    for (i, (r, (img, m))) in rows.iter_mut().zip(image.into_iter().zip(mask)).enumerate() {
        r.image = img;
        r.mask = m;
        r.spacing = spacing[i];
        r.pixel_spacing = pixel[i];
        r.affine = affine[i];
        r.volume_shape = shape[i];
    }
    if version == V2 {
        // v2 required physical spacing and stored no source-grid labels
        rows.iter_mut().for_each(|r| r.spacing_known = true);
    } else {
        let known = c.bools("spacing_known")?;
        for ((r, k), sm) in rows.iter_mut().zip(known).zip(source_mask_rows(&c)?) {
            r.spacing_known = k;
            r.source_mask = sm;
        }
    }
    Ok(rows)
}

/// The rows of a batch with every column that schema v1, v2 and v3 store alike (strings, ints,
/// flags, name lists); the tensor and fixed-size columns are left for the version's reader.
pub(super) fn scalar_records(c: &Columns) -> Result<Vec<SliceRecord>> {
    let (mut keys, mut sources, splits, roles) = (
        c.strs("patient_key")?,
        c.strs("source_path")?,
        c.values::<Split>("split")?,
        c.values::<Role>("role")?,
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
    let (mut channels, mut labels) = (c.str_lists("channel_names")?, c.str_lists("label_names")?);
    Ok((0..c.batch.num_rows())
        .map(|i| SliceRecord {
            patient_key: std::mem::take(&mut keys[i]),
            source_path: std::mem::take(&mut sources[i]),
            slice_index: index[i],
            slice_axis: axis[i],
            slice_position: position[i],
            num_slices: num[i],
            split: splits[i],
            labeled: labeled[i],
            role: roles[i],
            height: h[i],
            width: w[i],
            orig_height: oh[i],
            orig_width: ow[i],
            channel_names: std::mem::take(&mut channels[i]),
            label_names: std::mem::take(&mut labels[i]),
            ..Default::default()
        })
        .collect())
}

/// Checks a decoded row: arrays agree with the declared shape, a labeled row has a mask, mask
/// values index `label_names`, image values are finite.
pub(crate) fn check_record(r: &SliceRecord, origin: &Path) -> Result<()> {
    let (h, w, c) = (
        r.height.max(0) as usize,
        r.width.max(0) as usize,
        r.channel_names.len(),
    );
    let shape_err = |what: &str, expected: Vec<usize>, found: usize| Error::Shape {
        path: origin.to_path_buf(),
        case: format!("{} slice {} ({what})", r.patient_key, r.slice_index),
        expected,
        found: vec![found],
    };
    if r.image.len() != c * h * w {
        return Err(shape_err("image", vec![c, h, w], r.image.len()));
    }
    if let Some(v) = r.image.iter().find(|v| !v.is_finite()) {
        return Err(Error::invalid(
            origin,
            format!(
                "{} slice {}: image value {v} is not finite",
                r.patient_key, r.slice_index
            ),
        ));
    }
    match &r.mask {
        Some(m) if m.len() != h * w => Err(shape_err("mask", vec![h, w], m.len())),
        Some(_) => check_mask_values(r, origin),
        None if r.labeled => Err(Error::invalid(
            origin,
            format!(
                "{} slice {}: labeled row without a mask",
                r.patient_key, r.slice_index
            ),
        )),
        None => Ok(()),
    }
}

/// Mask and source-mask values must index `label_names`; a source mask has the source slice
/// size and comes only with a mask.
fn check_mask_values(r: &SliceRecord, origin: &Path) -> Result<()> {
    let classes = r.label_names.len();
    let bad = |what: String| {
        Error::invalid(
            origin,
            format!("{} slice {}: {what}", r.patient_key, r.slice_index),
        )
    };
    let too_big = |which: &str, v: u8| {
        bad(format!(
            "{which} value {v} is not a class: label_names has {classes} classes (0..={})",
            classes.saturating_sub(1)
        ))
    };
    if let Some(&v) = r.mask.as_ref().and_then(|m| m.iter().max()) {
        if v as usize >= classes {
            return Err(too_big("mask", v));
        }
    }
    let Some(sm) = &r.source_mask else {
        return Ok(());
    };
    if r.mask.is_none() {
        return Err(bad("a source_mask on a row without a mask".into()));
    }
    let n = r.orig_height.max(0) as usize * r.orig_width.max(0) as usize;
    if sm.len() != n {
        return Err(bad(format!(
            "source_mask holds {} values, orig_height × orig_width is {n}",
            sm.len()
        )));
    }
    match sm.iter().max() {
        Some(&v) if v as usize >= classes => Err(too_big("source_mask", v)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn record(i: i32, labeled: bool) -> SliceRecord {
        SliceRecord {
            patient_key: format!("p{i}"),
            source_path: "imagesTr/a.nii.gz".into(),
            slice_index: i,
            split: Split::Train,
            labeled,
            role: Role::of(labeled),
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
            orig_height: 3,
            orig_width: 2,
            spacing_known: true,
            source_mask: labeled.then(|| vec![1, 0, 1, 1, 0, 0]),
            ..Default::default()
        }
    }

    fn shape(dtype: ImageDtype) -> SliceShape {
        SliceShape {
            channels: 1,
            height: 2,
            width: 3,
            dtype,
        }
    }

    #[test]
    fn records_survive_arrow_round_trip_in_both_dtypes() {
        // values k/2 + i are exact in float16, so both dtypes round-trip bit for bit
        let rs = vec![record(0, true), record(1, false)];
        for dtype in [ImageDtype::Float16, ImageDtype::Float32] {
            let batch = records_to_batch(&rs, &shape(dtype)).unwrap();
            assert_eq!(batch.num_rows(), 2);
            assert_eq!(
                batch_to_records(&batch, Path::new("mem"), SCHEMA_VERSION).unwrap(),
                rs
            );
            assert_eq!(
                shape_of_schema(&batch.schema(), Path::new("mem"), SCHEMA_VERSION).unwrap(),
                shape(dtype)
            );
        }
    }

    #[test]
    fn float16_storage_error_is_within_half_an_ulp() {
        let mut r = record(0, true);
        r.image = vec![0.1, -3.3, 1e-3, 7.77, 1000.5, -0.0];
        let batch = records_to_batch(&[r.clone()], &shape(ImageDtype::Float16)).unwrap();
        let back = batch_to_records(&batch, Path::new("mem"), SCHEMA_VERSION).unwrap();
        for (a, b) in r.image.iter().zip(&back[0].image) {
            // round to nearest: |error| ≤ 2^-11 · |x| for normal float16 values
            assert!((a - b).abs() <= a.abs() * 2f32.powi(-11), "{a} → {b}");
        }
    }

    #[test]
    fn writer_refuses_nan_out_of_range_and_bad_masks() {
        let s16 = shape(ImageDtype::Float16);
        let mut r = record(0, true);
        r.image[2] = f32::NAN;
        let e = records_to_batch(&[r], &s16).unwrap_err().to_string();
        assert!(e.contains("not finite"), "{e}");
        let mut r = record(0, true);
        r.image[2] = 70000.0;
        let e = records_to_batch(&[r.clone()], &s16)
            .unwrap_err()
            .to_string();
        assert!(e.contains("float16 range") && e.contains("float32"), "{e}");
        assert!(records_to_batch(&[r], &shape(ImageDtype::Float32)).is_ok());
        let mut r = record(0, true);
        r.mask = Some(vec![0, 2, 0, 0, 0, 0]);
        let e = records_to_batch(&[r], &s16).unwrap_err().to_string();
        assert!(
            e.contains("mask value 2") && e.contains("2 classes (0..=1)"),
            "{e}"
        );
        let mut r = record(0, true);
        r.source_mask = Some(vec![0, 3, 0, 0, 0, 0]);
        let e = records_to_batch(&[r], &s16).unwrap_err().to_string();
        assert!(e.contains("source_mask value 3"), "{e}");
        let mut r = record(0, true);
        r.source_mask = Some(vec![0; 5]);
        let e = records_to_batch(&[r], &s16).unwrap_err().to_string();
        assert!(e.contains("source_mask holds 5 values"), "{e}");
        let mut r = record(0, true);
        r.image.pop();
        let e = records_to_batch(&[r], &s16).unwrap_err().to_string();
        assert!(e.contains("image") && e.contains("[1, 2, 3]"), "{e}");
    }

    #[test]
    fn schema_carries_version_and_tensor_shapes() {
        let s = arrow_schema(&shape(ImageDtype::Float16), Some("{}"));
        assert_eq!(s.metadata()[META_SCHEMA_VERSION], SCHEMA_VERSION);
        assert_eq!(s.metadata()[META_PREP_CONFIG], "{}");
        let image = s.field_with_name("image").unwrap();
        assert_eq!(image.metadata()[EXTENSION_NAME], TENSOR_EXTENSION);
        assert_eq!(image.metadata()[META_PRECISION], "float16");
        assert!(
            matches!(image.data_type(), DataType::FixedSizeList(f, 6) if f.data_type() == &DataType::Float32)
        );
        assert_eq!(image.metadata()[EXTENSION_METADATA], r#"{"shape":[1,2,3]}"#);
        let e = shape_of_schema(&Schema::empty(), Path::new("x.parquet"), SCHEMA_VERSION)
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.parquet") && e.contains("image"), "{e}");
    }
}
