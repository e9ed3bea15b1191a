//! Fuzzing entry points (issue 12): bytes in, `Result` out, through the real readers and the
//! code that consumes what they return in `dmnet-prep` / `dmnet-infer`. Used by the
//! `cargo fuzz` targets in `fuzz/` and by the regression tests of the inputs they found
//! (`tests/fuzz-regressions/`, `docs/reliability.md`). Not part of dmnet's API.
//!
//! The readers take paths, so each entry point writes the bytes into `scratch` (an existing
//! folder the caller owns and reuses) and reads them back. A reader may return `Err` for any
//! input; it must never panic, hang, or return a value that breaks the invariants checked
//! here — those are `panic!`s ("fuzz invariant"), so the fuzzer reports them as crashes.
//!
//! Multi-file inputs (a DICOM series, a series plus its SEG) are the files' bytes joined by
//! [`FILE_SEPARATOR`].
use std::path::{Path, PathBuf};

use crate::preprocess::{map_labels, prepare_volume, PreprocessConfig};
use crate::volume::{
    read_dicom_seg, read_dicom_series, read_dicom_timepoint, read_nifti, read_nifti_label,
    read_nifti_timepoint, read_seg_names, read_volume, scan_dicom_dir, series_timepoints,
    write_nifti_mask, DicomSeries, Volume,
};
use crate::{Error, Result};

/// Joins the files of a multi-file input (chosen to never occur in DICOM or NIfTI data).
pub(crate) const FILE_SEPARATOR: &[u8] = b"\n--dmnet-fuzz-next-file--\n";

/// Slice size used to exercise the preprocessing of a volume that was read.
const SIZE: usize = 8;

/// A NIfTI file (`.nii` or gzipped): [`read_nifti`], [`read_nifti_label`],
/// [`read_nifti_timepoint`], then the preprocessing and mask writing of prep/infer.
pub fn nifti(scratch: &Path, bytes: &[u8]) -> Result<()> {
    let path = scratch.join("input.nii");
    std::fs::write(&path, bytes).map_err(|e| Error::io(&path, e))?;
    let image = read_nifti(&path);
    let last = read_nifti_timepoint(&path, 0);
    if let Ok(l) = read_nifti_label(&path) {
        check_volume(&l);
        let _ = map_labels(&l, &PreprocessConfig::default(), 5);
    }
    let v = image.or(last)?;
    use_volume(scratch, v)
}

/// A DICOM series (files joined by [`FILE_SEPARATOR`]): [`scan_dicom_dir`], each image series
/// read as a volume (its last time point when 4-D), and [`read_volume`] (the infer path).
pub fn dicom_series(scratch: &Path, bytes: &[u8]) -> Result<()> {
    let dir = write_files(scratch, "series", bytes)?;
    let (series, bad) = scan_dicom_dir(&dir)?;
    let mut first_err = bad.first().map(|(p, why)| Error::invalid(p, why.clone()));
    for s in series.iter().filter(|s| !s.is_seg) {
        match read_any_timepoint(s) {
            Ok(v) => use_volume(scratch, v)?,
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    match read_volume(&dir) {
        Ok(v) => check_volume(&v),
        Err(e) => {
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// A DICOM series and a DICOM SEG (files joined by [`FILE_SEPARATOR`], any order): the image
/// series is read, then the SEG onto its grid with [`read_dicom_seg`] and its labels mapped to
/// classes as `dmnet-prep` does.
pub fn dicom_seg(scratch: &Path, bytes: &[u8]) -> Result<()> {
    let dir = write_files(scratch, "seg", bytes)?;
    let (series, _) = scan_dicom_dir(&dir)?;
    let image = series.iter().find(|s| !s.is_seg);
    let seg = series.iter().find(|s| s.is_seg);
    let (Some(image), Some(seg)) = (image, seg) else {
        return Err(Error::invalid(
            &dir,
            "fuzz input without an image series and a SEG",
        ));
    };
    let seg_file = seg
        .files
        .first()
        .map(|f| f.path.clone())
        .ok_or_else(|| Error::invalid(&dir, "SEG series without files"))?;
    let names = read_seg_names(&seg_file);
    let vol = read_dicom_series(image)?;
    let labels = read_dicom_seg(&seg_file, image, &vol)?;
    check_volume(&labels.labels);
    assert_eq!(
        labels.labels.dims, vol.dims,
        "fuzz invariant: SEG labels on the image grid"
    );
    assert!(
        names.is_ok(),
        "fuzz invariant: a SEG that reads has readable names"
    );
    vol.check_same_grid(&labels.labels, "fuzz", 0.01)?;
    map_labels(
        &labels.labels,
        &PreprocessConfig::default(),
        labels.names.len(),
    )?;
    Ok(())
}

/// A shard part file: [`crate::shard::Part::open`] (footer, schema version and slice shape, as
/// the folder index of `dmnet-train` and `dmnet-infer` opens every part), then every row group
/// through the checked [`crate::shard::Part::read_row_group`] until the end or the first error.
pub fn shard(scratch: &Path, bytes: &[u8]) -> Result<()> {
    let dir = fresh_dir(scratch, "shards")?;
    let part = dir.join("part-00000.parquet");
    std::fs::write(&part, bytes).map_err(|e| Error::io(&part, e))?;
    let _ = crate::shard::schema::file_metadata(&part);
    let p = crate::shard::Part::open(&part)?;
    // a row group needs at least a few bytes of the file: more groups than bytes = a loop
    assert!(
        p.num_row_groups() <= bytes.len(),
        "fuzz invariant: the reader ends ({} row groups from {} bytes)",
        p.num_row_groups(),
        bytes.len()
    );
    for rg in 0..p.num_row_groups() {
        for r in p.read_row_group(rg)? {
            assert_eq!(
                r.image.len(),
                r.channel_names.len() * r.height as usize * r.width as usize,
                "fuzz invariant: a record that reads has an image of C×H×W values"
            );
        }
    }
    Ok(())
}

/// A model sidecar `model.json`: [`crate::artifact::sidecar::ModelSidecar::read_for`], the
/// fields dmnet-infer derives from it, and a write/read round trip.
pub fn sidecar(scratch: &Path, bytes: &[u8]) -> Result<()> {
    use crate::artifact::sidecar::{describe_steps, ModelSidecar};
    let model = scratch.join("model.onnx");
    let path = ModelSidecar::path_for(&model);
    std::fs::write(&path, bytes).map_err(|e| Error::io(&path, e))?;
    let s = ModelSidecar::read_for(&model)?;
    let _ = (
        s.size(),
        s.metadata_props(),
        describe_steps(&s.preprocessing.config),
    );
    s.write(&path)?;
    let again = ModelSidecar::read_for(&model);
    assert!(
        again.is_ok(),
        "fuzz invariant: a sidecar dmnet wrote reads back: {again:?}"
    );
    Ok(())
}

/// An SSL4MIS h5 file (`image` and `label`, 2-D slice or 3-D volume):
/// [`crate::volume::h5::read_datasets`], [`crate::volume::h5::read_ssl4mis`], the label mapping
/// of prep (ACDC's 4 classes), then the volume as above.
pub fn h5(scratch: &Path, bytes: &[u8]) -> Result<()> {
    use crate::volume::h5::{read_datasets, read_ssl4mis, MAX_ELEMENTS};
    let path = scratch.join("input.h5");
    std::fs::write(&path, bytes).map_err(|e| Error::io(&path, e))?;
    if let Ok(arrays) = read_datasets(&path, &["image", "label"]) {
        for a in &arrays {
            assert_eq!(
                a.data.len(),
                a.shape.iter().product::<usize>(),
                "fuzz invariant: one value per element"
            );
            assert!(
                a.data.len() as u64 <= MAX_ELEMENTS,
                "fuzz invariant: no dataset above MAX_ELEMENTS"
            );
        }
    }
    let (image, label) = read_ssl4mis(&[path])?;
    check_volume(&image);
    check_volume(&label);
    assert_eq!(
        image.dims, label.dims,
        "fuzz invariant: image and label on one grid"
    );
    map_labels(&label, &PreprocessConfig::default(), 4)?;
    use_volume(scratch, image)
}

/// Reads a series as a 3-D volume, or its last time point when it is 4-D.
fn read_any_timepoint(s: &DicomSeries) -> Result<Volume> {
    match series_timepoints(s)? {
        0 | 1 => read_dicom_series(s),
        t => read_dicom_timepoint(s, t - 1),
    }
}

/// What every reader promises about a volume it returns.
fn check_volume(v: &Volume) {
    assert_eq!(
        v.data.len(),
        v.dims.iter().product::<usize>(),
        "fuzz invariant: one value per voxel"
    );
    assert!(
        v.affine.iter().flatten().all(|x| x.is_finite()) && v.spacing.iter().all(|x| x.is_finite()),
        "fuzz invariant: finite affine and spacing, got {:?} / {:?}",
        v.affine,
        v.spacing
    );
}

/// The steps after reading in prep and infer: normalise, slice, resize, slice positions,
/// and a mask written with the volume's geometry that reads back on the same grid.
fn use_volume(scratch: &Path, v: Volume) -> Result<()> {
    check_volume(&v);
    let cfg = PreprocessConfig {
        size: SIZE,
        ..Default::default()
    };
    let p = prepare_volume(vec![v.clone()], vec!["image".into()], &cfg, "fuzz")?;
    let n = p.num_slices();
    for k in [0, n.saturating_sub(1)].into_iter().filter(|&k| k < n) {
        let img = p.slice_image(k, SIZE);
        assert_eq!(img.len(), SIZE * SIZE, "fuzz invariant: one S×S slice");
        let _ = (p.slice_position(k), p.pixel_spacing(SIZE));
    }
    let mask_path = scratch.join("mask.nii");
    write_nifti_mask(&mask_path, &vec![0u8; v.len()], &v)?;
    let back = read_nifti(&mask_path);
    match &back {
        Ok(m) => assert_eq!(
            m.dims, v.dims,
            "fuzz invariant: the mask has the image's dims"
        ),
        Err(e) => panic!("fuzz invariant: a mask written on a readable volume reads back: {e}"),
    }
    Ok(())
}

/// This process's scratch folder for fuzz target `target`, created once:
/// `/dev/shm/dmnet-fuzz-<target>-<pid>` (memory-backed) or the same under the temp dir.
/// `scripts/fuzz.sh` removes them afterwards.
pub fn process_scratch(target: &str) -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("dmnet-fuzz-{target}-{}", std::process::id()));
        if let Err(e) = std::fs::create_dir_all(&dir) {
            panic!("fuzz scratch folder {}: {e}", dir.display());
        }
        dir
    })
}

/// Empties (creates) `scratch/name`.
fn fresh_dir(scratch: &Path, name: &str) -> Result<PathBuf> {
    let dir = scratch.join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    }
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    Ok(dir)
}

/// Splits `bytes` at [`FILE_SEPARATOR`] into `scratch/name/f000.dcm`, `f001.dcm`, ….
fn write_files(scratch: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf> {
    let dir = fresh_dir(scratch, name)?;
    for (i, part) in split_files(bytes).into_iter().enumerate().take(64) {
        let p = dir.join(format!("f{i:03}.dcm"));
        std::fs::write(&p, part).map_err(|e| Error::io(&p, e))?;
    }
    Ok(dir)
}

/// The files of a multi-file input.
pub(crate) fn split_files(bytes: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while let Some(i) = rest
        .windows(FILE_SEPARATOR.len())
        .position(|w| w == FILE_SEPARATOR)
    {
        out.push(&rest[..i]);
        rest = &rest[i + FILE_SEPARATOR.len()..];
    }
    out.push(rest);
    out
}

/// Joins files into one multi-file input (inverse of [`split_files`]).
pub fn join_files(files: &[Vec<u8>]) -> Vec<u8> {
    files.join(FILE_SEPARATOR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_split_and_join() {
        let files = vec![b"DICM one".to_vec(), Vec::new(), b"three".to_vec()];
        let joined = join_files(&files);
        let back: Vec<Vec<u8>> = split_files(&joined).iter().map(|f| f.to_vec()).collect();
        assert_eq!(back, files);
        assert_eq!(split_files(b"single"), [b"single"]);
    }
}
