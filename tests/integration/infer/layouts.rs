//! Issue 14 point 2: folder prediction like `nnUNetv2_predict -i -o` — an nnU-Net v2 raw
//! folder (imagesTs/, else imagesTr/ with labelsTr/), a KiTS tree, a flat folder; `_0000`
//! dropped from output names, label files skipped, per-case metrics in metrics.csv checked
//! against NumPy on the masks and labels as nibabel reads them.
use super::{exported, infer_run, model_config, preprocess, summary_of};
use crate::export::py;
use crate::util::{run_ok, stderr, tmp};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

fn la_cases(n: usize) -> Option<Vec<(PathBuf, PathBuf)>> {
    let root = crate::util::shared_data("la2018", "infer::layouts")?;
    let mut v: Vec<PathBuf> = std::fs::read_dir(root.join("imagesTr"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    Some(
        v.into_iter()
            .take(n)
            .map(|i| {
                let l = root.join("labelsTr").join(i.file_name().unwrap());
                (i, l)
            })
            .collect(),
    )
}

/// Checks OUT/metrics.csv against Dice/IoU computed with NumPy from the written masks and
/// the label files; returns the number of rows.
fn check_metrics_csv(out: &Path, cases: &[(&str, &Path)]) -> usize {
    let script = r#"
import csv, sys, nibabel as nib, numpy as np
rows = list(csv.DictReader(open(sys.argv[1])))
pairs = sys.argv[2:]
for case, label in zip(pairs[0::2], pairs[1::2]):
    m = np.asanyarray(nib.load(f"{sys.argv[1].rsplit('/', 1)[0]}/{case}.nii.gz").dataobj)
    t = np.asanyarray(nib.load(label).dataobj).round().astype(np.int64)
    r = [x for x in rows if x["case"] == case and x["class"] == "1"]
    assert len(r) == 1, (case, rows)
    r = r[0]
    p, g = m == 1, t == 1
    tp, fp, fn = int((p & g).sum()), int((p & ~g).sum()), int((~p & g).sum())
    assert (int(r["predicted_voxels"]), int(r["true_voxels"])) == (tp + fp, tp + fn), (r, tp, fp, fn)
    dice = 2 * tp / (2 * tp + fp + fn)
    assert abs(float(r["dice"]) - dice) < 1e-6, (r["dice"], dice)
    assert abs(float(r["iou"]) - tp / (tp + fp + fn)) < 1e-6
    # the evaluator's settings are in every row; HD95/ASD are numbers (MedPy-checked elsewhere)
    assert (r["grid"], r["convention"], r["units"]) == ("source", "nnunet", "mm"), r
    assert float(r["hd95"]) >= 0 and float(r["asd"]) >= 0, r
print(len(rows))
"#;
    let mut cmd = py();
    cmd.args(["-c", script]).arg(out.join("metrics.csv"));
    for (c, l) in cases {
        cmd.arg(c).arg(l);
    }
    crate::util::stdout(&run_ok(&mut cmd))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn an_nnunet_v2_raw_folder_gives_one_correctly_named_mask_per_case() {
    let Some(cases) = la_cases(3) else { return };
    let dir = tmp();
    let onnx = exported(dir.path(), "la", &model_config(1), &preprocess());
    let ds = dir.path().join("Dataset027_LA");
    for sub in ["imagesTr", "labelsTr"] {
        std::fs::create_dir_all(ds.join(sub)).unwrap();
    }
    let names = ["la_000", "la_001"];
    for ((img, lab), name) in cases.iter().zip(names) {
        symlink(img, ds.join(format!("imagesTr/{name}_0000.nii.gz"))).unwrap();
        symlink(lab, ds.join(format!("labelsTr/{name}.nii.gz"))).unwrap();
    }
    let dj = serde_json::json!({"channel_names": {"0": "MRI"},
        "labels": {"background": 0, "left atrium": 1}, "numTraining": 2, "file_ending": ".nii.gz"});
    std::fs::write(ds.join("dataset.json"), dj.to_string()).unwrap();

    // No imagesTs/: the training images are predicted, and compared with their labels.
    let out = dir.path().join("tr");
    let o = infer_run(&onnx, &ds, &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s = summary_of(&o);
    assert_eq!(
        (s["layout"].as_str(), s["cases"].as_u64()),
        (Some("msd"), Some(2))
    );
    for name in names {
        assert!(out.join(format!("{name}.nii.gz")).exists(), "{name}");
        assert!(!out.join(format!("{name}_0000.nii.gz")).exists());
    }
    let pairs: Vec<(&str, &Path)> = names
        .iter()
        .zip(&cases)
        .map(|(n, (_, l))| (*n, l.as_path()))
        .collect();
    assert_eq!(check_metrics_csv(&out, &pairs), 2);

    // imagesTs/ with a case: only it is predicted; no labels, so no metrics.csv.
    std::fs::create_dir_all(ds.join("imagesTs")).unwrap();
    symlink(&cases[2].0, ds.join("imagesTs/la_100_0000.nii.gz")).unwrap();
    let out = dir.path().join("ts");
    let o = infer_run(&onnx, &ds, &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(summary_of(&o)["cases"], 1);
    assert!(out.join("la_100.nii.gz").exists() && !out.join("metrics.csv").exists());
}

#[test]
fn a_kits_tree_and_a_flat_folder_skip_label_files() {
    let Some(spleen) = crate::util::shared_data("spleen-ct", "infer::layouts") else {
        return;
    };
    let Some(cord) = crate::util::shared_data("spinal-cord-mri", "infer::layouts") else {
        return;
    };
    let dir = tmp();
    let onnx = exported(dir.path(), "m", &model_config(1), &preprocess());
    // KiTS: case_00000/imaging.nii.gz with its segmentation.nii.gz beside it.
    let kits = dir.path().join("kits");
    let case = kits.join("case_00000");
    std::fs::create_dir_all(&case).unwrap();
    let label = spleen.join("labelsTr/spleen2.nii.gz");
    symlink(
        spleen.join("imagesTr/spleen2.nii.gz"),
        case.join("imaging.nii.gz"),
    )
    .unwrap();
    symlink(&label, case.join("segmentation.nii.gz")).unwrap();
    let out = dir.path().join("kits-out");
    let o = infer_run(&onnx, &kits, &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s = summary_of(&o);
    assert_eq!(
        (s["layout"].as_str(), s["cases"].as_u64()),
        (Some("kits"), Some(1))
    );
    assert!(out.join("case_00000.nii.gz").exists());
    assert_eq!(check_metrics_csv(&out, &[("case_00000", &label)]), 1);

    // BIDS-like flat folder: the image and its `_seg-manual` label; only the image is a case.
    let out = dir.path().join("flat-out");
    let o = infer_run(&onnx, &cord, &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s = summary_of(&o);
    assert_eq!(
        (s["layout"].as_str(), s["cases"].as_u64()),
        (Some("folder"), Some(1))
    );
    assert!(out.join("sub-unf01_T2w.nii.gz").exists());
    assert!(!out.join("sub-unf01_T2w_seg-manual.nii.gz").exists());
}
