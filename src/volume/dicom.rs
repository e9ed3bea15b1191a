//! DICOM series and DICOM SEG reading (dicom-object; native pixel data decoded here).
//!
//! - Files are grouped by SeriesInstanceUID (0020,000E) in [`scan_dicom_dir`].
//! - Slices are sorted by ImagePositionPatient (0020,0032) projected on the slice normal
//!   `n = row × col` of ImageOrientationPatient (0020,0037); the slice step is the mean
//!   difference of consecutive positions (never SliceThickness).
//! - Voxel axes: i0 = column (along the IOP row direction), i1 = row, i2 = sorted slice; the
//!   LPS affine `[col·Δc | row·Δr | step | IPP₀]` is turned into RAS by negating its x and y rows.
//! - Values: stored value × RescaleSlope (0028,1053) + RescaleIntercept (0028,1052), per slice.
//! - Repeated positions = a 4-D series: [`read_dicom_series`] refuses it with the number of
//!   time points; [`read_dicom_timepoint`] reads one (files at one position ordered by
//!   InstanceNumber (0020,0013)).
//! - Only native (uncompressed) transfer syntaxes are decoded; others are a clear error.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dicom_dictionary_std::tags;
use dicom_object::{InMemDicomObject, OpenFileOptions};

use super::{norm, spacing_of, NiftiGeometry, Volume};
use crate::{Error, Result};

/// SOP Class UID of the DICOM Segmentation Storage IOD.
const SEG_SOP_CLASS: &str = "1.2.840.10008.5.1.4.1.1.66.4";
/// Transfer syntaxes whose pixel data is native (uncompressed, little endian).
const NATIVE_TS: [&str; 3] = [
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.1.99",
];

/// A file with the DICM marker that could not be parsed, and why.
pub type UnreadableFile = (PathBuf, String);

/// Header facts of one DICOM file, read without its pixel data.
#[derive(Debug, Clone)]
pub struct DicomFile {
    /// The file.
    pub path: PathBuf,
    /// SOPInstanceUID (0008,0018).
    pub sop_uid: String,
    /// ImagePositionPatient (LPS, mm), if present.
    pub position: Option<[f64; 3]>,
    /// ImageOrientationPatient (row cosines, column cosines), if present.
    pub orientation: Option<[f64; 6]>,
    /// InstanceNumber (0 when absent).
    pub instance: i64,
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
    /// Its files (unsorted, in directory order).
    pub files: Vec<DicomFile>,
}

impl DicomSeries {
    /// The folder holding the series' first file.
    pub fn folder(&self) -> PathBuf {
        self.files[0]
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }
}

/// A DICOM SEG read onto its source image grid.
#[derive(Debug, Clone)]
pub struct SegLabels {
    /// Label volume on the image grid; voxel value = segment number (0 = background).
    pub labels: Volume,
    /// Names indexed by segment number (index 0 = "background").
    pub names: Vec<String>,
}

fn s(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<String> {
    obj.get(tag).and_then(|e| e.to_str().ok()).map(|v| {
        v.trim_matches(|c: char| c.is_whitespace() || c == '\0')
            .to_string()
    })
}

fn f64s(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<Vec<f64>> {
    obj.get(tag).and_then(|e| e.to_multi_float64().ok())
}

fn open(path: &Path, pixels: bool) -> Result<dicom_object::DefaultDicomObject> {
    let opts = OpenFileOptions::new();
    let opts = if pixels {
        opts
    } else {
        opts.read_until(tags::PIXEL_DATA)
    };
    opts.open_file(path)
        .map_err(|e| Error::invalid(path, format!("unreadable DICOM file: {e}")))
}

/// Whether `path` has the DICOM Part 10 "DICM" marker at byte 128.
fn has_dicm(path: &Path) -> bool {
    use std::io::Read;
    let mut b = [0u8; 132];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut b))
        .is_ok()
        && &b[128..132] == b"DICM"
}

/// Recursively scans `dir` for DICOM Part-10 files (files without the `DICM` marker are
/// skipped) and groups them by SeriesInstanceUID. Returns the series (sorted by UID) and the
/// files that carry the marker but could not be parsed, with the reason.
pub fn scan_dicom_dir(dir: &Path) -> Result<(Vec<DicomSeries>, Vec<UnreadableFile>)> {
    let mut paths = Vec::new();
    walk(dir, &mut paths)?;
    paths.sort();
    let mut series: BTreeMap<String, DicomSeries> = BTreeMap::new();
    let mut bad = Vec::new();
    // headers are read in parallel (rayon), then grouped in path order
    use rayon::prelude::*;
    let headers: Vec<Option<HeaderResult>> = paths.into_par_iter().map(read_header).collect();
    for h in headers.into_iter().flatten() {
        let (uid, facts, file) = match h {
            Ok(v) => v,
            Err(b) => {
                bad.push(b);
                continue;
            }
        };
        series
            .entry(uid.clone())
            .or_insert_with(|| DicomSeries {
                series_uid: uid,
                patient: facts.patient,
                modality: facts.modality,
                is_seg: facts.is_seg,
                referenced_series: facts.referenced_series,
                files: Vec::new(),
            })
            .files
            .push(file);
    }
    Ok((series.into_values().collect(), bad))
}

/// One header read: (series UID, series facts, file facts), or why the file is unreadable.
type HeaderResult = std::result::Result<(String, SeriesFacts, DicomFile), UnreadableFile>;

/// Series-level facts read from one file.
struct SeriesFacts {
    patient: String,
    modality: String,
    is_seg: bool,
    referenced_series: Option<String>,
}

/// Reads one file's header: `None` without the DICM marker, `Err` when unparsable.
fn read_header(p: PathBuf) -> Option<HeaderResult> {
    if !has_dicm(&p) {
        tracing::debug!("{}: no DICM marker, skipped", p.display());
        return None;
    }
    let obj = match open(&p, false) {
        Ok(o) => o,
        Err(e) => return Some(Err((p, e.to_string()))),
    };
    let uid = s(&obj, tags::SERIES_INSTANCE_UID).unwrap_or_default();
    let sop_class = s(&obj, tags::SOP_CLASS_UID).unwrap_or_default();
    let modality = s(&obj, tags::MODALITY).unwrap_or_default();
    let facts = SeriesFacts {
        is_seg: sop_class == SEG_SOP_CLASS || modality == "SEG",
        modality,
        referenced_series: obj
            .get(tags::REFERENCED_SERIES_SEQUENCE)
            .and_then(|e| e.items())
            .and_then(|it| it.first())
            .and_then(|item| s(item, tags::SERIES_INSTANCE_UID)),
        patient: s(&obj, tags::PATIENT_ID)
            .filter(|v| !v.is_empty())
            .or_else(|| s(&obj, tags::STUDY_INSTANCE_UID))
            .unwrap_or_default(),
    };
    let file = DicomFile {
        sop_uid: s(&obj, tags::SOP_INSTANCE_UID).unwrap_or_default(),
        position: f64s(&obj, tags::IMAGE_POSITION_PATIENT)
            .filter(|v| v.len() == 3)
            .map(|v| [v[0], v[1], v[2]]),
        orientation: f64s(&obj, tags::IMAGE_ORIENTATION_PATIENT)
            .filter(|v| v.len() == 6)
            .map(|v| [v[0], v[1], v[2], v[3], v[4], v[5]]),
        instance: s(&obj, tags::INSTANCE_NUMBER)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        path: p,
    };
    Some(Ok((uid, facts, file)))
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let p = e.map_err(|e| Error::io(dir, e))?.path();
        if p.is_dir() {
            walk(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

/// Geometry of a sorted series: files per position, normal, per-position projections.
struct Sorted<'a> {
    /// `slices[k]` = the files at the k-th position, in InstanceNumber order (one per time point).
    slices: Vec<Vec<&'a DicomFile>>,
    orientation: [f64; 6],
}

fn sort_series(series: &DicomSeries) -> Result<Sorted<'_>> {
    let name = series.folder();
    if series.files.is_empty() {
        return Err(Error::invalid(&name, "empty DICOM series"));
    }
    let mut keyed = Vec::new();
    let first_o = series.files[0].orientation;
    for f in &series.files {
        let pos = f.position.ok_or_else(|| {
            Error::invalid(
                &f.path,
                "no ImagePositionPatient (0020,0032): slices cannot be ordered",
            )
        })?;
        let o = f.orientation.ok_or_else(|| {
            Error::invalid(
                &f.path,
                "no ImageOrientationPatient (0020,0037): slice normal unknown",
            )
        })?;
        let fo = first_o.unwrap_or(o);
        if o.iter().zip(fo.iter()).any(|(a, b)| (a - b).abs() > 1e-4) {
            return Err(Error::invalid(
                &f.path,
                format!(
                    "series {}: ImageOrientationPatient differs between files",
                    series.series_uid
                ),
            ));
        }
        let n = cross([o[0], o[1], o[2]], [o[3], o[4], o[5]]);
        keyed.push((dot(pos, n), f));
    }
    keyed.sort_by(|a, b| {
        a.0.partial_cmp(&b.0)
            .unwrap()
            .then(a.1.instance.cmp(&b.1.instance))
            .then(a.1.path.cmp(&b.1.path))
    });
    let mut slices: Vec<Vec<&DicomFile>> = Vec::new();
    let mut last = f64::NAN;
    for (d, f) in keyed {
        if (d - last).abs() < 1e-3 {
            slices.last_mut().unwrap().push(f);
        } else {
            slices.push(vec![f]);
            last = d;
        }
    }
    Ok(Sorted {
        slices,
        orientation: series.files[0].orientation.unwrap(),
    })
}

/// Number of time points of a series (1 for a 3-D series). Errors when positions repeat
/// unevenly or a position/orientation tag is missing.
pub fn series_timepoints(series: &DicomSeries) -> Result<usize> {
    let sorted = sort_series(series)?;
    let t = sorted.slices[0].len();
    if sorted.slices.iter().any(|s| s.len() != t) {
        return Err(Error::invalid(
            series.folder(),
            format!(
                "series {}: positions repeat unevenly ({} files at {} positions)",
                series.series_uid,
                series.files.len(),
                sorted.slices.len()
            ),
        ));
    }
    Ok(t)
}

/// Reads a 3-D series into a RAS [`Volume`]. A 4-D series (repeated ImagePositionPatient) is an
/// error naming the series and its number of time points; read those with
/// [`read_dicom_timepoint`].
pub fn read_dicom_series(series: &DicomSeries) -> Result<Volume> {
    let t = series_timepoints(series)?;
    if t > 1 {
        return Err(Error::invalid(
            series.folder(),
            format!(
                "series {} is 4-D: {} files at {} positions = {t} time points (repeated ImagePositionPatient); refusing to stack it as one volume",
                series.series_uid,
                series.files.len(),
                series.files.len() / t
            ),
        ));
    }
    read_dicom_timepoint(series, 0)
}

/// Reads time point `t` (0-based; files at each position ordered by InstanceNumber) of a
/// series as a 3-D RAS [`Volume`].
pub fn read_dicom_timepoint(series: &DicomSeries, t: usize) -> Result<Volume> {
    let nt = series_timepoints(series)?;
    if t >= nt {
        return Err(Error::invalid(
            series.folder(),
            format!("time point {t} requested, series has {nt}"),
        ));
    }
    let sorted = sort_series(series)?;
    let files: Vec<&DicomFile> = sorted.slices.iter().map(|s| s[t]).collect();
    let mut data = Vec::new();
    let mut grid: Option<(usize, usize, [f64; 2])> = None;
    for f in &files {
        let obj = open(&f.path, true)?;
        let (rows, cols, px, values) = decode_slice(&obj, &f.path)?;
        match grid {
            None => grid = Some((rows, cols, px)),
            Some((r, c, _)) if r != rows || c != cols => {
                return Err(Error::Shape {
                    path: f.path.clone(),
                    case: series.series_uid.clone(),
                    expected: vec![r, c],
                    found: vec![rows, cols],
                })
            }
            _ => {}
        }
        data.extend_from_slice(&values);
    }
    let (rows, cols, px) = grid.unwrap();
    let o = sorted.orientation;
    let (rc, cc) = ([o[0], o[1], o[2]], [o[3], o[4], o[5]]);
    let p0 = files[0].position.unwrap();
    let nz = files.len();
    let step = if nz > 1 {
        let pl = files[nz - 1].position.unwrap();
        [0, 1, 2].map(|i| (pl[i] - p0[i]) / (nz - 1) as f64)
    } else {
        let n = cross(rc, cc);
        n.map(|v| v * px[0].max(px[1]))
    };
    check_even_gaps(&files, series)?;
    // LPS columns: i0 along the row direction with column spacing px[1], i1 along the column
    // direction with row spacing px[0].
    let mut a = [[0.0; 4]; 4];
    for i in 0..3 {
        a[i][0] = rc[i] * px[1];
        a[i][1] = cc[i] * px[0];
        a[i][2] = step[i];
        a[i][3] = p0[i];
    }
    a[3][3] = 1.0;
    for row in a.iter_mut().take(2) {
        row.iter_mut().for_each(|v| *v = -*v);
    }
    let dims = [cols, rows, nz];
    let spacing = spacing_of(&a);
    Ok(Volume {
        data,
        dims,
        header: NiftiGeometry::from_affine(dims, &a, spacing),
        affine: a,
        spacing,
        source: series.folder(),
    })
}

/// Uneven gaps (> 1 % of the mean step, or a missing slice) are reported as an error.
fn check_even_gaps(files: &[&DicomFile], series: &DicomSeries) -> Result<()> {
    if files.len() < 3 {
        return Ok(());
    }
    let d: Vec<f64> = files
        .windows(2)
        .map(|w| {
            let (a, b) = (w[0].position.unwrap(), w[1].position.unwrap());
            norm([b[0] - a[0], b[1] - a[1], b[2] - a[2]])
        })
        .collect();
    let mean = d.iter().sum::<f64>() / d.len() as f64;
    if d.iter()
        .any(|x| (x - mean).abs() > 0.01 * mean.max(1e-6) + 1e-3)
    {
        return Err(Error::invalid(
            series.folder(),
            format!(
                "series {}: uneven slice gaps {:.3}..{:.3} mm (missing slice?)",
                series.series_uid,
                d.iter().cloned().fold(f64::INFINITY, f64::min),
                d.iter().cloned().fold(0.0, f64::max)
            ),
        ));
    }
    Ok(())
}

/// Decodes one single-frame native image: (rows, cols, PixelSpacing [row, col], rescaled values).
fn decode_slice(
    obj: &dicom_object::DefaultDicomObject,
    path: &Path,
) -> Result<(usize, usize, [f64; 2], Vec<f32>)> {
    let ts = obj
        .meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .to_string();
    if !NATIVE_TS.contains(&ts.as_str()) {
        return Err(Error::invalid(
            path,
            format!("compressed or big-endian transfer syntax {ts} is not supported (decompress with e.g. `gdcmconv --raw` first)"),
        ));
    }
    let int = |tag, what: &str| -> Result<usize> {
        obj.get(tag)
            .and_then(|e| e.to_int::<i64>().ok())
            .map(|v| v as usize)
            .ok_or_else(|| Error::invalid(path, format!("missing {what}")))
    };
    let rows = int(tags::ROWS, "Rows (0028,0010)")?;
    let cols = int(tags::COLUMNS, "Columns (0028,0011)")?;
    let bits = int(tags::BITS_ALLOCATED, "BitsAllocated (0028,0100)")?;
    let signed = obj
        .get(tags::PIXEL_REPRESENTATION)
        .and_then(|e| e.to_int::<i64>().ok())
        .unwrap_or(0)
        == 1;
    let spp = obj
        .get(tags::SAMPLES_PER_PIXEL)
        .and_then(|e| e.to_int::<i64>().ok())
        .unwrap_or(1);
    if spp != 1 {
        return Err(Error::invalid(
            path,
            format!("SamplesPerPixel = {spp}; only grayscale is supported"),
        ));
    }
    let px = f64s(obj, tags::PIXEL_SPACING)
        .filter(|v| v.len() == 2)
        .map(|v| [v[0], v[1]])
        .ok_or_else(|| Error::invalid(path, "missing PixelSpacing (0028,0030)"))?;
    let slope = f64s(obj, tags::RESCALE_SLOPE)
        .and_then(|v| v.first().copied())
        .unwrap_or(1.0);
    let inter = f64s(obj, tags::RESCALE_INTERCEPT)
        .and_then(|v| v.first().copied())
        .unwrap_or(0.0);
    let raw = pixel_bytes(obj, path)?;
    let n = rows * cols;
    let need = n * bits / 8;
    if raw.len() < need {
        return Err(Error::invalid(
            path,
            format!(
                "pixel data has {} bytes, {rows}×{cols}×{bits} bits needs {need}",
                raw.len()
            ),
        ));
    }
    let conv = |v: f64| (v * slope + inter) as f32;
    let values: Vec<f32> = match (bits, signed) {
        (8, false) => raw[..n].iter().map(|&b| conv(b as f64)).collect(),
        (8, true) => raw[..n].iter().map(|&b| conv(b as i8 as f64)).collect(),
        (16, false) => raw[..need]
            .chunks_exact(2)
            .map(|b| conv(u16::from_le_bytes([b[0], b[1]]) as f64))
            .collect(),
        (16, true) => raw[..need]
            .chunks_exact(2)
            .map(|b| conv(i16::from_le_bytes([b[0], b[1]]) as f64))
            .collect(),
        (32, false) => raw[..need]
            .chunks_exact(4)
            .map(|b| conv(u32::from_le_bytes(b.try_into().unwrap()) as f64))
            .collect(),
        (32, true) => raw[..need]
            .chunks_exact(4)
            .map(|b| conv(i32::from_le_bytes(b.try_into().unwrap()) as f64))
            .collect(),
        _ => {
            return Err(Error::invalid(
                path,
                format!("BitsAllocated = {bits} is not supported"),
            ))
        }
    };
    Ok((rows, cols, px, values))
}

/// The PixelData (7FE0,0010) bytes in little-endian order.
fn pixel_bytes(obj: &InMemDicomObject, path: &Path) -> Result<Vec<u8>> {
    use dicom_core::value::{PrimitiveValue, Value};
    let e = obj
        .get(tags::PIXEL_DATA)
        .ok_or_else(|| Error::invalid(path, "no PixelData (7FE0,0010)"))?;
    match e.value() {
        Value::Primitive(PrimitiveValue::U16(v)) => {
            Ok(v.iter().flat_map(|x| x.to_le_bytes()).collect())
        }
        Value::Primitive(PrimitiveValue::I16(v)) => {
            Ok(v.iter().flat_map(|x| x.to_le_bytes()).collect())
        }
        Value::Primitive(p) => Ok(p.to_bytes().into_owned()),
        _ => Err(Error::invalid(
            path,
            "encapsulated (compressed) PixelData is not supported",
        )),
    }
}

/// Reads a DICOM SEG file (binary, BitsAllocated 1, or 8-bit frames thresholded at
/// zero) onto the grid of `image`, the volume read from `series`. Frames are mapped to slices via
/// ReferencedSOPInstanceUID (0008,1155) in DerivationImageSequence/SourceImageSequence, else by
/// PlanePositionSequence ImagePositionPatient projected on the slice normal. Voxel value =
/// ReferencedSegmentNumber (0062,000B).
pub fn read_dicom_seg(seg: &Path, series: &DicomSeries, image: &Volume) -> Result<SegLabels> {
    let obj = open(seg, true)?;
    let rows = obj
        .get(tags::ROWS)
        .and_then(|e| e.to_int::<i64>().ok())
        .unwrap_or(0) as usize;
    let cols = obj
        .get(tags::COLUMNS)
        .and_then(|e| e.to_int::<i64>().ok())
        .unwrap_or(0) as usize;
    if [cols, rows] != [image.dims[0], image.dims[1]] {
        return Err(Error::Shape {
            path: seg.to_path_buf(),
            case: series.series_uid.clone(),
            expected: vec![image.dims[1], image.dims[0]],
            found: vec![rows, cols],
        });
    }
    let bits = obj
        .get(tags::BITS_ALLOCATED)
        .and_then(|e| e.to_int::<i64>().ok())
        .unwrap_or(1) as usize;
    let names = segment_names(&obj);
    let frames = obj
        .get(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
        .and_then(|e| e.items())
        .ok_or_else(|| Error::invalid(seg, "no PerFrameFunctionalGroupsSequence (5200,9230)"))?;
    let raw = pixel_bytes(&obj, seg)?;
    // slice lookup tables of the source series (time point 0)
    let sorted = sort_series(series)?;
    let o = sorted.orientation;
    let normal = cross([o[0], o[1], o[2]], [o[3], o[4], o[5]]);
    let slice_of_uid: BTreeMap<&str, usize> = sorted
        .slices
        .iter()
        .enumerate()
        .map(|(k, f)| (f[0].sop_uid.as_str(), k))
        .collect();
    let proj: Vec<f64> = sorted
        .slices
        .iter()
        .map(|f| dot(f[0].position.unwrap(), normal))
        .collect();
    let n = rows * cols;
    let mut labels = vec![0f32; image.len()];
    for (fi, item) in frames.iter().enumerate() {
        let seg_num = item
            .get(tags::SEGMENT_IDENTIFICATION_SEQUENCE)
            .and_then(|e| e.items())
            .and_then(|it| it.first())
            .and_then(|it| it.get(tags::REFERENCED_SEGMENT_NUMBER))
            .and_then(|e| e.to_int::<i64>().ok())
            .unwrap_or(1) as f32;
        let by_uid = item
            .get(tags::DERIVATION_IMAGE_SEQUENCE)
            .and_then(|e| e.items())
            .and_then(|it| it.first())
            .and_then(|it| it.get(tags::SOURCE_IMAGE_SEQUENCE))
            .and_then(|e| e.items())
            .and_then(|it| it.first())
            .and_then(|it| s(it, tags::REFERENCED_SOP_INSTANCE_UID))
            .and_then(|uid| slice_of_uid.get(uid.as_str()).copied());
        let by_pos = || {
            let p = item
                .get(tags::PLANE_POSITION_SEQUENCE)
                .and_then(|e| e.items())
                .and_then(|it| it.first())
                .and_then(|it| f64s(it, tags::IMAGE_POSITION_PATIENT))?;
            let d = dot([p[0], p[1], p[2]], normal);
            proj.iter().position(|q| (q - d).abs() < 1e-2)
        };
        let k = by_uid.or_else(by_pos).ok_or_else(|| {
            Error::invalid(
                seg,
                format!(
                    "frame {fi} references no slice of series {}",
                    series.series_uid
                ),
            )
        })?;
        for i in 0..n {
            let on = if bits == 1 {
                let b = fi * n + i;
                raw.get(b / 8).is_some_and(|v| (v >> (b % 8)) & 1 == 1)
            } else {
                raw.get(fi * n + i).is_some_and(|&v| v > 0)
            };
            if on {
                labels[k * n + i] = seg_num;
            }
        }
    }
    let mut vol = image.clone();
    vol.data = labels;
    vol.source = seg.to_path_buf();
    Ok(SegLabels { labels: vol, names })
}

/// Class names of a SEG object from its SegmentSequence (0062,0002): index = SegmentNumber,
/// index 0 = "background".
fn segment_names(obj: &InMemDicomObject) -> Vec<String> {
    let mut names = vec!["background".to_string()];
    if let Some(items) = obj.get(tags::SEGMENT_SEQUENCE).and_then(|e| e.items()) {
        for it in items {
            let num = it
                .get(tags::SEGMENT_NUMBER)
                .and_then(|e| e.to_int::<i64>().ok())
                .unwrap_or(names.len() as i64) as usize;
            if names.len() <= num {
                names.resize(num + 1, String::new());
            }
            names[num] = s(it, tags::SEGMENT_LABEL).unwrap_or_else(|| format!("segment {num}"));
        }
    }
    names
}

/// The class names of a DICOM SEG file (header only), see [`read_dicom_seg`].
pub fn read_seg_names(seg: &Path) -> Result<Vec<String>> {
    let obj = open(seg, false)?;
    Ok(segment_names(&obj))
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
