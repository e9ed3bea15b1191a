//! Enhanced multi-frame images (Enhanced CT/MR/PET, …): one file, NumberOfFrames (0028,0008)
//! frames, each with its geometry in the Per-frame Functional Groups Sequence (5200,9230),
//! falling back to the Shared Functional Groups Sequence (5200,9229), then the top level:
//! PlanePositionSequence (0020,9113) → ImagePositionPatient, PlaneOrientationSequence
//! (0020,9116) → ImageOrientationPatient, PixelMeasuresSequence (0028,9110) → PixelSpacing,
//! PixelValueTransformationSequence (0028,9145) → RescaleSlope/Intercept.
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::scan::top_level_rescale;
use super::{f64_1, f64s, first_item, vec2, vec3, vec6, Frame};

/// The frames of a multi-frame file, or why it cannot be read as a volume (the message names
/// multi-frame).
pub(super) fn frames(obj: &InMemDicomObject, n: i64) -> Result<Vec<Frame>, String> {
    let per = obj
        .get(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
        .and_then(|e| e.items())
        .ok_or_else(|| {
            format!(
                "multi-frame file (NumberOfFrames = {n}) without a PerFrameFunctionalGroupsSequence (5200,9230): frame positions unknown, not supported"
            )
        })?;
    if n < 1 || per.len() != n as usize {
        return Err(format!(
            "multi-frame file: {} per-frame functional group items for NumberOfFrames = {n}",
            per.len()
        ));
    }
    let shared = first_item(obj, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE);
    let top_rescale = top_level_rescale(obj);
    let top_o = f64s(obj, tags::IMAGE_ORIENTATION_PATIENT).and_then(vec6);
    let top_sp = f64s(obj, tags::PIXEL_SPACING).and_then(vec2);
    let out = per
        .iter()
        .enumerate()
        .map(|(i, item)| {
            // a macro present in the frame's item wins over the shared one
            let group =
                |seq| first_item(item, seq).or_else(|| shared.and_then(|s| first_item(s, seq)));
            let rescale =
                group(tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE).map_or(top_rescale, |g| {
                    [
                        f64_1(g, tags::RESCALE_SLOPE).unwrap_or(1.0),
                        f64_1(g, tags::RESCALE_INTERCEPT).unwrap_or(0.0),
                    ]
                });
            Frame {
                position: group(tags::PLANE_POSITION_SEQUENCE)
                    .and_then(|g| f64s(g, tags::IMAGE_POSITION_PATIENT))
                    .and_then(vec3),
                orientation: group(tags::PLANE_ORIENTATION_SEQUENCE)
                    .and_then(|g| f64s(g, tags::IMAGE_ORIENTATION_PATIENT))
                    .and_then(vec6)
                    .or(top_o),
                spacing: group(tags::PIXEL_MEASURES_SEQUENCE)
                    .and_then(|g| f64s(g, tags::PIXEL_SPACING))
                    .and_then(vec2)
                    .or(top_sp),
                rescale,
                index: i,
            }
        })
        .collect();
    Ok(out)
}
