//! Issue 24, ACDC from SSL4MIS's own files: a subset of `../shared/data/acdc` (the first 3
//! patients of `train_slices.list`, the first val and test patient, both frames each) laid out as
//! SSL4MIS lays it out, plus a truncated h5 volume listed in `test.list`. `--layout auto` finds
//! the layout; the lists are the split; `--labeled-patients 2` labels the first two patients of
//! the list; every slice's size and label histogram equal h5py's (tests/golden/acdc_subset.py);
//! no spacing is invented; the truncated file is one line naming it, exit 2, the others written.
//! Then every method trains a few steps on the folder and `dmnet-train eval` reports per class.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::util::{bin, python, run_ok, stderr, stdout, tmp};

fn golden() -> Value {
    let p = crate::util::root().join("tests/golden/acdc_subset.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// The subset folder under `dir` (files linked), with `patient013_frame01.h5` truncated to
/// half its length and listed in `test.list`; returns the folder.
fn subset(acdc: &Path, dir: &Path, g: &Value) -> PathBuf {
    let root = dir.join("acdc");
    std::fs::create_dir_all(root.join("data/slices")).unwrap();
    let train = strings(&g["train_slice_lines"]);
    for l in &train {
        let f = format!("{l}.h5");
        std::os::unix::fs::symlink(
            acdc.join("data/slices").join(&f),
            root.join("data/slices").join(&f),
        )
        .unwrap();
    }
    let (val, mut test) = (strings(&g["val_frames"]), strings(&g["test_frames"]));
    for f in val.iter().chain(&test) {
        let f = format!("{f}.h5");
        std::os::unix::fs::symlink(acdc.join("data").join(&f), root.join("data").join(&f)).unwrap();
    }
    let good = std::fs::read(acdc.join("data/patient013_frame01.h5")).unwrap();
    std::fs::write(
        root.join("data/patient013_frame01.h5"),
        &good[..good.len() / 2],
    )
    .unwrap();
    test.push("patient013_frame01".into());
    let frames = |lines: &[String]| {
        let mut v: Vec<String> = Vec::new();
        for l in lines {
            let f = l
                .rsplit_once("_slice_")
                .map_or(l.as_str(), |x| x.0)
                .to_string();
            if !v.contains(&f) {
                v.push(f);
            }
        }
        v
    };
    for (name, lines) in [
        ("train_slices.list", train.clone()),
        ("train.list", frames(&train)),
        ("val.list", val),
        ("test.list", test),
    ] {
        std::fs::write(root.join(name), lines.join("\n") + "\n").unwrap();
    }
    root
}

/// Per frame (the file name's stem): split, labeled flags, (orig height, orig width), the
/// source-grid label histogram per slice in slice order, spacing_known flags; read with pyarrow.
fn read_back(shards: &Path) -> BTreeMap<String, Value> {
    let script = r#"
import sys, json, pathlib, numpy as np, pyarrow.dataset as ds
t = ds.dataset(sys.argv[1] + "/data", format="parquet").to_table(columns=[
    "source_path", "slice_index", "split", "labeled", "orig_height", "orig_width",
    "source_mask", "spacing_known", "label_names"]).to_pylist()
out = {}
for r in sorted(t, key=lambda r: (r["source_path"], r["slice_index"])):
    stem = pathlib.Path(r["source_path"]).stem
    frame = stem.rsplit("_slice_", 1)[0]
    e = out.setdefault(frame, {"split": r["split"], "labeled": [], "size": [], "hist": [], "spacing_known": [], "label_names": r["label_names"]})
    e["labeled"].append(r["labeled"])
    e["size"].append([r["orig_height"], r["orig_width"]])
    m = np.frombuffer(r["source_mask"], dtype=np.uint8) if r["source_mask"] is not None else None
    e["hist"].append(None if m is None else [int((m == k).sum()) for k in range(4)])
    e["spacing_known"].append(r["spacing_known"])
print(json.dumps(out))
"#;
    let o = run_ok(python().arg("-c").arg(script).arg(shards));
    serde_json::from_str(&stdout(&o)).unwrap()
}

fn pipeline(dir: &Path) -> PathBuf {
    let p = dir.join("acdc-test.toml");
    std::fs::write(
        &p,
        "name = \"acdc-test\"\n[prep]\nprotocol = \"all-slices\"\nrow_group_slices = 16\n\
         [prep.preprocess]\nnormalization = \"none\"\nsize = 32\n\
         [train]\nsteps = 4\neval_every = 2\nlabeled_batch = 2\nunlabeled_batch = 2\n\
         eval_batch = 8\nlr = 1e-3\nsupervised_loss = \"dice-ce\"\naugment = \"ssl4mis\"\n\
         select_on = \"case-dice\"\nalso_convention = \"ssl4mis\"\ndeterministic = true\n\
         [train.model]\nwidth = 0.125\n",
    )
    .unwrap();
    p
}

#[test]
fn acdc_ingests_from_its_lists_with_h5pys_labels_and_a_truncated_file_fails_alone() {
    let Some(acdc) = crate::util::shared_data("acdc", "acdc_ingest") else {
        return;
    };
    let g = golden();
    let dir = tmp();
    let input = subset(&acdc, dir.path(), &g);
    let out = dir.path().join("shards");
    let o = bin("dmnet-prep")
        .args(["ingest", "--input"])
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .arg("--pipeline")
        .arg(pipeline(dir.path()))
        .args([
            "--labeled-patients",
            "2",
            "--salt",
            "acdc-test-salt-0123456789",
        ])
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("layout ssl4mis") || err.contains("ssl4mis"),
        "auto detection is logged: {err}"
    );
    let bad: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("patient013_frame01.h5"))
        .collect();
    assert!(!bad.is_empty(), "the truncated file is named: {err}");
    assert!(
        bad.iter().all(|l| !l.contains("panicked")),
        "a reported failure, not a panic: {bad:?}"
    );
    let got = read_back(&out);
    assert!(
        !got.contains_key("patient013_frame01"),
        "nothing of the bad file is written"
    );
    let frames = g["frames"].as_object().unwrap();
    assert_eq!(
        got.len(),
        frames.len(),
        "every good frame is written: {:?}",
        got.keys()
    );
    let labeled_patients: Vec<String> = {
        let mut v: Vec<String> = Vec::new();
        for l in strings(&g["train_slice_lines"]) {
            let p = l.split('_').next().unwrap().to_string();
            if !v.contains(&p) {
                v.push(p);
            }
        }
        v.truncate(g["labeled_patients_at_ingest"].as_u64().unwrap() as usize);
        v
    };
    for (frame, want) in frames {
        let e = &got[frame];
        let split = want["split"].as_str().unwrap();
        assert_eq!(e["split"], split, "{frame}: the list's split");
        let slices = want["slices"].as_array().unwrap();
        assert_eq!(
            e["size"].as_array().unwrap().len(),
            slices.len(),
            "{frame}: slice count"
        );
        let patient = frame.split('_').next().unwrap();
        let labeled = split != "train" || labeled_patients.iter().any(|p| p == patient);
        for (k, s) in slices.iter().enumerate() {
            assert_eq!(
                e["size"][k], s["size"],
                "{frame} slice {k}: h5py's rows × columns"
            );
            assert_eq!(e["labeled"][k], labeled, "{frame} slice {k}: labeled");
            assert_eq!(
                e["spacing_known"][k], false,
                "{frame}: h5 files carry no spacing"
            );
            if labeled {
                assert_eq!(
                    e["hist"][k], s["hist"],
                    "{frame} slice {k}: labels equal h5py's"
                );
            } else {
                assert!(
                    e["hist"][k].is_null(),
                    "{frame} slice {k}: an unlabeled slice keeps no label"
                );
            }
        }
        assert_eq!(
            strings(&e["label_names"]),
            ["background", "RV", "Myo", "LV"],
            "ACDC's classes"
        );
    }
    // the split file is the lists' (nothing re-drawn)
    let splits: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("_splits.json")).unwrap()).unwrap();
    let txt = splits.to_string();
    for p in [
        "patient099",
        "patient038",
        "patient050",
        "patient028",
        "patient011",
    ] {
        assert!(txt.contains(p) || !txt.contains("patient"), "{p} in {txt}");
    }
}

#[test]
fn every_method_trains_on_acdc_and_eval_reports_per_class_in_voxels() {
    let Some(acdc) = crate::util::shared_data("acdc", "acdc_methods") else {
        return;
    };
    let g = golden();
    let dir = tmp();
    let input = subset(&acdc, dir.path(), &g);
    std::fs::remove_file(input.join("data/patient013_frame01.h5")).unwrap();
    let test: Vec<String> = strings(&g["test_frames"]);
    std::fs::write(input.join("test.list"), test.join("\n") + "\n").unwrap();
    let shards = dir.path().join("shards");
    let pipe = pipeline(dir.path());
    run_ok(
        bin("dmnet-prep")
            .args(["ingest", "--input"])
            .arg(&input)
            .arg("--out")
            .arg(&shards)
            .arg("--pipeline")
            .arg(&pipe)
            .args(["--salt", "acdc-test-salt-0123456789"]),
    );
    for method in [
        "supervised-single",
        "mean-teacher",
        "cps",
        "bcp",
        "semifcn",
        "dmnet",
    ] {
        let run = dir.path().join(format!("run-{method}"));
        let o = run_ok(
            bin("dmnet-train")
                .arg("--shards")
                .arg(&shards)
                .arg("--out")
                .arg(&run)
                .arg("--pipeline")
                .arg(&pipe)
                .args(["--method", method, "--labeled-patients", "1", "-q"]),
        );
        let cfg: Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap())
                .unwrap();
        assert_eq!(cfg["train"]["method"], method, "{}", stdout(&o));
        assert_eq!(cfg["train"]["labeled_patients"], 1);
        let e = run_ok(
            bin("dmnet-train")
                .args(["eval", "--json", "--run"])
                .arg(&run)
                .arg("--shards")
                .arg(&shards),
        );
        let j: Value = serde_json::from_str(&stdout(&e))
            .unwrap_or_else(|err| panic!("{method}: eval --json is JSON ({err}): {}", stdout(&e)));
        let text = j.to_string();
        for class in ["RV", "Myo", "LV"] {
            assert!(
                text.contains(class),
                "{method}: per-class report names {class}: {text}"
            );
        }
        assert!(
            text.contains("voxels") && !text.contains("\"mm\""),
            "{method}: distances in voxels, never invented mm: {text}"
        );
        // the evaluated network exports and matches ONNX Runtime (dmnet-export --verify: ≤ 1e-4)
        let onnx = dir.path().join(format!("model-{method}/m.onnx"));
        let x = bin("dmnet-export")
            .arg("--run")
            .arg(&run)
            .arg("--out")
            .arg(&onnx)
            .arg("--verify")
            .arg("--shards")
            .arg(&shards)
            .output()
            .unwrap();
        assert!(x.status.success(), "{method}: {}", stderr(&x));
        let said = format!("{}{}", stdout(&x), stderr(&x));
        assert!(
            said.contains("max |Δ probabilities|") && said.contains("(tolerance 1e-4): OK"),
            "{method}: the export verified against ONNX Runtime: {said}"
        );
    }
}
