//! Issue 29, the first day of a new user, on real data: a `--shareable` folder and everything
//! made from it (run dir, reports, ONNX model, sidecar) holds no salt and no identifying name;
//! adding studies to a finished folder never changes a patient's split, and a run refuses to
//! resume on a changed folder; a CT DICOM series ingested without a pipeline is normalised as
//! CT and round-trips through train, export and infer.
use std::path::{Path, PathBuf};

use crate::util::{bin, python, run_ok, stderr, stdout, tmp};

const SALT: &str = "a-private-salt-for-the-scan-3141";
/// What must never appear in a shareable folder or anything made from it.
const KNOWN: [&str; 6] = [
    "DOE_JOHN_19580101",
    "DOE^JOHN",
    "19580101",
    "MRN-55501234",
    SALT,
    "pacs-root",
];

/// The 3-slice CT series with its SEG, its patient renamed to known strings, under
/// `pacs-root/DOE_JOHN_19580101/CT/`.
fn identified_dicom(dir: &Path) -> Option<PathBuf> {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::tags;
    let d = crate::util::shared_data("dicom", "first_day")?;
    let root = dir.join("pacs-root");
    let series = root.join("DOE_JOHN_19580101/CT");
    std::fs::create_dir_all(&series).unwrap();
    let mut files: Vec<(PathBuf, PathBuf)> = std::fs::read_dir(d.join("ct-3slice/series"))
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let dst = series.join(p.file_name().unwrap());
            (p, dst)
        })
        .collect();
    files.push((
        d.join("ct-3slice/liver_seg.dcm"),
        series.join("DOE_JOHN_seg.dcm"),
    ));
    for (src, dst) in files {
        let mut obj = dicom_object::open_file(&src).unwrap();
        for (tag, vr, v) in [
            (tags::PATIENT_NAME, VR::PN, "DOE^JOHN"),
            (tags::PATIENT_ID, VR::LO, "MRN-55501234"),
            (tags::PATIENT_BIRTH_DATE, VR::DA, "19580101"),
        ] {
            obj.put(DataElement::new(tag, vr, PrimitiveValue::from(v)));
        }
        obj.write_to_file(&dst).unwrap();
    }
    Some(root)
}

/// Every file under `dirs` (hidden ones included), as raw bytes and, for Parquet, as the text
/// of every decoded value; returns (file, string) for each known string found.
fn scan(dirs: &[&Path]) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut files = Vec::new();
    for d in dirs {
        walk(d, &mut files);
    }
    assert!(files.len() > 10, "{files:?}");
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        let mut text = String::from_utf8_lossy(&bytes).into_owned();
        if f.extension().is_some_and(|e| e == "parquet") {
            let script = "import sys, pyarrow.parquet as pq\n\
                t = pq.read_table(sys.argv[1])\n\
                print(t.schema.metadata)\n\
                for c in t.column_names:\n\
                \x20   if c not in ('image', 'mask', 'source_mask', 'affine'): print(t[c].to_pylist())\n";
            text += &stdout(&run_ok(python().args(["-c", script]).arg(f)));
        }
        for k in KNOWN {
            if text.contains(k) {
                found.push((f.display().to_string(), k.to_string()));
            }
        }
    }
    found
}

fn walk(d: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(d).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// Issue 29's scan: ingest `--shareable`, train, evaluate and export; no byte of any file
/// produced (shards with their hidden files, run dir, reports, ONNX, sidecar) holds the salt,
/// a folder name of the input or the patient's name, id or birth date. The key → path map is
/// written beside the folder, not in it.
#[test]
fn a_shareable_folder_and_everything_made_from_it_hold_no_name_and_no_salt() {
    let t = tmp();
    let Some(input) = identified_dicom(t.path()) else {
        return;
    };
    let shards = t.path().join("share");
    let o = bin("dmnet-prep")
        .args([
            "ingest",
            "--size",
            "32",
            "--layout",
            "dicom",
            "--shareable",
            "--input",
        ])
        .arg(&input)
        .arg("--out")
        .arg(&shards)
        .env("DMNET_SALT", SALT)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let map = t.path().join("share.source-map.json");
    let m = std::fs::read_to_string(&map).expect("the source map beside the folder");
    assert!(m.contains("DOE_JOHN_19580101/CT"), "{m}");
    let run = t.path().join("run");
    let o = bin("dmnet-train")
        .arg("--shards")
        .arg(&shards)
        .arg("--out")
        .arg(&run)
        .args([
            "--steps",
            "2",
            "--width",
            "0.125",
            "--device",
            "cpu",
            "--labeled-batch",
            "1",
        ])
        .args(["--unlabeled-batch", "1", "-q"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    for ck in ["best", "last"] {
        let o = bin("dmnet-train")
            .args([
                "eval",
                "--split",
                "train",
                "--device",
                "cpu",
                "--checkpoint",
                ck,
                "--run",
            ])
            .arg(&run)
            .arg("--shards")
            .arg(&shards)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let model = t.path().join("models/m.onnx");
    let o = bin("dmnet-export")
        .arg("--run")
        .arg(&run)
        .arg("--out")
        .arg(&model)
        .args(["--checkpoint", "last"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let pred = t.path().join("pred");
    let o = bin("dmnet-infer")
        .args(["--device", "cpu", "--split", "train", "--model"])
        .arg(&model)
        .arg("--input")
        .arg(&shards)
        .arg("--out")
        .arg(&pred)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let found = scan(&[&shards, &run, model.parent().unwrap(), &pred]);
    assert!(found.is_empty(), "identifying strings found: {found:?}");
    // the keys are there instead: the report names the case by its patient key
    let report = std::fs::read_to_string(run.join("eval-train-last.json")).unwrap();
    assert!(report.contains("study-"), "{report}");
}

/// Links cases `from..to` of la2018 (sorted) into an MSD folder.
fn add_cases(root: &Path, from: usize, to: usize) {
    let la = crate::util::shared_data("la2018", "first_day").unwrap();
    let mut cases: Vec<_> = std::fs::read_dir(la.join("imagesTr"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    cases.sort();
    for c in &cases[from..to] {
        for sub in ["imagesTr", "labelsTr"] {
            std::os::unix::fs::symlink(la.join(sub).join(c), root.join(sub).join(c)).unwrap();
        }
    }
}

/// (patient key → split) of every row of a folder.
fn row_splits(dir: &Path) -> std::collections::BTreeMap<String, String> {
    dmnet::shard::read_shards(dir)
        .unwrap()
        .flat_map(|g| g.unwrap())
        .map(|r| (r.patient_key, r.split.to_string()))
        .collect()
}

/// Issue 29: adding 5 studies to a finished 5-study folder rewrote `_splits.json` for 10
/// patients while the old rows kept their old split. Now the old patients keep theirs in the
/// JSON and in the rows, only the new ones are assigned, `inspect` checks every row against
/// the JSON, and a run started on the 5-study folder refuses to resume on the changed one.
#[test]
fn adding_studies_never_changes_a_split_and_a_run_refuses_the_changed_folder() {
    crate::require_data!("la2018");
    let t = tmp();
    let input = crate::prep::la_subset(t.path(), 5);
    let out = t.path().join("s");
    let ingest = || {
        bin("dmnet-prep")
            .args([
                "ingest",
                "-q",
                "--size",
                "32",
                "--protocol",
                "all-slices",
                "--input",
            ])
            .arg(&input)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap()
    };
    assert!(ingest().status.success());
    let before = row_splits(&out);
    let splits = |d: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(d.join("_splits.json")).unwrap()).unwrap()
    };
    let json_before = splits(&out);
    let run = t.path().join("run");
    let o = bin("dmnet-train")
        .arg("--shards")
        .arg(&out)
        .arg("--out")
        .arg(&run)
        .args([
            "--steps",
            "4",
            "--eval-every",
            "2",
            "--width",
            "0.125",
            "--device",
            "cpu",
            "-q",
        ])
        .args(["--labeled-batch", "2", "--unlabeled-batch", "2"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));

    add_cases(&input, 5, 10);
    let o = ingest();
    assert!(o.status.success(), "{}", stderr(&o));
    let after = row_splits(&out);
    assert_eq!(after.len(), 10);
    for (k, s) in &before {
        assert_eq!(after.get(k), Some(s), "patient {k} changed split");
    }
    let json_after = splits(&out);
    for split in ["train", "val", "test"] {
        for k in json_before[split].as_array().unwrap() {
            assert!(
                json_after[split].as_array().unwrap().contains(k),
                "{k} left {split}"
            );
        }
    }
    let insp = run_ok(bin("dmnet-prep").arg("inspect").arg(&out));
    assert!(
        stdout(&insp).contains("all invariants hold"),
        "{}",
        stdout(&insp)
    );

    let o = bin("dmnet-train")
        .arg("--out")
        .arg(&run)
        .args(["--resume", "--steps", "6", "--device", "cpu"])
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("shard folder changed since this run started"),
        "{err}"
    );

    // inspect catches a row whose split disagrees with _splits.json
    let mut bad = json_after.clone();
    let moved = bad["train"].as_array_mut().unwrap().remove(0);
    bad["test"].as_array_mut().unwrap().push(moved);
    std::fs::write(out.join("_splits.json"), bad.to_string()).unwrap();
    let insp = bin("dmnet-prep").arg("inspect").arg(&out).output().unwrap();
    assert_eq!(insp.status.code(), Some(1));
    assert!(
        stdout(&insp).contains("_splits.json puts patient"),
        "{}",
        stdout(&insp)
    );
}

/// Issue 29: `dicom/ct-3slice` ingested without a pipeline was normalised as MR, and its own
/// model then refused the series ("model trained on MR, input is CT"). Now the modality decides:
/// CT, channel `ct`; train 2 steps, export, and segment the same series with exit 0.
#[test]
fn a_ct_series_without_a_pipeline_round_trips() {
    let t = tmp();
    let Some(d) = crate::util::shared_data("dicom", "first_day") else {
        return;
    };
    let input = t.path().join("ct");
    std::fs::create_dir_all(&input).unwrap();
    for e in std::fs::read_dir(d.join("ct-3slice/series")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, input.join(p.file_name().unwrap())).unwrap();
    }
    std::fs::copy(d.join("ct-3slice/liver_seg.dcm"), input.join("seg.dcm")).unwrap();
    let shards = t.path().join("s");
    let o = bin("dmnet-prep")
        .args(["ingest", "--size", "32", "--input"])
        .arg(&input)
        .arg("--out")
        .arg(&shards)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(shards.join("_prep-config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["preprocess"]["normalization"], "ct", "{cfg}");
    let rows: Vec<_> = dmnet::shard::read_shards(&shards)
        .unwrap()
        .flat_map(|g| g.unwrap())
        .collect();
    assert!(rows.iter().all(|r| r.channel_names == ["ct"]));
    let run = t.path().join("run");
    let o = bin("dmnet-train")
        .arg("--shards")
        .arg(&shards)
        .arg("--out")
        .arg(&run)
        .args(["--steps", "2", "--width", "0.125", "--device", "cpu", "-q"])
        .args(["--labeled-batch", "1", "--unlabeled-batch", "1"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let model = t.path().join("m.onnx");
    let o = bin("dmnet-export")
        .arg("--run")
        .arg(&run)
        .arg("--out")
        .arg(&model)
        .args(["--checkpoint", "last"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let out = t.path().join("pred");
    let o = bin("dmnet-infer")
        .args(["--device", "cpu", "--model"])
        .arg(&model)
        .arg("--input")
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}
