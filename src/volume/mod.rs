//! Volume I/O: NIfTI and DICOM studies read into one in-memory [`Volume`] (f32 voxels, voxel→RAS
//! affine, spacing, and the NIfTI header fields needed to write a mask back).
//!
//! - [`read_nifti`] / [`read_nifti_label`] / [`write_nifti_mask`]: NIfTI-1 (`.nii`, `.nii.gz`),
//!   header parsed with the `nifti` crate; `scl_slope`/`scl_inter` honoured (slope 0 = none);
//!   affine from the sform when `sform_code > 0`, else the qform (domain notes §3).
//! - [`read_dicom_series`], [`read_dicom_timepoint`], [`scan_dicom_dir`], [`read_dicom_seg`]:
//!   DICOM series (single-frame files, Siemens mosaics, enhanced multi-frame files; native or
//!   compressed pixel data) sorted by ImagePositionPatient (0020,0032) projected on the normal
//!   of ImageOrientationPatient (0020,0037), spacing from position differences, values masked
//!   to BitsStored then per-frame RescaleSlope/Intercept (0028,1053/1052), LPS→RAS; 4-D series
//!   (repeated positions) detected and read one time point at a time.
//!
//! Voxel order everywhere: dims `[n0, n1, n2]`, linear index `i0 + n0 * (i1 + n1 * i2)`
//! (NIfTI / Fortran order).
use std::path::PathBuf;

pub mod compare;
mod dicom;
pub mod h5;
mod nifti_io;

pub use dicom::{
    check_declared_lengths, read_dicom_pixels, read_dicom_seg, read_dicom_series,
    read_dicom_timepoint, scan_dicom_dir, series_timepoints, FileKind, Frame,
};
pub(crate) use dicom::{dicom_series_geometry, read_seg_names, DicomFile, DicomSeries};
pub(crate) use nifti_io::read_nifti_geometry;
pub use nifti_io::{read_nifti, read_nifti_label, read_nifti_timepoint, write_nifti_mask};

/// The NIfTI-1 header fields kept with a volume so a mask can be written back with the same
/// geometry (dims, pixdim, qform/sform codes and parameters, units).
#[derive(Debug, Clone, PartialEq)]
pub struct NiftiGeometry {
    /// `dim[0..8]` of the source header (for DICOM: `[3, n0, n1, n2, 1, 1, 1, 1]`).
    pub dim: [u16; 8],
    /// `pixdim[0..8]` (`pixdim[0]` = qfac).
    pub pixdim: [f32; 8],
    /// `qform_code`.
    pub qform_code: i16,
    /// `sform_code`.
    pub sform_code: i16,
    /// `quatern_b, quatern_c, quatern_d, qoffset_x, qoffset_y, qoffset_z`.
    pub quatern: [f32; 6],
    /// `srow_x`, `srow_y`, `srow_z`.
    pub srow: [[f32; 4]; 3],
    /// `xyzt_units`.
    pub xyzt_units: u8,
}

impl NiftiGeometry {
    /// A header for a volume built from DICOM geometry: sform (code 1, scanner) = `affine`,
    /// qform unset, pixdim = `spacing`, units mm.
    pub(crate) fn from_affine(dims: [usize; 3], affine: &[[f64; 4]; 4], spacing: [f64; 3]) -> Self {
        let mut srow = [[0f32; 4]; 3];
        for (r, row) in srow.iter_mut().enumerate() {
            for (c, v) in row.iter_mut().enumerate() {
                *v = affine[r][c] as f32;
            }
        }
        NiftiGeometry {
            dim: [
                3,
                dims[0] as u16,
                dims[1] as u16,
                dims[2] as u16,
                1,
                1,
                1,
                1,
            ],
            pixdim: [
                1.0,
                spacing[0] as f32,
                spacing[1] as f32,
                spacing[2] as f32,
                0.0,
                0.0,
                0.0,
                0.0,
            ],
            qform_code: 0,
            sform_code: 1,
            quatern: [0.0; 6],
            srow,
            xyzt_units: 2,
        }
    }
}

/// A 3-D scalar volume in RAS world coordinates.
#[derive(Debug, Clone)]
pub struct Volume {
    /// Voxel values (rescaled), index `i0 + n0 * (i1 + n1 * i2)`.
    pub data: Vec<f32>,
    /// Voxel dims `[n0, n1, n2]`.
    pub dims: [usize; 3],
    /// Voxel (i0, i1, i2, 1) → RAS world (mm), row-major 4×4.
    pub affine: [[f64; 4]; 4],
    /// Voxel spacing (mm) along voxel axes 0, 1, 2 (norms of the affine's columns).
    pub spacing: [f64; 3],
    /// The header fields needed to write a mask with the same geometry.
    pub header: NiftiGeometry,
    /// Where the volume came from (file, or DICOM series folder).
    pub source: PathBuf,
    /// Whether `spacing` and `affine` are physical (mm). False for sources that carry none
    /// (SSL4MIS h5): they are then 1 voxel per unit, and distances are in voxels.
    pub spacing_known: bool,
}

impl Volume {
    /// Number of voxels.
    pub fn len(&self) -> usize {
        self.dims[0] * self.dims[1] * self.dims[2]
    }
    /// Whether the volume has no voxels.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Linear index of voxel (i0, i1, i2).
    pub fn index(&self, i0: usize, i1: usize, i2: usize) -> usize {
        i0 + self.dims[0] * (i1 + self.dims[1] * i2)
    }
    /// The voxel→world direction (unit vector) of voxel axis `axis`.
    pub(crate) fn axis_direction(&self, axis: usize) -> [f64; 3] {
        let v = [
            self.affine[0][axis],
            self.affine[1][axis],
            self.affine[2][axis],
        ];
        let n = norm(v).max(1e-12);
        [v[0] / n, v[1] / n, v[2] / n]
    }
    /// Checks that `other` (e.g. a label map) has the same dims and, within `tol_mm` per
    /// affine entry, the same affine; `case` names the study in the error.
    pub(crate) fn check_same_grid(
        &self,
        other: &Volume,
        case: &str,
        tol_mm: f64,
    ) -> crate::Result<()> {
        if self.dims != other.dims {
            return Err(crate::Error::Shape {
                path: other.source.clone(),
                case: case.to_string(),
                expected: self.dims.to_vec(),
                found: other.dims.to_vec(),
            });
        }
        let mut worst = 0f64;
        for r in 0..3 {
            for c in 0..4 {
                worst = worst.max((self.affine[r][c] - other.affine[r][c]).abs());
            }
        }
        if worst > tol_mm {
            return Err(crate::Error::invalid(
                &other.source,
                format!(
                    "case {case}: affine differs from the image {} by {worst:.4} mm (> {tol_mm} mm)",
                    self.source.display()
                ),
            ));
        }
        Ok(())
    }
    /// Errors (naming the file) when a voxel is NaN or infinite.
    pub(crate) fn check_finite(&self) -> crate::Result<()> {
        if let Some(i) = self.data.iter().position(|v| !v.is_finite()) {
            return Err(crate::Error::invalid(
                &self.source,
                format!("voxel {i} is {} (NaN/Inf not allowed)", self.data[i]),
            ));
        }
        Ok(())
    }
}

/// Euclidean norm of a 3-vector.
pub(crate) fn norm(v: [f64; 3]) -> f64 {
    (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt()
}

/// Spacing = norms of the affine's first three columns.
pub(crate) fn spacing_of(affine: &[[f64; 4]; 4]) -> [f64; 3] {
    let col = |c: usize| norm([affine[0][c], affine[1][c], affine[2][c]]);
    [col(0), col(1), col(2)]
}

/// Reads an image for inference: a NIfTI file, or a folder holding exactly one DICOM image
/// series (DICOM SEG objects are ignored). A 4-D input is an error unless `timepoint` picks
/// one of its time points (0-based).
pub(crate) fn read_volume(path: &std::path::Path) -> crate::Result<Volume> {
    read_volume_at(path, None)
}

/// [`read_volume`] with an optional time point of a 4-D input (`None` = the input must be
/// 3-D).
pub(crate) fn read_volume_at(
    path: &std::path::Path,
    timepoint: Option<usize>,
) -> crate::Result<Volume> {
    if !path.is_dir() {
        return read_nifti_at(path, timepoint);
    }
    let (series, bad) = scan_dicom_dir(path)?;
    if let Some((p, why)) = bad.first() {
        return Err(crate::Error::invalid(p, why.clone()));
    }
    let images: Vec<&DicomSeries> = series.iter().filter(|s| !s.is_seg).collect();
    match images.as_slice() {
        [one] => read_dicom_at(one, timepoint),
        [] => Err(crate::Error::invalid(path, "no DICOM image series found")),
        many => Err(crate::Error::invalid(
            path,
            format!(
                "{} DICOM series found ({}); point at one series folder",
                many.len(),
                many.iter()
                    .map(|s| s.series_uid.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// A NIfTI volume: `None` = the file must be 3-D; `Some(t)` = time point `t` of a 4-D file,
/// or the volume of a 3-D one (`--timepoint` applies to 4-D inputs only).
pub(crate) fn read_nifti_at(
    path: &std::path::Path,
    timepoint: Option<usize>,
) -> crate::Result<Volume> {
    match timepoint {
        None => read_nifti(path),
        Some(t) => nifti_io::read_nifti_timepoint_or_3d(path, t),
    }
}

/// A DICOM series: `None` = the series must be 3-D; `Some(t)` = time point `t` of a 4-D
/// series, or the volume of a 3-D one.
pub(crate) fn read_dicom_at(
    series: &DicomSeries,
    timepoint: Option<usize>,
) -> crate::Result<Volume> {
    match timepoint {
        Some(t) if series_timepoints(series)? > 1 => read_dicom_timepoint(series, t),
        _ => read_dicom_series(series),
    }
}

/// The entries of a folder (files and folders), sorted by path: every folder walk of a reader
/// (dataset layouts, inference inputs) goes in this order, so results do not depend on the
/// file system's listing order.
pub(crate) fn sorted_dir(dir: &std::path::Path) -> crate::Result<Vec<PathBuf>> {
    let canon = std::fs::canonicalize(dir).ok();
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| crate::Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| !links_back(p, canon.as_deref()))
        .collect();
    v.sort();
    Ok(v)
}

/// Whether `p` is a symlink to `dir` itself or to one of its parents (a loop such as
/// `loop -> ..`): listing it would read outside the folder, so it is skipped with a warning
/// naming it. Links to folders elsewhere are followed.
fn links_back(p: &std::path::Path, dir: Option<&std::path::Path>) -> bool {
    let is_link = std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink());
    if !is_link {
        return false;
    }
    let (Some(dir), Ok(target)) = (dir, std::fs::canonicalize(p)) else {
        return false;
    };
    let back = target.is_dir() && dir.starts_with(&target);
    if back {
        tracing::warn!(
            "{}: a link to {} (this folder or a parent of it); skipped, nothing outside the input is read",
            p.display(),
            target.display()
        );
    }
    back
}
