//! DICOM SEG (Segmentation Storage): binary (BitsAllocated 1) or 8-bit frames mapped onto the
//! grid of the referenced image series. Frames are placed via ReferencedSOPInstanceUID
//! (0008,1155) in DerivationImageSequence/SourceImageSequence, else via PlanePositionSequence
//! ImagePositionPatient projected on the slice normal. Voxel value = ReferencedSegmentNumber
//! (0062,000B). Truncated pixel data is an error, never background.
use std::collections::BTreeMap;
use std::path::Path;

use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::series::sort_series;
use super::{dot, f64s, first_item, int, open, s, vec3, DicomSeries, SegLabels};
use crate::volume::Volume;
use crate::{Error, Result};

/// Reads a DICOM SEG file (binary, BitsAllocated 1, or 8-bit frames thresholded at zero) onto
/// the grid of `image`, the volume read from `series` (time point 0). Errors name the SEG file:
/// a grid that differs from the image, truncated pixel data, a frame that references no slice.
pub fn read_dicom_seg(seg: &Path, series: &DicomSeries, image: &Volume) -> Result<SegLabels> {
    let obj = open(seg, true)?;
    let rows = int(&obj, tags::ROWS).unwrap_or(0).max(0) as usize;
    let cols = int(&obj, tags::COLUMNS).unwrap_or(0).max(0) as usize;
    if [cols, rows] != [image.dims[0], image.dims[1]] {
        return Err(Error::Shape {
            path: seg.to_path_buf(),
            case: series.series_uid.clone(),
            expected: vec![image.dims[1], image.dims[0]],
            found: vec![rows, cols],
        });
    }
    let bits = int(&obj, tags::BITS_ALLOCATED).unwrap_or(1);
    let names = segment_names(&obj);
    let frames = obj
        .get(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
        .and_then(|e| e.items())
        .ok_or_else(|| Error::invalid(seg, "no PerFrameFunctionalGroupsSequence (5200,9230)"))?;
    let declared = s(&obj, tags::NUMBER_OF_FRAMES)
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(frames.len());
    if declared != frames.len() {
        return Err(Error::invalid(
            seg,
            format!(
                "NumberOfFrames = {declared} but {} per-frame functional group items",
                frames.len()
            ),
        ));
    }
    let raw = seg_pixels(&obj, seg, bits, frames.len() * rows * cols)?;
    let lookup = SliceLookup::new(series)?;
    let n = rows * cols;
    let mut labels = vec![0f32; image.len()];
    for (fi, item) in frames.iter().enumerate() {
        let seg_num = first_item(item, tags::SEGMENT_IDENTIFICATION_SEQUENCE)
            .and_then(|it| int(it, tags::REFERENCED_SEGMENT_NUMBER))
            .unwrap_or(1) as f32;
        let k = lookup.slice_of(item).ok_or_else(|| {
            Error::invalid(
                seg,
                format!(
                    "frame {} references no slice of series {}",
                    fi + 1,
                    series.series_uid
                ),
            )
        })?;
        let dst = labels.get_mut(k * n..(k + 1) * n).ok_or_else(|| {
            Error::invalid(seg, format!("frame {} maps outside the image", fi + 1))
        })?;
        for (i, v) in dst.iter_mut().enumerate() {
            let b = fi * n + i;
            let on = if bits == 1 {
                (raw[b / 8] >> (b % 8)) & 1 == 1
            } else {
                raw[b] > 0
            };
            if on {
                *v = seg_num;
            }
        }
    }
    let mut vol = image.clone();
    vol.data = labels;
    vol.source = seg.to_path_buf();
    Ok(SegLabels { labels: vol, names })
}

/// The SEG's native pixel bytes, checked to hold `pixels` pixels of `bits` (1 or 8).
fn seg_pixels(obj: &InMemDicomObject, seg: &Path, bits: i64, pixels: usize) -> Result<Vec<u8>> {
    use dicom_core::value::Value;
    let need = match bits {
        1 => pixels.div_ceil(8),
        8 => pixels,
        b => {
            return Err(Error::invalid(
                seg,
                format!("DICOM SEG with BitsAllocated {b} is not supported (1 or 8)"),
            ))
        }
    };
    let e = obj
        .get(tags::PIXEL_DATA)
        .ok_or_else(|| Error::invalid(seg, "no PixelData (7FE0,0010)"))?;
    let raw = match e.value() {
        Value::Primitive(p) => p.to_bytes().into_owned(),
        _ => {
            return Err(Error::invalid(
                seg,
                "compressed (encapsulated) DICOM SEG pixel data is not supported",
            ))
        }
    };
    if raw.len() < need {
        return Err(Error::invalid(
            seg,
            format!(
                "truncated pixel data: {} bytes, the SEG's frames of {bits}-bit pixels need {need} ({pixels} pixels)",
                raw.len()
            ),
        ));
    }
    Ok(raw)
}

/// Maps a SEG frame to a slice of the source series (time point 0).
struct SliceLookup {
    by_uid: BTreeMap<String, usize>,
    normal: [f64; 3],
    proj: Vec<f64>,
}

impl SliceLookup {
    fn new(series: &DicomSeries) -> Result<Self> {
        let sorted = sort_series(series)?;
        let normal = sorted.normal();
        let mut by_uid = BTreeMap::new();
        let mut proj = Vec::new();
        for (k, slots) in sorted.slices.iter().enumerate() {
            if let Some(first) = slots.first() {
                by_uid.entry(first.file.sop_uid.clone()).or_insert(k);
                proj.push(dot(first.frame.position.unwrap_or_default(), normal));
            }
        }
        Ok(SliceLookup {
            by_uid,
            normal,
            proj,
        })
    }

    fn slice_of(&self, item: &InMemDicomObject) -> Option<usize> {
        let by_uid = first_item(item, tags::DERIVATION_IMAGE_SEQUENCE)
            .and_then(|it| first_item(it, tags::SOURCE_IMAGE_SEQUENCE))
            .and_then(|it| s(it, tags::REFERENCED_SOP_INSTANCE_UID))
            .and_then(|uid| self.by_uid.get(&uid).copied());
        by_uid.or_else(|| {
            let p = first_item(item, tags::PLANE_POSITION_SEQUENCE)
                .and_then(|it| f64s(it, tags::IMAGE_POSITION_PATIENT))
                .and_then(vec3)?;
            let d = dot(p, self.normal);
            self.proj.iter().position(|q| (q - d).abs() < 1e-2)
        })
    }
}

/// Class names of a SEG object from its SegmentSequence (0062,0002): index = SegmentNumber,
/// index 0 = "background".
fn segment_names(obj: &InMemDicomObject) -> Vec<String> {
    let mut names = vec!["background".to_string()];
    if let Some(items) = obj.get(tags::SEGMENT_SEQUENCE).and_then(|e| e.items()) {
        for it in items {
            let num = int(it, tags::SEGMENT_NUMBER).unwrap_or(names.len() as i64);
            let Ok(num) = usize::try_from(num) else {
                continue;
            };
            if num > 255 {
                continue;
            }
            if names.len() <= num {
                names.resize(num + 1, String::new());
            }
            names[num] = s(it, tags::SEGMENT_LABEL).unwrap_or_else(|| format!("segment {num}"));
        }
    }
    names
}

/// The class names of a DICOM SEG file (header only), see [`read_dicom_seg`].
pub(crate) fn read_seg_names(seg: &Path) -> Result<Vec<String>> {
    let obj = open(seg, false)?;
    Ok(segment_names(&obj))
}
