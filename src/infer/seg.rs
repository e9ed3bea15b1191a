//! DICOM SEG output (Segmentation Storage, SOP Class 1.2.840.10008.5.1.4.1.1.66.4, PS3.3
//! A.51) for a mask predicted on a DICOM series, written with dicom-rs (Explicit VR Little
//! Endian). It joins the source study (Patient and General Study modules copied) and its
//! geometry: Frame of Reference UID (0020,0052), Shared Functional Groups with the series'
//! ImageOrientationPatient (0020,0037) and PixelSpacing (0028,0030), and one frame per
//! (segment, source slice) whose PlanePositionSequence (0020,9113) holds that slice's
//! ImagePositionPatient (0020,0032) and whose DerivationImageSequence (0008,9124) references
//! the source SOP Instance (SpatialLocationsPreserved (0028,135A) = YES). The Common Instance
//! Reference module lists every source instance under ReferencedSeriesSequence (0008,1115).
//! Segments: one per foreground class, labelled with the sidecar's class names,
//! SegmentAlgorithmType AUTOMATIC. SegmentationType BINARY: one bit per pixel, packed across
//! frames (PS3.5 8.1.1). Frame pixel (row r, column c) of source slice k is mask voxel
//! (c, r, k), the voxel order `volume::read_dicom_series` uses.
use crate::volume::{DicomFile, DicomSeries, Volume};
use crate::{Error, Result};
use dicom_core::value::{DataSetSequence, PrimitiveValue};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{InMemDicomObject, OpenFileOptions};
use std::path::Path;

type Obj = InMemDicomObject;

fn el(tag: Tag, vr: VR, v: impl Into<PrimitiveValue>) -> DataElement<Obj> {
    DataElement::new(tag, vr, v.into())
}

fn strs(tag: Tag, vr: VR, v: Vec<String>) -> DataElement<Obj> {
    DataElement::new(tag, vr, PrimitiveValue::Strs(v.into()))
}

fn seq(tag: Tag, items: Vec<Obj>) -> DataElement<Obj> {
    DataElement::new(tag, VR::SQ, DataSetSequence::from(items))
}

fn code(value: &str, scheme: &str, meaning: &str) -> Obj {
    Obj::from_element_iter([
        el(tags::CODE_VALUE, VR::SH, value),
        el(tags::CODING_SCHEME_DESIGNATOR, VR::SH, scheme),
        el(tags::CODE_MEANING, VR::LO, meaning),
    ])
}

/// A decimal string (DS) of at most 16 characters.
fn ds(v: f64) -> String {
    for d in (0..=10).rev() {
        let s = format!("{v:.d$}");
        let s = if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        };
        let s = if s == "-0" { "0".to_string() } else { s };
        if s.len() <= 16 {
            return s;
        }
    }
    format!("{v:.3e}")
}

/// A new UID under the `2.25` root (PS3.5 B.2): a 128-bit number from SHA-256 of `seed`,
/// the time and the process id.
fn new_uid(seed: &str) -> String {
    use sha2::Digest;
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let h = sha2::Sha256::digest(format!("{seed}/{t}/{}", std::process::id()));
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[..16]);
    format!("2.25.{}", u128::from_be_bytes(b))
}

/// Today's date (DA) and the time (TM), UTC.
fn now() -> (String, String) {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // civil_from_days (H. Hinnant)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        format!("{y:04}{m:02}{d:02}"),
        format!("{:02}{:02}{:02}", rem / 3600, rem / 60 % 60, rem % 60),
    )
}

/// The source slices in the order of the volume's third axis (ascending position along the
/// slice normal, as `volume::read_dicom_series` sorts them).
fn sorted_files<'a>(series: &'a DicomSeries, vol: &Volume) -> Result<Vec<&'a DicomFile>> {
    let folder = series.folder();
    let mut keyed = Vec::with_capacity(series.files.len());
    for f in &series.files {
        let (Some(p), Some(o)) = (f.position, f.orientation) else {
            return Err(Error::invalid(
                &f.path,
                "no ImagePositionPatient/ImageOrientationPatient: cannot place a SEG frame",
            ));
        };
        let n = [
            o[1] * o[5] - o[2] * o[4],
            o[2] * o[3] - o[0] * o[5],
            o[0] * o[4] - o[1] * o[3],
        ];
        keyed.push((p[0] * n[0] + p[1] * n[1] + p[2] * n[2], f));
    }
    keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.instance.cmp(&b.1.instance)));
    if keyed.len() != vol.dims[2] {
        return Err(Error::invalid(
            folder,
            format!(
                "{} files for {} slices: a DICOM SEG is written for 3-D series only",
                keyed.len(),
                vol.dims[2]
            ),
        ));
    }
    Ok(keyed.into_iter().map(|(_, f)| f).collect())
}

/// Attributes copied from the first source file (Patient, General Study, Frame of Reference).
const COPIED: [(Tag, VR); 12] = [
    (tags::PATIENT_NAME, VR::PN),
    (tags::PATIENT_ID, VR::LO),
    (tags::PATIENT_BIRTH_DATE, VR::DA),
    (tags::PATIENT_SEX, VR::CS),
    (tags::STUDY_INSTANCE_UID, VR::UI),
    (tags::STUDY_DATE, VR::DA),
    (tags::STUDY_TIME, VR::TM),
    (tags::REFERRING_PHYSICIAN_NAME, VR::PN),
    (tags::STUDY_ID, VR::SH),
    (tags::ACCESSION_NUMBER, VR::SH),
    (tags::FRAME_OF_REFERENCE_UID, VR::UI),
    (tags::POSITION_REFERENCE_INDICATOR, VR::LO),
];

/// What a SEG needs from one source file.
struct SourceSlice {
    class_uid: String,
    instance_uid: String,
    position: Vec<String>,
}

fn text(obj: &Obj, tag: Tag) -> Option<String> {
    obj.get(tag).and_then(|e| e.to_str().ok()).map(|s| {
        s.trim_matches(|c: char| c.is_whitespace() || c == '\0')
            .to_string()
    })
}

fn read_source(f: &DicomFile) -> Result<(Obj, SourceSlice)> {
    let obj = OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(&f.path)
        .map_err(|e| Error::invalid(&f.path, format!("unreadable DICOM file: {e}")))?
        .into_inner();
    let p = f.position.unwrap_or_default();
    let slice = SourceSlice {
        class_uid: text(&obj, tags::SOP_CLASS_UID).unwrap_or_default(),
        instance_uid: f.sop_uid.clone(),
        position: p.iter().map(|&v| ds(v)).collect(),
    };
    if slice.class_uid.is_empty() || slice.instance_uid.is_empty() {
        return Err(Error::invalid(
            &f.path,
            "no SOPClassUID/SOPInstanceUID: a SEG cannot reference this file",
        ));
    }
    Ok((obj, slice))
}

/// The facts a SEG is written from.
pub struct SegInput<'a> {
    /// The source series.
    pub series: &'a DicomSeries,
    /// The volume read from it (grid of `mask`).
    pub volume: &'a Volume,
    /// The predicted class per voxel, in the volume's voxel order.
    pub mask: &'a [u8],
    /// Class names, index = class; one segment per class ≥ 1.
    pub class_names: &'a [String],
    /// Written into SeriesDescription / ContentDescription (e.g. the model file name).
    pub description: &'a str,
}

/// Writes `input` as a DICOM SEG file at `path` (see the module docs).
pub fn write_seg(path: &Path, input: &SegInput) -> Result<()> {
    let files = sorted_files(input.series, input.volume)?;
    let mut sources = Vec::with_capacity(files.len());
    let mut first: Option<Obj> = None;
    for f in &files {
        let (obj, s) = read_source(f)?;
        first.get_or_insert(obj);
        sources.push(s);
    }
    let first = first.ok_or_else(|| Error::invalid(input.series.folder(), "empty series"))?;
    if text(&first, tags::FRAME_OF_REFERENCE_UID).is_none_or(|s| s.is_empty()) {
        return Err(Error::invalid(
            input.series.folder(),
            "no FrameOfReferenceUID (0020,0052): a SEG cannot share the series' geometry",
        ));
    }
    let mut obj = header(&first, input)?;
    let segments = input.class_names.len().saturating_sub(1);
    obj.put(seq(
        tags::SEGMENT_SEQUENCE,
        segment_items(input.class_names),
    ));
    obj.put(seq(
        tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE,
        vec![shared_groups(&first, input.volume)?],
    ));
    let mut frames = Vec::with_capacity(segments * sources.len());
    for s in 1..=segments {
        for (k, src) in sources.iter().enumerate() {
            frames.push(frame_item(s, k, src));
        }
    }
    obj.put(el(tags::NUMBER_OF_FRAMES, VR::IS, frames.len().to_string()));
    obj.put(seq(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, frames));
    obj.put(seq(
        tags::REFERENCED_SERIES_SEQUENCE,
        vec![referenced_series(input.series, &sources)],
    ));
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        PrimitiveValue::from(pack_bits(input, segments)),
    ));
    let file = obj
        .with_meta(
            dicom_object::meta::FileMetaTableBuilder::new()
                .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN),
        )
        .map_err(|e| Error::invalid(path, format!("building the SEG file meta: {e}")))?;
    file.write_to_file(path)
        .map_err(|e| Error::invalid(path, format!("writing the DICOM SEG: {e}")))
}

/// Patient/Study (copied), Series, Equipment, Image, Segmentation Image and dimension modules.
fn header(src: &Obj, input: &SegInput) -> Result<Obj> {
    let mut o = Obj::new_empty();
    for (tag, vr) in COPIED {
        match src.get(tag) {
            Some(e) => o.put(e.clone()),
            None => o.put(el(tag, vr, "")),
        };
    }
    let (date, time) = now();
    let seed = format!("{}/{}", input.series.series_uid, input.description);
    let dim_uid = new_uid(&format!("{seed}/dimension"));
    let (rows, cols) = (input.volume.dims[1], input.volume.dims[0]);
    let version = format!("dmnet {}", crate::VERSION);
    for e in [
        el(tags::SOP_CLASS_UID, VR::UI, uids::SEGMENTATION_STORAGE),
        el(
            tags::SOP_INSTANCE_UID,
            VR::UI,
            new_uid(&format!("{seed}/sop")),
        ),
        el(
            tags::SERIES_INSTANCE_UID,
            VR::UI,
            new_uid(&format!("{seed}/series")),
        ),
        el(tags::MODALITY, VR::CS, "SEG"),
        el(tags::SERIES_NUMBER, VR::IS, "901"),
        el(tags::SERIES_DESCRIPTION, VR::LO, "dmnet segmentation"),
        el(tags::SERIES_DATE, VR::DA, date.as_str()),
        el(tags::SERIES_TIME, VR::TM, time.as_str()),
        el(tags::CONTENT_DATE, VR::DA, date.as_str()),
        el(tags::CONTENT_TIME, VR::TM, time.as_str()),
        el(tags::INSTANCE_NUMBER, VR::IS, "1"),
        el(tags::MANUFACTURER, VR::LO, "dmnet"),
        el(tags::MANUFACTURER_MODEL_NAME, VR::LO, "dmnet"),
        el(tags::DEVICE_SERIAL_NUMBER, VR::LO, "0"),
        el(tags::SOFTWARE_VERSIONS, VR::LO, version.as_str()),
        strs(
            tags::IMAGE_TYPE,
            VR::CS,
            vec!["DERIVED".into(), "PRIMARY".into()],
        ),
        el(tags::CONTENT_LABEL, VR::CS, "DMNET"),
        el(tags::CONTENT_DESCRIPTION, VR::LO, input.description),
        el(tags::CONTENT_CREATOR_NAME, VR::PN, ""),
        el(tags::SEGMENTATION_TYPE, VR::CS, "BINARY"),
        el(tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00"),
        el(tags::SAMPLES_PER_PIXEL, VR::US, 1u16),
        el(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
        el(tags::ROWS, VR::US, rows as u16),
        el(tags::COLUMNS, VR::US, cols as u16),
        el(tags::BITS_ALLOCATED, VR::US, 1u16),
        el(tags::BITS_STORED, VR::US, 1u16),
        el(tags::HIGH_BIT, VR::US, 0u16),
        el(tags::PIXEL_REPRESENTATION, VR::US, 0u16),
        seq(
            tags::DIMENSION_ORGANIZATION_SEQUENCE,
            vec![Obj::from_element_iter([el(
                tags::DIMENSION_ORGANIZATION_UID,
                VR::UI,
                dim_uid.as_str(),
            )])],
        ),
        seq(
            tags::DIMENSION_INDEX_SEQUENCE,
            vec![
                dimension(
                    &dim_uid,
                    tags::REFERENCED_SEGMENT_NUMBER,
                    tags::SEGMENT_IDENTIFICATION_SEQUENCE,
                    "ReferencedSegmentNumber",
                ),
                dimension(
                    &dim_uid,
                    tags::IMAGE_POSITION_PATIENT,
                    tags::PLANE_POSITION_SEQUENCE,
                    "ImagePositionPatient",
                ),
            ],
        ),
    ] {
        o.put(e);
    }
    if rows > u16::MAX as usize || cols > u16::MAX as usize {
        return Err(Error::invalid(
            input.series.folder(),
            "slices larger than 65535 pixels cannot be written as DICOM",
        ));
    }
    Ok(o)
}

fn dimension(uid: &str, pointer: Tag, group: Tag, label: &str) -> Obj {
    Obj::from_element_iter([
        el(tags::DIMENSION_ORGANIZATION_UID, VR::UI, uid),
        el(tags::DIMENSION_INDEX_POINTER, VR::AT, pointer),
        el(tags::FUNCTIONAL_GROUP_POINTER, VR::AT, group),
        el(tags::DIMENSION_DESCRIPTION_LABEL, VR::LO, label),
    ])
}

/// One SegmentSequence item per class ≥ 1, named after the class.
fn segment_items(class_names: &[String]) -> Vec<Obj> {
    class_names
        .iter()
        .enumerate()
        .skip(1)
        .map(|(i, name)| {
            Obj::from_element_iter([
                el(tags::SEGMENT_NUMBER, VR::US, i as u16),
                el(tags::SEGMENT_LABEL, VR::LO, name.as_str()),
                el(tags::SEGMENT_ALGORITHM_TYPE, VR::CS, "AUTOMATIC"),
                el(tags::SEGMENT_ALGORITHM_NAME, VR::LO, "dmnet"),
                seq(
                    tags::SEGMENTED_PROPERTY_CATEGORY_CODE_SEQUENCE,
                    vec![code("91723000", "SCT", "Anatomical Structure")],
                ),
                seq(
                    tags::SEGMENTED_PROPERTY_TYPE_CODE_SEQUENCE,
                    vec![code("85756007", "SCT", "Tissue")],
                ),
            ])
        })
        .collect()
}

/// Orientation and pixel measures shared by every frame, from the source series.
fn shared_groups(src: &Obj, vol: &Volume) -> Result<Obj> {
    let copy = |tag: Tag, what: &str| {
        src.get(tag)
            .cloned()
            .ok_or_else(|| Error::invalid(&vol.source, format!("source series has no {what}")))
    };
    let mut measures = Obj::new_empty();
    measures.put(copy(tags::PIXEL_SPACING, "PixelSpacing (0028,0030)")?);
    let step = ds(vol.spacing[2]);
    let thickness = text(src, tags::SLICE_THICKNESS).filter(|s| !s.is_empty());
    measures.put(el(
        tags::SLICE_THICKNESS,
        VR::DS,
        thickness.unwrap_or(step.clone()),
    ));
    measures.put(el(tags::SPACING_BETWEEN_SLICES, VR::DS, step));
    let orientation = Obj::from_element_iter([copy(
        tags::IMAGE_ORIENTATION_PATIENT,
        "ImageOrientationPatient (0020,0037)",
    )?]);
    Ok(Obj::from_element_iter([
        seq(tags::PIXEL_MEASURES_SEQUENCE, vec![measures]),
        seq(tags::PLANE_ORIENTATION_SEQUENCE, vec![orientation]),
    ]))
}

/// The per-frame functional groups of segment `s` on source slice `k`.
fn frame_item(s: usize, k: usize, src: &SourceSlice) -> Obj {
    let source = Obj::from_element_iter([
        el(
            tags::REFERENCED_SOP_CLASS_UID,
            VR::UI,
            src.class_uid.as_str(),
        ),
        el(
            tags::REFERENCED_SOP_INSTANCE_UID,
            VR::UI,
            src.instance_uid.as_str(),
        ),
        el(tags::SPATIAL_LOCATIONS_PRESERVED, VR::CS, "YES"),
        seq(
            tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE,
            vec![code(
                "121322",
                "DCM",
                "Source image for image processing operation",
            )],
        ),
    ]);
    let derivation = Obj::from_element_iter([
        seq(tags::SOURCE_IMAGE_SEQUENCE, vec![source]),
        seq(
            tags::DERIVATION_CODE_SEQUENCE,
            vec![code("113076", "DCM", "Segmentation")],
        ),
    ]);
    let index = PrimitiveValue::U32([s as u32, k as u32 + 1].as_slice().into());
    Obj::from_element_iter([
        seq(tags::DERIVATION_IMAGE_SEQUENCE, vec![derivation]),
        seq(
            tags::FRAME_CONTENT_SEQUENCE,
            vec![Obj::from_element_iter([DataElement::new(
                tags::DIMENSION_INDEX_VALUES,
                VR::UL,
                index,
            )])],
        ),
        seq(
            tags::PLANE_POSITION_SEQUENCE,
            vec![Obj::from_element_iter([strs(
                tags::IMAGE_POSITION_PATIENT,
                VR::DS,
                src.position.clone(),
            )])],
        ),
        seq(
            tags::SEGMENT_IDENTIFICATION_SEQUENCE,
            vec![Obj::from_element_iter([el(
                tags::REFERENCED_SEGMENT_NUMBER,
                VR::US,
                s as u16,
            )])],
        ),
    ])
}

/// Common Instance Reference: the source series and every instance of it.
fn referenced_series(series: &DicomSeries, sources: &[SourceSlice]) -> Obj {
    let instances = sources
        .iter()
        .map(|s| {
            Obj::from_element_iter([
                el(tags::REFERENCED_SOP_CLASS_UID, VR::UI, s.class_uid.as_str()),
                el(
                    tags::REFERENCED_SOP_INSTANCE_UID,
                    VR::UI,
                    s.instance_uid.as_str(),
                ),
            ])
        })
        .collect();
    Obj::from_element_iter([
        el(
            tags::SERIES_INSTANCE_UID,
            VR::UI,
            series.series_uid.as_str(),
        ),
        seq(tags::REFERENCED_INSTANCE_SEQUENCE, instances),
    ])
}

/// Frames (segment-major, then slice) of one bit per pixel, LSB first, packed across frames;
/// padded to an even length.
fn pack_bits(input: &SegInput, segments: usize) -> Vec<u8> {
    let [cols, rows, nz] = input.volume.dims;
    let plane = rows * cols;
    let total = segments * nz * plane;
    let mut out = vec![0u8; total.div_ceil(8).next_multiple_of(2)];
    let mut bit = 0usize;
    for s in 1..=segments {
        for k in 0..nz {
            for i in 0..plane {
                if input
                    .mask
                    .get(k * plane + i)
                    .is_some_and(|&v| v as usize == s)
                {
                    if let Some(b) = out.get_mut(bit / 8) {
                        *b |= 1 << (bit % 8);
                    }
                }
                bit += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_strings_fit_sixteen_characters() {
        assert_eq!(ds(-235.199997), "-235.199997");
        assert_eq!(ds(0.0), "0");
        assert_eq!(ds(-0.0), "0");
        assert!(ds(1.0 / 3.0).len() <= 16);
        assert!(ds(-123456.123456789).len() <= 16);
        let uid = new_uid("x");
        assert!(uid.starts_with("2.25.") && uid.len() <= 64, "{uid}");
    }
}
