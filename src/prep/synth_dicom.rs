//! DICOM CT series for synthetic phantom patients (CT Image Storage, explicit VR little
//! endian). Geometry per DICOM PS3.3 C.7.6.2: ImagePositionPatient / ImageOrientationPatient in
//! LPS, so the RAS affine of the phantom has its x and y signs flipped. Column index = voxel
//! axis 0, row index = voxel axis 1, one file per voxel-axis-2 slice. Stored value = HU + 1024
//! (RescaleIntercept −1024, RescaleSlope 1). The identifying tags hold SYNTHETIC placeholders,
//! which also lets tests check that such tags never reach a shard.
use super::synth::Phantom;
use crate::{Error, Result};
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{meta::FileMetaTableBuilder, InMemDicomObject};
use std::path::Path;

fn ds(values: &[f64]) -> PrimitiveValue {
    PrimitiveValue::Strs(values.iter().map(|v| format!("{v:.6}")).collect())
}

fn text(s: &str) -> PrimitiveValue {
    PrimitiveValue::from(s.to_string())
}

/// A deterministic UID under the UUID-derived root 2.25 (PS3.5 B.2).
fn uid(seed: u64, patient: usize, what: u64, k: usize) -> String {
    format!(
        "2.25.{}{:03}{:02}{:04}",
        1_000_000 + seed % 1_000_000,
        patient % 1000,
        what,
        k
    )
}

/// Writes `p` as one DICOM file per axial slice into `dir`.
pub(crate) fn write_series(dir: &Path, p: &Phantom, patient: usize, seed: u64) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let [nx, ny, nz] = p.dims;
    let a = &p.affine;
    // LPS direction cosines of voxel axes 0 (along a row) and 1 (down a column).
    let iop = [
        -a[0][0] / p.spacing[0],
        -a[1][0] / p.spacing[0],
        a[2][0] / p.spacing[0],
        -a[0][1] / p.spacing[1],
        -a[1][1] / p.spacing[1],
        a[2][1] / p.spacing[1],
    ];
    let (study, series) = (uid(seed, patient, 1, 0), uid(seed, patient, 2, 0));
    for z in 0..nz {
        let ras = [0, 1, 2].map(|r| a[r][2] * z as f64 + a[r][3]);
        let ipp = [-ras[0], -ras[1], ras[2]];
        let pixels: Vec<u16> = (0..nx * ny)
            .map(|i| (p.hu[i + nx * ny * z].round() + 1024.0).clamp(0.0, 4095.0) as u16)
            .collect();
        let sop = uid(seed, patient, 3, z);
        let obj = InMemDicomObject::from_element_iter([
            DataElement::new(tags::SOP_CLASS_UID, VR::UI, text(uids::CT_IMAGE_STORAGE)),
            DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, text(&sop)),
            DataElement::new(tags::PATIENT_NAME, VR::PN, text("SYNTHETIC^PHANTOM")),
            DataElement::new(
                tags::PATIENT_ID,
                VR::LO,
                text(&format!("SYNTH-{patient:05}")),
            ),
            DataElement::new(tags::PATIENT_BIRTH_DATE, VR::DA, text("19700101")),
            DataElement::new(tags::MODALITY, VR::CS, text("CT")),
            DataElement::new(tags::STUDY_INSTANCE_UID, VR::UI, text(&study)),
            DataElement::new(tags::SERIES_INSTANCE_UID, VR::UI, text(&series)),
            DataElement::new(
                tags::SERIES_DESCRIPTION,
                VR::LO,
                text("SYNTHETIC phantom (dmnet-prep synth)"),
            ),
            DataElement::new(tags::INSTANCE_NUMBER, VR::IS, text(&(z + 1).to_string())),
            DataElement::new(tags::IMAGE_POSITION_PATIENT, VR::DS, ds(&ipp)),
            DataElement::new(tags::IMAGE_ORIENTATION_PATIENT, VR::DS, ds(&iop)),
            DataElement::new(
                tags::PIXEL_SPACING,
                VR::DS,
                ds(&[p.spacing[1], p.spacing[0]]),
            ),
            DataElement::new(tags::SLICE_THICKNESS, VR::DS, ds(&[p.spacing[2]])),
            DataElement::new(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1u16)),
            DataElement::new(
                tags::PHOTOMETRIC_INTERPRETATION,
                VR::CS,
                text("MONOCHROME2"),
            ),
            DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(ny as u16)),
            DataElement::new(tags::COLUMNS, VR::US, PrimitiveValue::from(nx as u16)),
            DataElement::new(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(16u16)),
            DataElement::new(tags::BITS_STORED, VR::US, PrimitiveValue::from(12u16)),
            DataElement::new(tags::HIGH_BIT, VR::US, PrimitiveValue::from(11u16)),
            DataElement::new(
                tags::PIXEL_REPRESENTATION,
                VR::US,
                PrimitiveValue::from(0u16),
            ),
            DataElement::new(tags::RESCALE_INTERCEPT, VR::DS, ds(&[-1024.0])),
            DataElement::new(tags::RESCALE_SLOPE, VR::DS, ds(&[1.0])),
            DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(pixels.into())),
        ]);
        let file = obj
            .with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN))
            .map_err(|e| Error::invalid(dir, format!("building DICOM meta: {e}")))?;
        let path = dir.join(format!("slice-{:04}.dcm", z + 1));
        crate::atomic::write_with(&path, |w| file.write_all(w).map_err(std::io::Error::other))?;
    }
    Ok(())
}
