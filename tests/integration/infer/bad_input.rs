//! Issue 12's inference-side bad-input cases, each on a corrupted copy of real data in a temp
//! dir: the policy is one line naming the file and what is wrong, the other cases go on, the
//! summary is written, exit 2; no panic, nothing partial visible.
use super::{exported, infer_run, la_case, model_config, preprocess, summary_of};
use crate::util::{stderr, tmp};
use std::path::{Path, PathBuf};

/// The `.nii.gz` mask files in `dir` (hidden temporaries would show here too).
fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|r| {
            r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn la_images(n: usize) -> Option<Vec<PathBuf>> {
    let root = crate::util::shared_data("la2018/imagesTr", "infer::bad_input")?;
    let mut v: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v.truncate(n);
    Some(v)
}

fn no_panic(o: &std::process::Output) {
    let e = stderr(o);
    assert!(!e.contains("panicked"), "{e}");
}

#[test]
fn sidecar_claiming_three_classes_for_a_two_class_model_is_an_error_not_a_panic() {
    let Some((img, _)) = la_case() else { return };
    let dir = tmp();
    let onnx = exported(dir.path(), "m", &model_config(1), &preprocess());
    let side = onnx.with_extension("json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&side).unwrap()).unwrap();
    v["model"]["num_classes"] = 3.into();
    v["class_names"] = serde_json::json!(["background", "left_atrium", "tumour"]);
    std::fs::write(&side, v.to_string()).unwrap();
    let out = dir.path().join("out");
    let o = infer_run(&onnx, &img, &out, &[]);
    no_panic(&o);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        e.contains("m.json") && e.contains("m.onnx") && e.contains("num_classes"),
        "{e}"
    );
    assert!(
        files_in(&out).iter().all(|f| !f.ends_with(".nii.gz")),
        "{:?}",
        files_in(&out)
    );

    // The same sidecar beside a model without dmnet metadata: the graph's K decides.
    let bare = dir.path().join("bare.onnx");
    let strip = "import onnx,sys; m=onnx.load(sys.argv[1]); del m.metadata_props[:]; onnx.save(m, sys.argv[2])";
    crate::util::run_ok(
        crate::util::python()
            .args(["-c", strip])
            .arg(&onnx)
            .arg(&bare),
    );
    std::fs::copy(&side, bare.with_extension("json")).unwrap();
    let o = infer_run(&bare, &img, &out, &[]);
    no_panic(&o);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains("3 classes") && e.contains("outputs 2"), "{e}");

    // --use-model-metadata: the model's own description (2 classes) is followed.
    let o = infer_run(&onnx, &img, &out, &["--use-model-metadata"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn sidecar_normalisation_disagreeing_with_the_model_metadata_is_an_error_naming_both() {
    let Some((img, _)) = la_case() else { return };
    let dir = tmp();
    let onnx = exported(dir.path(), "m", &model_config(1), &preprocess());
    let good = dir.path().join("good");
    let o = infer_run(&onnx, &img, &good, &[]);
    assert!(o.status.success(), "{}", stderr(&o));

    let side = onnx.with_extension("json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&side).unwrap()).unwrap();
    v["preprocessing"]["config"]["normalization"] = "zscore".into();
    std::fs::write(&side, v.to_string()).unwrap();
    let bad = dir.path().join("bad");
    let o = infer_run(&onnx, &img, &bad, &[]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        e.contains("m.json") && e.contains("m.onnx") && e.contains("normalization"),
        "{e}"
    );
    assert!(e.contains("\"zscore\"") && e.contains("\"mri\""), "{e}");

    // With the override the model's metadata wins: the very masks of the untouched model.
    let o = infer_run(&onnx, &img, &bad, &["--use-model-metadata"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let name = img.file_name().unwrap();
    let read = |p: PathBuf| {
        let mut d = Vec::new();
        use std::io::Read;
        flate2::read::GzDecoder::new(std::fs::File::open(p).unwrap())
            .read_to_end(&mut d)
            .unwrap();
        d
    };
    assert!(read(good.join(name)) == read(bad.join(name)));
}

#[test]
fn a_bad_volume_in_a_folder_is_one_line_the_others_go_on_summary_written_exit_2() {
    let Some(imgs) = la_images(3) else { return };
    let dir = tmp();
    let onnx = exported(dir.path(), "m", &model_config(1), &preprocess());
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    for f in &imgs[..2] {
        std::os::unix::fs::symlink(f, input.join(f.file_name().unwrap())).unwrap();
    }
    // A truncated copy of the third volume (a download cut short), sorted first.
    let bytes = std::fs::read(&imgs[2]).unwrap();
    let cut = input.join("000_truncated.nii.gz");
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
    let out = dir.path().join("out");
    let o = infer_run(&onnx, &input, &out, &[]);
    no_panic(&o);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    let lines: Vec<&str> = e.lines().filter(|l| l.contains("000_truncated")).collect();
    assert_eq!(lines.len(), 1, "{e}");
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(s["cases"], 2);
    assert_eq!(s["failed"].as_array().unwrap().len(), 1);
    assert!(s["failed"][0]["input"]
        .as_str()
        .unwrap()
        .ends_with("000_truncated.nii.gz"));
    let files = files_in(&out);
    for f in &imgs[..2] {
        assert!(files.contains(&f.file_name().unwrap().to_string_lossy().into_owned()));
    }
    assert!(files.iter().all(|f| !f.starts_with('.')), "{files:?}");
    assert!(!out.join("000_truncated.nii.gz").exists());
}

#[test]
fn an_appledouble_file_is_skipped() {
    let Some(imgs) = la_images(1) else { return };
    let dir = tmp();
    let onnx = exported(dir.path(), "m", &model_config(1), &preprocess());
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    std::os::unix::fs::symlink(&imgs[0], input.join("case.nii.gz")).unwrap();
    // macOS writes a 4 KB AppleDouble resource file beside each file it copies.
    let mut apple = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ".to_vec();
    apple.resize(4096, 0);
    std::fs::write(input.join("._case.nii.gz"), apple).unwrap();
    let out = dir.path().join("out");
    let o = infer_run(&onnx, &input, &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s = summary_of(&o);
    assert_eq!(
        (s["cases"].as_u64(), s["failed"].as_array().unwrap().len()),
        (Some(1), 0)
    );
    assert!(out.join("case.nii.gz").exists() && !out.join("._case.nii.gz").exists());
}

#[test]
fn scan_nii_and_scan_nii_gz_in_one_folder_is_an_error_naming_both() {
    let Some(imgs) = la_images(2) else { return };
    let dir = tmp();
    let onnx = exported(dir.path(), "m", &model_config(1), &preprocess());
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    std::os::unix::fs::symlink(&imgs[0], input.join("scan.nii.gz")).unwrap();
    let mut raw = Vec::new();
    use std::io::Read;
    flate2::read::GzDecoder::new(std::fs::File::open(&imgs[1]).unwrap())
        .read_to_end(&mut raw)
        .unwrap();
    std::fs::write(input.join("scan.nii"), raw).unwrap();
    std::os::unix::fs::symlink(&imgs[1], input.join("other.nii.gz")).unwrap();
    let out = dir.path().join("out");
    let o = infer_run(&onnx, &input, &out, &[]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    let line = e
        .lines()
        .find(|l| l.contains("scan.nii "))
        .unwrap_or_else(|| panic!("{e}"));
    assert!(line.contains("scan.nii.gz"), "{line}");
    assert!(
        !out.join("scan.nii.gz").exists(),
        "one of the two masks would be lost"
    );
    assert!(out.join("other.nii.gz").exists());
}

#[test]
fn a_stray_nifti_in_a_dicom_series_folder_is_detected() {
    let Some(series) = crate::util::shared_data("dicom/ct-3slice/series", "infer") else {
        return;
    };
    let Some(imgs) = la_images(1) else { return };
    let dir = tmp();
    let onnx = exported(dir.path(), "m", &model_config(1), &preprocess());
    let input = dir.path().join("series");
    std::fs::create_dir_all(&input).unwrap();
    for e in std::fs::read_dir(&series).unwrap() {
        let p = e.unwrap().path();
        std::os::unix::fs::symlink(&p, input.join(p.file_name().unwrap())).unwrap();
    }
    std::os::unix::fs::symlink(&imgs[0], input.join("stray.nii.gz")).unwrap();
    let out = dir.path().join("out");
    let o = infer_run(&onnx, &input, &out, &["--allow-mismatch"]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains("stray.nii") && e.contains("3 DICOM file"), "{e}");
    assert!(!out.join("stray.nii.gz").exists());
}

#[test]
fn an_unreadable_dicom_file_keeps_its_reason() {
    let Some(series) = crate::util::shared_data("dicom/ct-3slice/series", "infer") else {
        return;
    };
    let dir = tmp();
    let ct = super::ct_preprocess();
    let onnx = exported(dir.path(), "ct", &model_config(1), &ct);
    let input = dir.path().join("series");
    std::fs::create_dir_all(&input).unwrap();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&series)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for p in &files[..2] {
        std::os::unix::fs::symlink(p, input.join(p.file_name().unwrap())).unwrap();
    }
    // The third slice with its data elements overwritten after the DICM marker.
    let mut b = std::fs::read(&files[2]).unwrap();
    for (i, v) in b.iter_mut().enumerate().skip(140).take(400) {
        *v = (i * 37 % 251) as u8;
    }
    std::fs::write(input.join("03.dcm"), &b).unwrap();
    let out = dir.path().join("out");
    let o = infer_run(&onnx, &input, &out, &[]);
    no_panic(&o);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    let line = e
        .lines()
        .find(|l| l.contains("03.dcm"))
        .unwrap_or_else(|| panic!("{e}"));
    assert!(line.contains("unreadable DICOM file:"), "{line}");
    assert!(
        line.len() > line.find("unreadable DICOM file:").unwrap() + 30,
        "no reason: {line}"
    );
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert!(s["failed"][0]["error"]
        .as_str()
        .unwrap()
        .contains("unreadable DICOM file:"));
}

/// The prostate ADC series (20 slices) and the 3-slice CT series, copied; `adc` then has one
/// slice file replaced by an empty file of the same name (a truncated copy).
fn dicom_with_an_empty_slice(dir: &Path) -> Option<(PathBuf, String)> {
    let d = crate::util::shared_data("dicom", "infer::bad_input")?;
    let root = dir.join("pacs");
    for (src, dst) in [("prostate-adc", "adc"), ("ct-3slice/series", "ct")] {
        std::fs::create_dir_all(root.join(dst)).unwrap();
        for e in std::fs::read_dir(d.join(src)).unwrap() {
            let p = e.unwrap().path();
            std::fs::copy(&p, root.join(dst).join(p.file_name().unwrap())).unwrap();
        }
    }
    let mut adc: Vec<PathBuf> = std::fs::read_dir(root.join("adc"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    adc.sort();
    assert_eq!(adc.len(), 20);
    let victim = &adc[9];
    std::fs::write(victim, b"").unwrap();
    Some((
        root,
        victim.file_name().unwrap().to_string_lossy().into_owned(),
    ))
}

/// Issue 23: a 0-byte file inside a 20-slice series was never named ("uneven slice gaps … (missing
/// slice?)"). Now the empty file is one error line of its own and the series' error names it;
/// exit 2; the other series is segmented.
#[test]
fn an_empty_dicom_file_inside_a_series_is_named() {
    let dir = tmp();
    let Some((root, empty)) = dicom_with_an_empty_slice(dir.path()) else {
        return;
    };
    let pre = preprocess();
    let onnx = exported(dir.path(), "m", &model_config(1), &pre);
    let out = dir.path().join("out");
    let o = infer_run(&onnx, &root, &out, &["--allow-mismatch"]);
    no_panic(&o);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    let errors: Vec<&str> = e.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(
        errors
            .iter()
            .any(|l| l.contains(&empty) && l.contains("0 bytes")),
        "{e}"
    );
    let s = summary_of(&o);
    let text = s.to_string();
    assert!(text.contains(&empty), "{text}");
    assert!(
        files_in(&out)
            .iter()
            .any(|f| f.starts_with("ct") && f.ends_with(".nii.gz")),
        "{:?}",
        files_in(&out)
    );
}

/// Issue 23: inference followed `adc/loop -> ..` out of its input folder and segmented the
/// series it found in the parent. Now the link is skipped with a warning naming it, and
/// nothing outside the input is read.
#[test]
fn a_symlink_back_to_a_parent_is_skipped_and_named() {
    let dir = tmp();
    let Some(d) = crate::util::shared_data("dicom", "infer::bad_input") else {
        return;
    };
    let outside = dir.path().join("outside");
    let input = outside.join("input");
    std::fs::create_dir_all(input.join("adc")).unwrap();
    for e in std::fs::read_dir(d.join("prostate-adc")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, input.join("adc").join(p.file_name().unwrap())).unwrap();
    }
    // a CT series beside the input folder: reading it would mean leaving the input
    std::fs::create_dir_all(outside.join("ct")).unwrap();
    for e in std::fs::read_dir(d.join("ct-3slice/series")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, outside.join("ct").join(p.file_name().unwrap())).unwrap();
    }
    std::os::unix::fs::symlink("../..", input.join("adc/loop")).unwrap();
    let onnx = exported(dir.path(), "m", &model_config(1), &preprocess());
    let out = dir.path().join("out");
    let o = infer_run(&onnx, &input, &out, &["--allow-mismatch"]);
    no_panic(&o);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{e}");
    assert!(
        e.lines()
            .any(|l| l.contains("WARN") && l.contains("loop") && l.contains("skipped")),
        "{e}"
    );
    let s = summary_of(&o);
    assert_eq!(s["cases"], 1, "{s}");
}
