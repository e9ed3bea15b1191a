//! Volume I/O on real data: DICOM vs the dcm2niix reference, DICOM SEG vs its NRRD twin,
//! NIfTI mask round trip checked by nibabel.
use std::io::Read;

use dmnet::volume::{
    read_dicom_seg, read_dicom_series, read_dicom_timepoint, read_nifti, read_nifti_label,
    read_nifti_timepoint, scan_dicom_dir, write_nifti_mask,
};

use crate::require_data;
use crate::util;

/// Each of the 10 time points of the GE EPI series equals the dcm2niix NIfTI: voxels exactly,
/// affine to 1e-3 mm. dcm2niix stores DICOM rows bottom-up (its "flip y"), so its voxel
/// (i, j, k) is our (i, n1-1-j, k) and its affine is ours with column 1 negated and the origin
/// moved to the last row.
#[test]
fn ge_epi_4d_timepoints_match_dcm2niix() {
    let dir = require_data!("dicom/ge-epi-4d");
    let (series, bad) = scan_dicom_dir(&dir.join("series")).unwrap();
    assert!(bad.is_empty());
    assert_eq!(series.len(), 1);
    let reference = dir.join("dcm2niix-reference/mr_0004.nii.gz");
    for t in 0..10 {
        let v = read_dicom_timepoint(&series[0], t).unwrap();
        let r = read_nifti_timepoint(&reference, t).unwrap();
        assert_eq!(v.dims, r.dims, "t={t}");
        let [n0, n1, n2] = v.dims;
        for k in 0..n2 {
            for j in 0..n1 {
                for i in 0..n0 {
                    assert_eq!(
                        v.data[v.index(i, n1 - 1 - j, k)],
                        r.data[r.index(i, j, k)],
                        "t={t} voxel ({i},{j},{k})"
                    );
                }
            }
        }
        let mut flipped = v.affine;
        for (row, frow) in v.affine.iter().zip(flipped.iter_mut()).take(3) {
            frow[1] = -row[1];
            frow[3] = row[3] + row[1] * (n1 - 1) as f64;
        }
        for (a, b) in flipped.iter().zip(r.affine.iter()) {
            for (x, y) in a.iter().zip(b.iter()) {
                assert!((x - y).abs() < 1e-3, "t={t}: {flipped:?} vs {:?}", r.affine);
            }
        }
    }
    assert!(read_nifti_timepoint(&reference, 10).is_err());
}

/// The 4-D series is refused as a 3-D volume, naming the series and the 10 time points.
#[test]
fn ge_epi_4d_series_is_refused() {
    let dir = require_data!("dicom/ge-epi-4d");
    let (series, _) = scan_dicom_dir(&dir.join("series")).unwrap();
    let err = read_dicom_series(&series[0]).unwrap_err().to_string();
    assert!(err.contains("10 time points"), "{err}");
    assert!(err.contains(&series[0].series_uid), "{err}");
}

/// The liver DICOM SEG, mapped onto the CT slices, equals the NRRD export of the same mask
/// (LPS, same voxel order as our volume).
#[test]
fn ct_seg_matches_nrrd() {
    let dir = require_data!("dicom/ct-3slice");
    let (series, _) = scan_dicom_dir(&dir).unwrap();
    let img = series.iter().find(|s| !s.is_seg).unwrap();
    let seg = series.iter().find(|s| s.is_seg).unwrap();
    assert_eq!(
        seg.referenced_series.as_deref(),
        Some(img.series_uid.as_str())
    );
    let vol = read_dicom_series(img).unwrap();
    assert_eq!(vol.dims, [512, 512, 3]);
    assert!((vol.spacing[2] - 1.0).abs() < 1e-6);
    // LPS origin (-235.2, -226.8, -128.69) → RAS (235.2, 226.8, -128.69)
    assert!((vol.affine[0][3] - 235.2).abs() < 1e-3 && (vol.affine[2][3] + 128.69).abs() < 1e-3);
    let labels = read_dicom_seg(&seg.files[0].path, img, &vol).unwrap();
    assert_eq!(labels.names, vec!["background", "Liver"]);
    let bytes = std::fs::read(dir.join("liver_seg.nrrd")).unwrap();
    let start = bytes.windows(2).position(|w| w == b"\n\n").unwrap() + 2;
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(&bytes[start..])
        .read_to_end(&mut raw)
        .unwrap();
    let nrrd: Vec<i16> = raw
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    assert_eq!(nrrd.len(), labels.labels.len());
    let mismatches = nrrd
        .iter()
        .zip(&labels.labels.data)
        .filter(|(a, b)| (**a > 0) != (**b > 0.0))
        .count();
    assert_eq!(mismatches, 0);
    assert!(labels.labels.data.contains(&1.0));
}

/// A mask written with the spleen label's header reads back (with our reader and nibabel)
/// with the same dims, affine, codes and pixdim, as uint8 with slope 1.
#[test]
fn nifti_mask_roundtrip_keeps_header() {
    let dir = require_data!("spleen-ct");
    let label = std::fs::read_dir(dir.join("labelsTr"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let img = read_nifti(&label).unwrap();
    let lab = read_nifti_label(&label).unwrap();
    let mask: Vec<u8> = lab.data.iter().map(|&v| v as u8).collect();
    let tmp = util::tmp();
    let out = tmp.path().join("mask.nii.gz");
    write_nifti_mask(&out, &mask, &img).unwrap();
    let back = read_nifti_label(&out).unwrap();
    assert_eq!(back.dims, img.dims);
    assert_eq!(back.affine, img.affine);
    assert_eq!(back.data, lab.data);
    assert_eq!(back.header.sform_code, img.header.sform_code);
    assert_eq!(back.header.qform_code, img.header.qform_code);
    let script = format!(
        r#"
import nibabel as nib, numpy as np
a = nib.load({src:?}); b = nib.load({out:?})
assert b.get_data_dtype() == np.uint8, b.get_data_dtype()
assert np.allclose(a.affine, b.affine, atol=1e-5)
assert a.shape == b.shape
assert np.allclose(a.header['pixdim'][1:4], b.header['pixdim'][1:4])
assert int(a.header['sform_code']) == int(b.header['sform_code'])
assert int(a.header['qform_code']) == int(b.header['qform_code'])
assert np.array_equal(np.asarray(b.dataobj), np.asarray(a.dataobj).astype(np.uint8))
print("ok")
"#,
        src = label.display().to_string(),
        out = out.display().to_string()
    );
    let o = util::run_ok(util::python().args(["-c", &script]));
    assert!(util::stdout(&o).contains("ok"));
}

/// LA images are int16 with scl_slope 0.001: values come back scaled (as nibabel does).
#[test]
fn nifti_scl_slope_is_applied() {
    let dir = require_data!("la2018");
    let mut files: Vec<_> = std::fs::read_dir(dir.join("imagesTr"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let v = read_nifti(&files[0]).unwrap();
    let script = format!(
        "import nibabel as nib, numpy as np; d = nib.load({:?}).get_fdata(); print(float(d.min()), float(d.max()), float(d.mean()))",
        files[0].display().to_string()
    );
    let o = util::run_ok(util::python().args(["-c", &script]));
    let nums: Vec<f64> = util::stdout(&o)
        .split_whitespace()
        .map(|s| s.parse().unwrap())
        .collect();
    let min = v.data.iter().cloned().fold(f32::MAX, f32::min) as f64;
    let max = v.data.iter().cloned().fold(f32::MIN, f32::max) as f64;
    let mean = v.data.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
    assert!((min - nums[0]).abs() < 1e-4 && (max - nums[1]).abs() < 1e-4);
    assert!((mean - nums[2]).abs() < 1e-4, "{mean} vs {}", nums[2]);
}
