//! DICOM series, Siemens mosaics, enhanced multi-frame files and DICOM SEG (dicom-object for the
//! data sets; compressed pixel data decoded through dicom-rs `dicom-pixeldata`).
//!
//! - [`scan_dicom_dir`] walks a folder tree (each file once, symlink loops cut) and groups
//!   Part-10 files by SeriesInstanceUID (0020,000E). Every file is split into 2-D
//!   [`Frame`]s: a classic single-frame image is one frame; a Siemens mosaic (ImageType
//!   (0008,0008) `MOSAIC`) is NumberOfImagesInMosaic (0019,100A, or the CSA image header
//!   (0029,1010)) tiles, positioned as dcm2niix does; an enhanced multi-frame file is
//!   NumberOfFrames (0028,0008) frames with position, orientation, spacing and rescale from
//!   the Per-frame / Shared Functional Groups (5200,9230 / 5200,9229).
//! - Frames are sorted by ImagePositionPatient (0020,0032) projected on the slice normal
//!   `n = row × col` of ImageOrientationPatient (0020,0037); the slice step comes from the
//!   positions (never SliceThickness). Repeated positions = a 4-D series: time point `t` is
//!   the `t`-th frame at each position (InstanceNumber (0020,0013), then frame order).
//! - Voxel axes: i0 = column (along the IOP row direction), i1 = row, i2 = sorted slice; the
//!   LPS affine `[col·Δc | row·Δr | step | IPP₀]` is turned into RAS by negating its x and y
//!   rows.
//! - Values: the stored value masked to BitsStored (0028,0101) and sign-extended from HighBit
//!   (0028,0102) when PixelRepresentation (0028,0103) is 1 (as pydicom and dcm2niix read it),
//!   then × RescaleSlope (0028,1053) + RescaleIntercept (0028,1052), per frame.
//! - Pixel data: native little/big endian and deflated syntaxes are decoded here; RLE
//!   Lossless, JPEG baseline/extended/lossless, JPEG-LS and JPEG 2000 through
//!   `dicom-pixeldata`. Anything else is refused by name.
use std::path::{Path, PathBuf};

use dicom_dictionary_std::tags;
use dicom_object::{InMemDicomObject, OpenFileOptions};

use crate::{Error, Result};

mod lengths;
mod mosaic;
mod multiframe;
mod pixels;
mod scan;
mod seg;
mod series;

pub use lengths::check_declared_lengths;
pub use pixels::read_dicom_pixels;
pub use scan::scan_dicom_dir;
pub use seg::read_dicom_seg;
pub(crate) use seg::read_seg_names;
pub(crate) use series::dicom_series_geometry;
pub use series::{read_dicom_series, read_dicom_timepoint, series_timepoints};

/// A file with the DICM marker that could not be used, and why.
pub(crate) type UnreadableFile = (PathBuf, String);

/// How a file holds its 2-D images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// One image (the classic one-file-per-slice series).
    Single,
    /// A Siemens mosaic: `tiles` images tiled in a `grid × grid` matrix.
    Mosaic {
        /// NumberOfImagesInMosaic.
        tiles: usize,
        /// Tiles per mosaic row and column: ⌈√tiles⌉.
        grid: usize,
    },
    /// An enhanced multi-frame file with per-frame functional groups.
    MultiFrame {
        /// NumberOfFrames.
        frames: usize,
    },
}

/// Geometry and scaling of one 2-D image of a file: a slice, a mosaic tile or a frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// ImagePositionPatient of its first pixel (LPS, mm); for a mosaic tile, corrected from the
    /// mosaic's position as dcm2niix does.
    pub position: Option<[f64; 3]>,
    /// ImageOrientationPatient (row cosines, column cosines).
    pub orientation: Option<[f64; 6]>,
    /// PixelSpacing (0028,0030): `[between rows, between columns]` (mm).
    pub spacing: Option<[f64; 2]>,
    /// `[RescaleSlope, RescaleIntercept]` (`[1, 0]` when absent).
    pub rescale: [f64; 2],
    /// Frame number in the file (multi-frame), tile number (mosaic), or 0.
    pub index: usize,
}

/// Header facts of one DICOM file, read without its pixel data.
#[derive(Debug, Clone)]
pub struct DicomFile {
    /// The file.
    pub path: PathBuf,
    /// SOPInstanceUID (0008,0018).
    pub sop_uid: String,
    /// ImagePositionPatient (LPS, mm) of its first frame, if present.
    pub position: Option<[f64; 3]>,
    /// ImageOrientationPatient (row cosines, column cosines) of its first frame, if present.
    pub orientation: Option<[f64; 6]>,
    /// InstanceNumber (0 when absent).
    pub instance: i64,
    /// How the file holds its images.
    pub kind: FileKind,
    /// Rows and columns of one frame (of one tile for a mosaic).
    pub frame_size: [usize; 2],
    /// Its 2-D images in file order (empty for a DICOM SEG).
    pub frames: Vec<Frame>,
    /// Why the file cannot be part of a volume (e.g. a mosaic that cannot be un-tiled),
    /// reported with its name when its series is read.
    pub problem: Option<String>,
}

/// One DICOM series found by [`scan_dicom_dir`].
#[derive(Debug, Clone)]
pub struct DicomSeries {
    /// SeriesInstanceUID.
    pub series_uid: String,
    /// PatientID (0010,0020), or StudyInstanceUID when empty; used only to group studies by
    /// patient, never written to shards unless `--keep-patient-ids`.
    pub patient: String,
    /// Modality (0008,0060).
    pub modality: String,
    /// Whether it is a DICOM SEG object.
    pub is_seg: bool,
    /// For a SEG: the SeriesInstanceUID it references (ReferencedSeriesSequence (0008,1115)).
    pub referenced_series: Option<String>,
    /// Its files (in path order).
    pub files: Vec<DicomFile>,
    /// Files in its folder that could not be read (an empty or truncated copy, a file that
    /// does not parse), with why: the series is then incomplete, and reading it fails naming
    /// them.
    pub unreadable: Vec<(PathBuf, String)>,
}

impl DicomSeries {
    /// The folder holding the series' first file.
    pub fn folder(&self) -> PathBuf {
        self.files
            .first()
            .and_then(|f| f.path.parent())
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }
}

/// A DICOM SEG read onto its source image grid.
#[derive(Debug, Clone)]
pub struct SegLabels {
    /// Label volume on the image grid; voxel value = segment number (0 = background).
    pub labels: super::Volume,
    /// Names indexed by segment number (index 0 = "background").
    pub names: Vec<String>,
}

/// A string value, trimmed of padding.
fn s(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<String> {
    obj.get(tag).and_then(|e| e.to_str().ok()).map(|v| {
        v.trim_matches(|c: char| c.is_whitespace() || c == '\0')
            .to_string()
    })
}

/// A multi-valued decimal value.
fn f64s(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<Vec<f64>> {
    obj.get(tag).and_then(|e| e.to_multi_float64().ok())
}

/// The first value of a decimal element.
fn f64_1(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<f64> {
    f64s(obj, tag).and_then(|v| v.first().copied())
}

/// An integer value.
fn int(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<i64> {
    obj.get(tag).and_then(|e| e.to_int::<i64>().ok())
}

/// The first item of a sequence element.
fn first_item(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<&InMemDicomObject> {
    obj.get(tag)
        .and_then(|e| e.items())
        .and_then(|it| it.first())
}

fn vec3(v: Vec<f64>) -> Option<[f64; 3]> {
    (v.len() == 3).then(|| [v[0], v[1], v[2]])
}

fn vec6(v: Vec<f64>) -> Option<[f64; 6]> {
    (v.len() == 6).then(|| [v[0], v[1], v[2], v[3], v[4], v[5]])
}

fn vec2(v: Vec<f64>) -> Option<[f64; 2]> {
    (v.len() == 2).then(|| [v[0], v[1]])
}

/// Opens a file (with or without its pixel data) once its declared lengths are checked
/// ([`lengths`]); the error names the file.
fn open(path: &Path, pixels: bool) -> Result<dicom_object::DefaultDicomObject> {
    lengths::check_declared_lengths(path)?;
    let opts = OpenFileOptions::new();
    let opts = if pixels {
        opts
    } else {
        opts.read_until(tags::PIXEL_DATA)
    };
    opts.open_file(path)
        .map_err(|e| Error::invalid(path, format!("unreadable DICOM file: {e}")))
}

fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

/// Row and column direction cosines of an ImageOrientationPatient value.
fn row_col(o: [f64; 6]) -> ([f64; 3], [f64; 3]) {
    ([o[0], o[1], o[2]], [o[3], o[4], o[5]])
}
