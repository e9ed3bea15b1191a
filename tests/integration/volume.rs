//! Volume I/O on real data: DICOM vs the dcm2niix reference, DICOM SEG vs its NRRD twin,
//! NIfTI mask round trip checked by nibabel.
use std::io::Read;
use std::path::Path;

use dmnet::volume::compare::{compare_volumes, run_dcm2niix};
use dmnet::volume::{
    read_dicom_pixels, read_dicom_seg, read_dicom_series, read_dicom_timepoint, read_nifti,
    read_nifti_label, read_nifti_timepoint, scan_dicom_dir, series_timepoints, write_nifti_mask,
    FileKind,
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

/// One row of the pixel-decoding comparison: file, transfer syntax family, the largest
/// |dmnet − pydicom| allowed (0 = lossless and native; lossy codecs may differ by the IDCT /
/// wavelet rounding of two decoder implementations).
const PYDICOM_FILES: &[(&str, &str, i64)] = &[
    ("MR_small.dcm", "explicit LE", 0),
    ("MR_small_implicit.dcm", "implicit LE", 0),
    ("MR_small_bigendian.dcm", "explicit BE", 0),
    ("MR_small_RLE.dcm", "RLE", 0),
    ("MR_small_jpeg_ls_lossless.dcm", "JPEG-LS lossless", 0),
    ("MR_small_jp2klossless.dcm", "JPEG 2000 lossless", 0),
    ("CT_small.dcm", "explicit LE", 0),
    ("examples_overlay.dcm", "explicit LE, BitsStored 12", 0),
    ("image_dfl.dcm", "deflated", 0),
    (
        "J2K_pixelrep_mismatch.dcm",
        "JPEG 2000 lossless, BitsStored 13 signed",
        0,
    ),
    (
        "JPEGLSNearLossless_08.dcm",
        "JPEG-LS near-lossless 8-bit",
        0,
    ),
    (
        "JPEGLSNearLossless_16.dcm",
        "JPEG-LS near-lossless 16-bit",
        0,
    ),
    ("SC_rgb_jpeg_gdcm.dcm", "JPEG lossless SV1, RGB", 0),
    ("SC_rgb_rle.dcm", "RLE, RGB", 0),
    ("SC_rgb_jpeg_dcmtk.dcm", "JPEG baseline, YBR", 1),
    ("JPEG2000.dcm", "JPEG 2000", 0),
    ("693_J2KI.dcm", "JPEG 2000, BitsStored 14 signed", 0),
];

/// dmnet's pixel decoding (native, deflated, big endian, RLE, JPEG baseline / extended /
/// lossless, JPEG-LS, JPEG 2000; BitsStored masking and sign extension) equals pydicom's
/// `pixel_array` (scripts/pydicom_pixels.py, pylibjpeg plugins) on the files of the pydicom
/// wheel, value for value.
#[test]
fn pixel_decoding_matches_pydicom() {
    let dir = util::pydicom_test_files();
    let t = util::tmp();
    let mut cmd = util::python();
    cmd.arg(util::root().join("scripts/pydicom_pixels.py"))
        .arg(t.path());
    for (f, _, _) in PYDICOM_FILES {
        cmd.arg(dir.join(f));
    }
    let o = util::run_ok(&mut cmd);
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for (line, (file, what, tol)) in util::stdout(&o).lines().zip(PYDICOM_FILES) {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(r["name"], *file);
        if r.get("error").is_some() {
            failures.push(format!("pydicom cannot decode {file}: {r}"));
            continue;
        }
        let bytes = std::fs::read(t.path().join(format!("{file}.i64"))).unwrap();
        let reference: Vec<i64> = bytes
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let ours = match read_dicom_pixels(&dir.join(file)) {
            Ok(p) => p,
            Err(e) => {
                failures.push(format!("{file} ({what}): {e}"));
                continue;
            }
        };
        assert_eq!(ours.values.len(), reference.len(), "{file}: {r}");
        let max = ours
            .values
            .iter()
            .zip(&reference)
            .map(|(a, b)| (a - b).abs())
            .max()
            .unwrap_or(0);
        let differ = ours
            .values
            .iter()
            .zip(&reference)
            .filter(|(a, b)| a != b)
            .count();
        report.push(format!(
            "{file} ({what}): max |Δ| {max}, {differ} of {} differ",
            reference.len()
        ));
        if max > *tol {
            failures.push(report.last().unwrap().clone());
        }
    }
    eprintln!("{}", report.join("\n"));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// What the codecs cannot decode is refused naming the file, the transfer syntax and the
/// reason (pydicom reads both): 12-bit JPEG Extended (jpeg-decoder has no 12-bit support) and
/// 32-bit RLE (dicom-rs's RLE decoder takes 8 and 16 bits).
#[test]
fn unsupported_compressed_pixel_data_is_refused_by_name() {
    let dir = util::pydicom_test_files();
    for (file, ts, why) in [
        ("JPGExtended.dcm", "JPEG Extended", "SamplePrecision(12)"),
        (
            "rtdose_rle.dcm",
            "RLE Lossless",
            "BitsAllocated other than 8 or 16",
        ),
    ] {
        let e = read_dicom_pixels(&dir.join(file)).unwrap_err().to_string();
        assert!(e.contains(file) && e.contains(ts) && e.contains(why), "{e}");
    }
}

/// nibabel ships its test DICOMs with zeroed pixels: fill the last `n` bytes (the PixelData
/// value, the file's last element) with a 12-bit pattern that differs per pixel and per `seed`,
/// so that un-tiling and frame order are checked voxel by voxel.
fn fill_pixels(path: &Path, n: usize, seed: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    let len = bytes.len();
    for (i, px) in bytes[len - n..].chunks_exact_mut(2).enumerate() {
        let v = ((i as u64 * 2_654_435_761 + seed * 977) >> 5) % 4096;
        px.copy_from_slice(&(v as u16).to_le_bytes());
    }
    std::fs::write(path, bytes).unwrap();
}

/// Copies nibabel's Siemens DWI mosaics (two files of one series: b = 0 and b = 1000, each
/// 896×896 = 7×7 tiles of 128×128, 48 slices, 12-bit) into `dir`, pixels filled.
fn siemens_dwi(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for (seed, f) in ["siemens_dwi_0.dcm.gz", "siemens_dwi_1000.dcm.gz"]
        .iter()
        .enumerate()
    {
        let p = util::nibabel_dicom(f, dir);
        fill_pixels(&p, 896 * 896 * 2, seed as u64);
    }
}

/// A Siemens mosaic series is un-tiled into 128×128×48 volumes (not one 896×896 slice), its two
/// files are the two time points of a 4-D series, and each time point equals dcm2niix's
/// NIfTI: voxels exactly, spacing and world coordinates within 0.01 mm (the position
/// correction of the mosaic corner and the CSA slice direction).
#[test]
fn siemens_mosaic_matches_dcm2niix() {
    let Some(dcm2niix) = util::dcm2niix("siemens_mosaic_matches_dcm2niix") else {
        return;
    };
    let t = util::tmp();
    let dir = t.path().join("dwi");
    siemens_dwi(&dir);
    let (series, bad) = scan_dicom_dir(&dir).unwrap();
    assert!(bad.is_empty(), "{bad:?}");
    assert_eq!(series.len(), 1);
    let s = &series[0];
    assert_eq!(s.files[0].kind, FileKind::Mosaic { tiles: 48, grid: 7 });
    assert_eq!(series_timepoints(s).unwrap(), 2);
    let refs = run_dcm2niix(&dcm2niix, &dir, &t.path().join("ref")).unwrap();
    let reference = &refs[&s.series_uid][0];
    for tp in 0..2 {
        let ours = read_dicom_timepoint(s, tp).unwrap();
        assert_eq!(ours.dims, [128, 128, 48]);
        let r = read_nifti_timepoint(reference, tp).unwrap();
        let c = compare_volumes(&ours, &r, 0.0).unwrap();
        assert!(c.identical(0.01), "t={tp}: {c:?}");
        assert!(ours.data.iter().filter(|&&v| v > 0.0).count() > ours.len() / 2);
    }
    assert!(read_dicom_series(s)
        .unwrap_err()
        .to_string()
        .contains("2 time points"));
}

/// A mosaic whose tile count comes from the CSA image header only (no (0019,100A)) gets the
/// first tile's corner and slice direction nibabel's `MosaicWrapper` computes.
#[test]
fn mosaic_from_csa_header_matches_nibabel() {
    let t = util::tmp();
    let f = util::nibabel_dicom("csa_slice_norm.dcm", t.path());
    let (series, _) = scan_dicom_dir(t.path()).unwrap();
    let file = &series[0].files[0];
    assert_eq!(file.kind, FileKind::Mosaic { tiles: 32, grid: 6 });
    assert_eq!(file.frame_size, [64, 64]);
    let script = format!(
        r#"
import json, warnings
warnings.simplefilter("ignore")
from nibabel.nicom import dicomwrappers as dw
w = dw.wrapper_from_file({f:?})
print(json.dumps({{"ipp": [float(v) for v in w.image_position], "normal": [float(v) for v in w.slice_normal], "dz": float(w.voxel_sizes[2])}}))
"#,
        f = f.display().to_string()
    );
    let o = util::run_ok(util::python().args(["-c", &script]));
    let r: serde_json::Value = serde_json::from_str(util::stdout(&o).trim()).unwrap();
    let p0 = file.frames[0].position.unwrap();
    let p1 = file.frames[1].position.unwrap();
    for i in 0..3 {
        // nibabel's image_position is LPS, like ImagePositionPatient
        assert!(
            (p0[i] - r["ipp"][i].as_f64().unwrap()).abs() < 1e-4,
            "{p0:?} vs {r}"
        );
        let step = (p1[i] - p0[i]) / r["dz"].as_f64().unwrap();
        assert!(
            (step - r["normal"][i].as_f64().unwrap()).abs() < 1e-4,
            "{step} vs {r}"
        );
    }
    // the header-only file has no pixels: reading it is an error naming the file
    let e = read_dicom_series(&series[0]).unwrap_err().to_string();
    assert!(
        e.contains("csa_slice_norm.dcm") && e.contains("PixelData"),
        "{e}"
    );
}

/// A mosaic whose size is not a whole grid of tiles (nibabel's cut-down 0.dcm: 256×256 for 48
/// images, 7×7 tiles of 36.6 pixels) is refused by name, never read as one big slice.
#[test]
fn mosaic_that_cannot_be_untiled_is_refused() {
    let t = util::tmp();
    util::nibabel_dicom("0.dcm", t.path());
    let (series, _) = scan_dicom_dir(t.path()).unwrap();
    let e = read_dicom_series(&series[0]).unwrap_err().to_string();
    assert!(
        e.contains("0.dcm") && e.contains("Siemens mosaic") && e.contains("cannot un-tile"),
        "{e}"
    );
}

/// A Philips enhanced multi-frame MR (nibabel's philips_mprage: one file, 176 sagittal frames
/// with per-frame PlanePositionSequence, shared orientation, spacing and rescale) equals
/// dcm2niix `-p n` (RescaleSlope/Intercept values): voxels within 2e-4 relative (dcm2niix keeps
/// the slope as float32), world coordinates within 0.01 mm.
#[test]
fn enhanced_multiframe_matches_dcm2niix() {
    let Some(dcm2niix) = util::dcm2niix("enhanced_multiframe_matches_dcm2niix") else {
        return;
    };
    let t = util::tmp();
    let dir = t.path().join("mf");
    std::fs::create_dir_all(&dir).unwrap();
    let f = util::nibabel_dicom("philips_mprage.dcm.gz", &dir);
    fill_pixels(&f, 176 * 256 * 256 * 2, 7);
    let (series, _) = scan_dicom_dir(&dir).unwrap();
    let s = &series[0];
    assert_eq!(s.files[0].kind, FileKind::MultiFrame { frames: 176 });
    let ours = read_dicom_series(s).unwrap();
    assert_eq!(ours.dims, [256, 256, 176]);
    let refs = run_dcm2niix(&dcm2niix, &dir, &t.path().join("ref")).unwrap();
    let r = read_nifti(&refs[&s.series_uid][0]).unwrap();
    let max = ours.data.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
    assert!(max > 1000.0);
    let c = compare_volumes(&ours, &r, 2e-4 * max).unwrap();
    assert!(
        c.differing == 0 && c.world_mm < 0.01 && c.spacing_mm < 0.01,
        "{c:?}"
    );
}

/// A multi-frame file without per-frame functional groups (pydicom's rtdose: 15 frames,
/// position tags at the top level only) is refused naming multi-frame, not read as its first
/// frame.
#[test]
fn legacy_multiframe_without_functional_groups_is_refused() {
    let t = util::tmp();
    std::fs::copy(
        util::pydicom_test_files().join("rtdose.dcm"),
        t.path().join("rtdose.dcm"),
    )
    .unwrap();
    let (series, _) = scan_dicom_dir(t.path()).unwrap();
    let e = read_dicom_series(&series[0]).unwrap_err().to_string();
    assert!(
        e.contains("rtdose.dcm") && e.contains("multi-frame") && e.contains("NumberOfFrames = 15"),
        "{e}"
    );
}

/// Stray bits above BitsStored (a 12-bit Siemens mosaic with bits 12-15 set in every pixel, as
/// an overlay or a careless export leaves them) are masked away: the corrupted copy reads
/// exactly like the original, and like pydicom's `pixel_array` of the corrupted copy.
#[test]
fn stray_high_bits_are_masked_like_pydicom() {
    let t = util::tmp();
    let clean = t.path().join("clean");
    let dirty = t.path().join("dirty");
    std::fs::create_dir_all(&clean).unwrap();
    std::fs::create_dir_all(&dirty).unwrap();
    let f = util::nibabel_dicom("siemens_dwi_0.dcm.gz", &clean);
    fill_pixels(&f, 896 * 896 * 2, 3);
    let mut bytes = std::fs::read(&f).unwrap();
    let n = 896 * 896 * 2; // implicit VR LE: PixelData is the file's last element
    let len = bytes.len();
    for px in bytes[len - n..].chunks_exact_mut(2) {
        px[1] |= 0xf0;
    }
    std::fs::write(dirty.join("siemens_dwi_0.dcm"), &bytes).unwrap();
    let read = |d: &Path| {
        let (s, _) = scan_dicom_dir(d).unwrap();
        read_dicom_series(&s[0]).unwrap()
    };
    let (a, b) = (read(&clean), read(&dirty));
    assert_eq!(a.data, b.data);
    assert!(a.data.iter().all(|&v| (0.0..4096.0).contains(&v)));
    assert!(a.data.iter().filter(|&&v| v > 0.0).count() > a.len() / 2);
    let px = read_dicom_pixels(&dirty.join("siemens_dwi_0.dcm")).unwrap();
    let o = util::run_ok(
        util::python()
            .arg(util::root().join("scripts/pydicom_pixels.py"))
            .arg(t.path())
            .arg(dirty.join("siemens_dwi_0.dcm")),
    );
    assert!(util::stdout(&o).contains("siemens_dwi_0.dcm"));
    let reference: Vec<i64> = std::fs::read(t.path().join("siemens_dwi_0.dcm.i64"))
        .unwrap()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(px.values, reference);
}

/// dcm2niix conformance on every image series of `../shared/data/dicom` (the check
/// `scripts/dcm2niix_conformance.sh` prints line by line): GE CT, GE MR ADC and the 10 time
/// points of the GE EPI series are identical to Debian's dcm2niix: voxels exactly, spacing and
/// world coordinates within 0.01 mm.
#[test]
fn dcm2niix_conformance_on_shared_dicom() {
    let root = require_data!("dicom");
    let Some(dcm2niix) = util::dcm2niix("dcm2niix_conformance_on_shared_dicom") else {
        return;
    };
    let t = util::tmp();
    let (series, bad) = scan_dicom_dir(&root).unwrap();
    assert!(bad.is_empty(), "{bad:?}");
    let mut checked = Vec::new();
    for (i, s) in series.iter().filter(|s| !s.is_seg).enumerate() {
        let input = t.path().join(format!("in{i}"));
        std::fs::create_dir_all(&input).unwrap();
        for (k, f) in s.files.iter().enumerate() {
            std::fs::copy(&f.path, input.join(format!("{k:05}.dcm"))).unwrap();
        }
        let refs = run_dcm2niix(&dcm2niix, &input, &t.path().join(format!("out{i}"))).unwrap();
        let reference = &refs[&s.series_uid][0];
        let nt = series_timepoints(s).unwrap();
        for tp in 0..nt {
            let ours = read_dicom_timepoint(s, tp).unwrap();
            let r = read_nifti_timepoint(reference, tp).unwrap();
            let c = compare_volumes(&ours, &r, 0.0).unwrap();
            assert!(c.identical(0.01), "{} t={tp}: {c:?}", s.folder().display());
        }
        checked.push((s.modality.clone(), nt));
    }
    checked.sort();
    assert_eq!(
        checked,
        [("CT".to_string(), 1), ("MR".into(), 1), ("MR".into(), 10)]
    );
}
