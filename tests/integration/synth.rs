//! The synthetic phantom cohort (`dmnet-prep synth`): files an independent reader (nibabel)
//! opens with the written geometry, KiTS19 label values, CT-like HU; DICOM series readable
//! with their SYNTHETIC identity and LPS geometry.
use crate::util::{python, run_ok, stdout, tmp};
use dmnet::prep::synth::{phantom, synthesize, SynthConfig};

#[test]
fn synth_writes_kits19_nifti_that_nibabel_reads_with_its_geometry() {
    let dir = tmp();
    let cfg = SynthConfig {
        patients: 2,
        dicom_patients: 1,
        seed: 3,
        size: 48,
    };
    let summary = synthesize(dir.path(), &cfg).unwrap();
    assert_eq!(summary.nifti_cases, 2);
    let p = phantom(3u64.wrapping_mul(1_000_003), 48); // case_00000
    let script = r#"
import sys, json, nibabel as nib, numpy as np
img = nib.load(sys.argv[1] + '/case_00000/imaging.nii.gz')
seg = nib.load(sys.argv[1] + '/case_00000/segmentation.nii.gz')
a, l = np.asarray(img.dataobj), np.asarray(seg.dataobj)
print(json.dumps({'shape': list(a.shape), 'affine': img.affine.tolist(), 'seg_affine': seg.affine.tolist(),
  'labels': sorted(int(v) for v in np.unique(l)), 'min': float(a.min()), 'max': float(a.max()),
  'kidney_mean': float(a[l == 1].mean()), 'sform': int(img.header['sform_code']), 'qform': int(img.header['qform_code'])}))
"#;
    let out = run_ok(python().args(["-c", script]).arg(&summary.kits19));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["shape"], serde_json::json!(p.dims));
    assert_eq!(v["labels"], serde_json::json!([0, 1, 2]));
    assert_eq!(
        (v["sform"].as_i64(), v["qform"].as_i64()),
        (Some(1), Some(1))
    );
    for (r, row) in p.affine.iter().enumerate() {
        for (c, want) in row.iter().enumerate() {
            let got = v["affine"][r][c].as_f64().unwrap();
            assert!(
                (got - want).abs() < 1e-3,
                "affine[{r}][{c}] {got} vs {want}"
            );
        }
    }
    assert_eq!(v["affine"], v["seg_affine"]);
    assert!(
        v["min"].as_f64().unwrap() < -900.0 && v["max"].as_f64().unwrap() > 400.0,
        "{v}"
    );
    assert!(v["kidney_mean"].as_f64().unwrap() > 100.0, "{v}");
    assert!(dir.path().join("SYNTHETIC.txt").exists());
}

#[test]
fn synth_dicom_series_carries_lps_geometry_and_synthetic_identity() {
    use dicom_dictionary_std::tags;
    let dir = tmp();
    let cfg = SynthConfig {
        patients: 0,
        dicom_patients: 1,
        seed: 5,
        size: 32,
    };
    let summary = synthesize(dir.path(), &cfg).unwrap();
    let series = summary.dicom.join("case_00000");
    let mut files: Vec<_> = std::fs::read_dir(&series)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let p = phantom(5u64.wrapping_mul(1_000_003), 32);
    assert_eq!(files.len(), p.dims[2]);
    let obj = dicom_object::open_file(&files[1]).unwrap();
    let s = |t| obj.element(t).unwrap().to_str().unwrap().to_string();
    assert_eq!(s(tags::PATIENT_NAME), "SYNTHETIC^PHANTOM");
    let ipp: Vec<f64> = s(tags::IMAGE_POSITION_PATIENT)
        .split('\\')
        .map(|x| x.trim().parse().unwrap())
        .collect();
    // Slice 1 in RAS is affine · (0, 0, 1); DICOM stores LPS (x and y negated).
    let want = [
        -(p.affine[0][2] + p.affine[0][3]),
        -(p.affine[1][2] + p.affine[1][3]),
        p.affine[2][2] + p.affine[2][3],
    ];
    for k in 0..3 {
        assert!((ipp[k] - want[k]).abs() < 1e-4, "IPP {ipp:?} vs {want:?}");
    }
    assert_eq!(
        s(tags::IMAGE_ORIENTATION_PATIENT)
            .split('\\')
            .map(|x| x.trim().parse::<f64>().unwrap())
            .collect::<Vec<_>>(),
        [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    );
    assert_eq!(
        obj.element(tags::PIXEL_DATA)
            .unwrap()
            .to_bytes()
            .unwrap()
            .len(),
        32 * 32 * 2
    );
}
