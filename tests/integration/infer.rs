//! dmnet-export + dmnet-infer on real data (a left-atrium MRI from `../shared/data/la2018`): a
//! run directory with a DMNet checkpoint, export (ONNX checker, `--verify`, sidecar checked
//! against `schemas/model-sidecar-v1.json` and equal to `metadata_props`), inference on the
//! original NIfTI (mask reopened with nibabel: the input's shape and affine) and on shards
//! (predictions agree with the tch forward on ≥ 99.9 % of pixels; metrics equal
//! `dmnet-train eval`'s in the full prep → train → export → infer pipeline), DICOM, NIfTI
//! folders, multi-channel cases, and the clear errors the issue asks for.
use crate::export::{check_model, py};
use crate::util::{bin, run_ok, stderr, stdout, tmp};
use dmnet::model::{DmNet, Encoder, ModelConfig, Variant};
use dmnet::preprocess::{prepare_volume, Normalization, PreprocessConfig};
use dmnet::shard::schema::SliceRecord;
use std::path::{Path, PathBuf};

const S: usize = 64;

fn model_config(in_channels: usize) -> ModelConfig {
    ModelConfig {
        in_channels,
        num_classes: 2,
        encoder: Encoder::Resnet18,
        width: 0.125,
        input_size: S,
        variant: Variant::Dmnet,
        ..Default::default()
    }
}

fn preprocess() -> PreprocessConfig {
    PreprocessConfig {
        normalization: Normalization::Mri,
        size: S,
        label_names: vec!["background".into(), "left_atrium".into()],
        channels: vec!["mri".into()],
        ..Default::default()
    }
}

/// A CT model's preprocessing (HU window, then z-score), one channel `ct`.
fn ct_preprocess() -> PreprocessConfig {
    PreprocessConfig {
        normalization: Normalization::Ct,
        channels: vec!["ct".into()],
        label_names: vec!["background".into(), "organ".into()],
        ..preprocess()
    }
}

/// A run dir with `config.json` and `checkpoints/{best,last}/` (random DMNet weights with
/// randomised BN statistics and a head bias that makes the foreground class appear).
fn make_run(dir: &Path, cfg: &ModelConfig) -> PathBuf {
    make_run_with(dir, cfg, &preprocess())
}

/// The best checkpoint's weights of a run dir.
pub(crate) fn best_weights(run: &Path) -> PathBuf {
    run.join("checkpoints/best/model.safetensors")
}

fn make_run_with(dir: &Path, cfg: &ModelConfig, pre: &PreprocessConfig) -> PathBuf {
    let run = dir.join("run");
    tch::manual_seed(7);
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let _net = DmNet::new(&vs.root(), cfg).unwrap();
    tch::no_grad(|| {
        for (name, mut t) in vs.variables() {
            let r = || tch::Tensor::randn(t.size(), (tch::Kind::Float, tch::Device::Cpu));
            if name.ends_with("running_mean") {
                t.copy_(&(r() * 0.1));
            } else if name.ends_with("running_var") {
                t.copy_(&(r().abs() + 0.5));
            }
        }
    });
    let config = serde_json::json!({
        "model": cfg,
        "prep": { "preprocess": pre },
    });
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(run.join("config.json"), config.to_string()).unwrap();
    // The best checkpoint was saved at round 3 (step 9) and evaluated on val; `last` (round 4)
    // was not.
    for (kind, epoch) in [("best", 3), ("last", 4)] {
        let ck = run.join("checkpoints").join(kind);
        std::fs::create_dir_all(&ck).unwrap();
        vs.save(ck.join("model.safetensors")).unwrap();
        let state = serde_json::json!({"epoch": epoch, "global_step": 3 * epoch,
            "best_miou": 0.5, "best_epoch": 3, "seed": 0, "loss_scale": 1.0});
        std::fs::write(ck.join("state.json"), state.to_string()).unwrap();
    }
    let report = |split: &str, epoch: usize, miou: f64| {
        serde_json::json!({"split": split, "checkpoint": "best", "epoch": epoch,
            "step": 3 * epoch, "shards": "shards/la",
            "metrics": {"miou": miou, "mean_dice": 0.4}})
        .to_string()
    };
    std::fs::write(run.join("eval-val-best.json"), report("val", 3, 0.5)).unwrap();
    // A stale evaluation: an older best checkpoint's (round 2) test metrics.
    std::fs::write(run.join("eval-test-best.json"), report("test", 2, 0.9)).unwrap();
    run
}

/// `make_run` + `dmnet-export` (`DIR/<name>.onnx`).
fn exported(dir: &Path, name: &str, cfg: &ModelConfig, pre: &PreprocessConfig) -> PathBuf {
    let run = make_run_with(&dir.join(format!("{name}-run")), cfg, pre);
    let onnx = dir.join(format!("{name}.onnx"));
    let o = export(&run, &onnx, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    onnx
}

/// `dmnet-infer --device cpu --model M --input I --out O [extra]`, run to completion.
fn infer_run(model: &Path, input: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    bin("dmnet-infer")
        .args(["--device", "cpu", "--model"])
        .arg(model)
        .arg("--input")
        .arg(input)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

/// The JSON summary dmnet-infer prints on stdout.
fn summary_of(o: &std::process::Output) -> serde_json::Value {
    serde_json::from_str(stdout(o).trim())
        .unwrap_or_else(|e| panic!("{e}: stdout {} stderr {}", stdout(o), stderr(o)))
}

mod bad_input;
mod compat;
mod layouts;
mod outputs;
mod serve;

/// Shards of `n` slices of the volume, made with the same preprocessing as inference.
fn make_shards(dir: &Path, image: &Path, label: &Path, n: usize) -> PathBuf {
    let vol = dmnet::volume::read_nifti(image).unwrap();
    let lab = dmnet::volume::read_nifti_label(label).unwrap();
    let mask: Vec<u8> = lab.data.iter().map(|&v| v as u8).collect();
    let pre = preprocess();
    let pv = prepare_volume(vec![vol], vec!["mri".into()], &pre, "la").unwrap();
    let (h, w) = pv.plane();
    let total = pv.num_slices();
    let records: Vec<SliceRecord> = (0..n)
        .map(|i| {
            let k = (total / 4) + i * (total / 2) / n;
            let g = &pv.geometry;
            SliceRecord {
                patient_key: "p0".into(),
                source_path: "la.nii.gz".into(),
                slice_index: k as i32,
                slice_axis: pv.axis as i32,
                slice_position: pv.slice_position(k),
                num_slices: total as i32,
                split: dmnet::shard::Split::Val,
                labeled: true,
                role: dmnet::shard::Role::Labeled,
                height: S as i32,
                width: S as i32,
                orig_height: h as i32,
                orig_width: w as i32,
                channel_names: vec!["mri".into()],
                image: pv.slice_image(k, S),
                mask: Some(pv.slice_mask(&mask, k, S)),
                label_names: pre.label_names.clone(),
                spacing: g.spacing,
                pixel_spacing: pv.pixel_spacing(S),
                affine: std::array::from_fn(|i| g.affine[i / 4][i % 4]),
                volume_shape: g.dims.map(|d| d as i32),
                spacing_known: true,
                source_mask: Some(dmnet::preprocess::extract_slice(&mask, g.dims, pv.axis, k)),
            }
        })
        .collect();
    // one float32 part (exact values) and the manifest fields readers check
    let shards = dir.join("shards");
    std::fs::create_dir_all(shards.join("data")).unwrap();
    let shape = dmnet::shard::SliceShape::of(&records[0], dmnet::shard::ImageDtype::Float32);
    let opts = dmnet::shard::writer::PartOptions {
        zstd_level: 3,
        prep_config: serde_json::json!({ "preprocess": pre }).to_string(),
    };
    let part = shards.join("data/part-00000.parquet");
    let info = dmnet::shard::writer::write_part(&part, &records, &shape, 64, &opts).unwrap();
    let manifest = serde_json::json!({
        "schema_version": dmnet::shard::schema::SCHEMA_VERSION,
        "studies": [{ "status": "ok", "slices": records.len(), "part": "part-00000.parquet" }],
        "parts": [info],
    });
    std::fs::write(shards.join("_manifest.json"), manifest.to_string()).unwrap();
    shards
}

fn la_case() -> Option<(PathBuf, PathBuf)> {
    let root = crate::util::shared_data("la2018", "infer")?;
    let mut imgs: Vec<_> = std::fs::read_dir(root.join("imagesTr"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    imgs.sort();
    let img = imgs[0].clone();
    let lab = root.join("labelsTr").join(img.file_name().unwrap());
    Some((img, lab))
}

fn export(run: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    bin("dmnet-export")
        .arg("--run")
        .arg(run)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

/// Reads `predictions.parquet` masks keyed by slice index.
fn read_predictions(path: &Path) -> Vec<(i32, Vec<u8>)> {
    use arrow_array::{Array, Int32Array, ListArray, UInt8Array};
    let f = std::fs::File::open(path).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
        .unwrap()
        .build()
        .unwrap();
    let mut out = Vec::new();
    for b in reader {
        let b = b.unwrap();
        let idx = b.column_by_name("slice_index").unwrap();
        let idx = idx.as_any().downcast_ref::<Int32Array>().unwrap();
        let masks = b.column_by_name("mask").unwrap();
        let masks = masks.as_any().downcast_ref::<ListArray>().unwrap();
        for i in 0..b.num_rows() {
            let m = masks.value(i);
            let m = m.as_any().downcast_ref::<UInt8Array>().unwrap();
            out.push((idx.value(i), m.values().to_vec()));
        }
    }
    out
}

#[test]
fn export_verify_and_infer_round_trip_on_a_real_la_volume() {
    let Some((img, lab)) = la_case() else { return };
    let dir = tmp();
    let cfg = model_config(1);
    let run = make_run(dir.path(), &cfg);
    let shards = make_shards(dir.path(), &img, &lab, 12);
    let onnx = dir.path().join("models/la.onnx");

    // Export + verify against tch on the shard slices.
    let out = export(
        &run,
        &onnx,
        &["--verify", "--shards", shards.to_str().unwrap()],
    );
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    assert!(
        text.contains("verify: 12 slices") && text.contains("OK"),
        "{text}"
    );
    eprintln!("{}", text.lines().last().unwrap());
    check_model(&onnx);

    // Sidecar and metadata_props carry the same facts; initializers are checkpoint names.
    let sidecar: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("models/la.json")).unwrap())
            .unwrap();
    assert_eq!(sidecar["schema"], "dmnet.model-sidecar");
    assert_eq!(sidecar["schema_version"], 1);
    assert_eq!(sidecar["input"]["shape"], serde_json::json!(["N", 1, S, S]));
    assert_eq!(
        sidecar["class_names"],
        serde_json::json!(["background", "left_atrium"])
    );
    // The metrics are those of the exported (best, epoch 3) checkpoint, never the stale test
    // evaluation of epoch 2; they name checkpoint, split and shards.
    let vm = &sidecar["validation_metrics"];
    assert_eq!(vm["metrics"]["miou"], 0.5, "{vm}");
    assert_eq!(
        (&vm["checkpoint"], &vm["epoch"], &vm["split"], &vm["shards"]),
        (
            &serde_json::json!("best"),
            &serde_json::json!(3),
            &serde_json::json!("val"),
            &serde_json::json!("shards/la")
        )
    );
    let check = r#"
import onnx, sys, json, struct
m = onnx.load(sys.argv[1])
props = {p.key: p.value for p in m.metadata_props}
side = json.load(open(sys.argv[2]))
for k, v in side.items():
    assert json.loads(props["dmnet." + k]) == v, k
names = sorted(t.name for t in m.graph.initializer)
hdr = open(sys.argv[3], "rb").read()
n = struct.unpack("<Q", hdr[:8])[0]
ck = json.loads(hdr[8:8 + n])
model_names = sorted(k for k in ck if k != "__metadata__")
assert names == model_names, (set(names) ^ set(model_names))
assert [o.name for o in m.graph.output] == ["probabilities", "labels"]
schema = json.load(open(sys.argv[4]))
def check(value, sch, where):
    if "$ref" in sch:
        sch = schema["$defs"][sch["$ref"].split("/")[-1]]
    if "const" in sch:
        assert value == sch["const"], where
    if "enum" in sch:
        assert value in sch["enum"], (where, value)
    if isinstance(value, dict):
        for k in sch.get("required", []):
            assert k in value, (where, k)
        for k, sub in sch.get("properties", {}).items():
            if k in value:
                check(value[k], sub, where + "." + k)
    if isinstance(value, list) and "items" in sch:
        for i, v in enumerate(value):
            check(v, sch["items"], f"{where}[{i}]")
check(side, schema, "sidecar")
print(len(names))
"#;
    let o = run_ok(
        py().args(["-c", check])
            .arg(&onnx)
            .arg(dir.path().join("models/la.json"))
            .arg(best_weights(&run))
            .arg(crate::util::root().join("schemas/model-sidecar-v1.json")),
    );
    assert!(stdout(&o).trim().parse::<usize>().unwrap() > 100);

    // Inference on the original NIfTI: the mask has the input's shape and affine (nibabel).
    let masks = dir.path().join("masks");
    let o = run_ok(
        bin("dmnet-infer")
            .args([
                "--device",
                "cpu",
                "--batch",
                "16",
                "--probabilities",
                "--model",
            ])
            .arg(&onnx)
            .arg("--input")
            .arg(&img)
            .arg("--out")
            .arg(&masks),
    );
    let summary: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(summary["cases"], 1);
    assert_eq!(summary["provider"], "CPUExecutionProvider");
    assert!(stderr(&o).contains("slices/s"), "{}", stderr(&o));
    let name = img.file_name().unwrap().to_str().unwrap();
    let nib = r#"
import nibabel as nib, numpy as np, sys
a, b, p = nib.load(sys.argv[1]), nib.load(sys.argv[2]), nib.load(sys.argv[3])
m = np.asanyarray(b.dataobj)
assert b.get_data_dtype() == np.uint8, b.get_data_dtype()
assert m.shape == a.shape, (m.shape, a.shape)
assert np.allclose(b.affine, a.affine, atol=1e-4), (b.affine, a.affine)
assert (b.header["sform_code"], b.header["qform_code"]) == (a.header["sform_code"], a.header["qform_code"])
assert np.allclose(b.header.get_zooms(), a.header.get_zooms())
assert set(np.unique(m)) <= {0, 1}
pr = p.get_fdata()
assert pr.shape == a.shape + (1, 2), pr.shape
assert int(p.header["intent_code"]) == 1007
pr = pr[:, :, :, 0, :]
assert np.allclose(pr.sum(-1), 1, atol=1e-4)
assert (np.argmax(pr, -1) == m).mean() > 0.999
print(int(m.sum()), m.size)
"#;
    let o = run_ok(
        py().args(["-c", nib])
            .arg(&img)
            .arg(masks.join(name))
            .arg(masks.join(name.replace(".nii.gz", "_probabilities.nii.gz"))),
    );
    eprintln!("mask foreground voxels / total: {}", stdout(&o).trim());

    // Inference on the shards: predictions agree with the tch forward; metrics JSON.
    let eval = dir.path().join("eval");
    run_ok(
        bin("dmnet-infer")
            .args(["--device", "cpu", "--model"])
            .arg(&onnx)
            .arg("--input")
            .arg(&shards)
            .arg("--out")
            .arg(&eval),
    );
    let preds = read_predictions(&eval.join("predictions.parquet"));
    assert_eq!(preds.len(), 12);
    let mut vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let net = DmNet::new(&vs.root(), &cfg).unwrap();
    vs.load(best_weights(&run)).unwrap();
    let rows: Vec<SliceRecord> = dmnet::shard::schema::read_shards(&shards)
        .unwrap()
        .flat_map(|g| g.unwrap())
        .collect();
    let (mut same, mut total) = (0usize, 0usize);
    let mut acc = dmnet::metrics::MetricsAccumulator::new(2);
    for (r, (idx, mask)) in rows.iter().zip(&preds) {
        assert_eq!(r.slice_index, *idx);
        let x = tch::Tensor::from_slice(&r.image).view([1, 1, S as i64, S as i64]);
        let p = tch::no_grad(|| net.forward_t(&x, false).probabilities());
        let want = Vec::<i64>::try_from(p.argmax(1, false).flatten(0, -1)).unwrap();
        same += want
            .iter()
            .zip(mask)
            .filter(|(a, b)| **a == **b as i64)
            .count();
        total += want.len();
        let want_u8: Vec<u8> = want.iter().map(|&v| v as u8).collect();
        acc.add(&want_u8, r.mask.as_ref().unwrap());
    }
    let agree = same as f64 / total as f64;
    eprintln!(
        "shard predictions: {:.4} % of pixels agree with tch",
        agree * 100.0
    );
    assert!(agree >= 0.999, "{agree}");
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(eval.join("metrics.json")).unwrap()).unwrap();
    let want = acc.finish();
    assert_eq!(metrics["slices"], 12);
    assert!(
        (metrics["miou"].as_f64().unwrap() - want.miou).abs() < 1e-3,
        "{metrics} vs {want:?}"
    );
}

#[test]
fn infer_errors_name_the_file() {
    let Some((img, _)) = la_case() else { return };
    let dir = tmp();
    // A two-channel model on a one-channel volume.
    let run = make_run(dir.path(), &model_config(2));
    let onnx = dir.path().join("two.onnx");
    let out = export(&run, &onnx, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let infer = |model: &Path, input: &Path, extra: &[&str]| {
        bin("dmnet-infer")
            .arg("--model")
            .arg(model)
            .arg("--input")
            .arg(input)
            .arg("--out")
            .arg(dir.path().join("o"))
            .args(extra)
            .output()
            .unwrap()
    };
    let o = infer(&onnx, &img, &["--device", "cpu"]);
    let e = stderr(&o);
    assert!(!o.status.success());
    assert!(
        e.contains(img.to_str().unwrap()) && e.contains("2 channels"),
        "{e}"
    );

    // Model without sidecar.
    let bare = dir.path().join("bare.onnx");
    std::fs::copy(&onnx, &bare).unwrap();
    let o = infer(&bare, &img, &[]);
    let e = stderr(&o);
    assert!(
        !o.status.success() && e.contains("bare.json") && e.contains("sidecar"),
        "{e}"
    );

    // Unreadable input (a one-channel model, so the file is opened).
    let one_dir = dir.path().join("one");
    let one_run = make_run(&one_dir, &model_config(1));
    let one = one_dir.join("one.onnx");
    assert!(export(&one_run, &one, &[]).status.success());
    let bad = dir.path().join("broken.nii.gz");
    std::fs::write(&bad, b"\x1f\x8bnot really gzip").unwrap();
    let o = infer(&one, &bad, &[]);
    let e = stderr(&o);
    assert!(!o.status.success() && e.contains("broken.nii.gz"), "{e}");

    // --device cuda with a CPU-only ONNX Runtime is an error, not a silent CPU run.
    let info = dmnet::onnxrt::runtime::load(None).unwrap();
    if !info.providers.iter().any(|p| p == "CUDAExecutionProvider") {
        let o = infer(&one, &img, &["--device", "cuda"]);
        let e = stderr(&o);
        assert!(
            !o.status.success() && e.contains("CUDAExecutionProvider"),
            "{e}"
        );
    }

    // A wrong opset is refused before anything is written.
    let o = export(&run, &dir.path().join("x.onnx"), &["--opset", "9"]);
    assert!(!o.status.success() && stderr(&o).contains("--opset 9"));
}

/// The whole pipeline on real data: `dmnet-prep ingest` (10 LA volumes at 64×64) → a tiny
/// `dmnet-train` run (ResNet-18, width 0.125, 1 epoch of 2 steps) → `dmnet-train eval` →
/// `dmnet-export --verify` → `dmnet-infer` on the original NIfTI and on the shards. The shard
/// metrics equal `dmnet-train eval`'s and the predictions agree with the trained tch model on
/// ≥ 99.9 % of pixels.
#[test]
fn prep_train_export_infer_pipeline_agrees_with_train_eval() {
    let Some(root) = crate::util::shared_data("la2018", "infer") else {
        return;
    };
    let dir = tmp();
    let src = dir.path().join("la");
    std::fs::create_dir_all(src.join("imagesTr")).unwrap();
    std::fs::create_dir_all(src.join("labelsTr")).unwrap();
    let ds: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("dataset.json")).unwrap()).unwrap();
    let mut ds = ds;
    let training: Vec<serde_json::Value> = ds["training"].as_array().unwrap()[..10].to_vec();
    for t in &training {
        for key in ["image", "label"] {
            let rel = t[key].as_str().unwrap().trim_start_matches("./");
            std::os::unix::fs::symlink(root.join(rel), src.join(rel)).unwrap();
        }
    }
    ds["training"] = serde_json::Value::Array(training.clone());
    ds["numTraining"] = 10.into();
    std::fs::write(src.join("dataset.json"), ds.to_string()).unwrap();
    let pipeline = crate::util::root().join("pipelines/la2018.toml");
    let shards = dir.path().join("shards");
    run_ok(
        bin("dmnet-prep")
            .arg("ingest")
            .arg("--input")
            .arg(&src)
            .arg("--out")
            .arg(&shards)
            .arg("--pipeline")
            .arg(&pipeline)
            .args(["--size", "64", "-q"]),
    );
    let run = dir.path().join("run");
    run_ok(
        bin("dmnet-train")
            .arg("--shards")
            .arg(&shards)
            .arg("--out")
            .arg(&run)
            .args([
                "--encoder",
                "resnet18",
                "--width",
                "0.125",
                "--size",
                "64",
                "--epochs",
                "1",
                "--max-steps-per-epoch",
                "2",
                "--labeled-batch",
                "4",
                "--unlabeled-batch",
                "4",
                "--device",
                "cpu",
                "-q",
            ]),
    );
    run_ok(
        bin("dmnet-train")
            .args(["eval", "--split", "val", "--device", "cpu", "-q", "--run"])
            .arg(&run)
            .arg("--shards")
            .arg(&shards),
    );

    let onnx = dir.path().join("model/la.onnx");
    let out = export(
        &run,
        &onnx,
        &["--verify", "--shards", shards.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    eprintln!("{}", stdout(&out).lines().last().unwrap());
    check_model(&onnx);
    let side: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(onnx.with_extension("json")).unwrap())
            .unwrap();
    assert_eq!(
        side["class_names"],
        serde_json::json!(["background", "left atrium"])
    );
    assert_eq!(side["channel_names"], serde_json::json!(["mri"]));
    assert!(
        side["validation_metrics"]["metrics"]["miou"].is_number(),
        "{side}"
    );

    // Shards: metrics equal dmnet-train eval's; predictions agree with the tch model.
    let eval = dir.path().join("eval");
    run_ok(
        bin("dmnet-infer")
            .args(["--device", "cpu", "--split", "val", "--model"])
            .arg(&onnx)
            .arg("--input")
            .arg(&shards)
            .arg("--out")
            .arg(&eval),
    );
    let ours: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(eval.join("metrics.json")).unwrap()).unwrap();
    let theirs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("eval-val.json")).unwrap()).unwrap();
    let theirs = &theirs["metrics"];
    assert_eq!(ours["slices"], theirs["slices"]);
    for key in ["miou", "mean_dice"] {
        let (a, b) = (ours[key].as_f64().unwrap(), theirs[key].as_f64().unwrap());
        assert!(
            (a - b).abs() < 1e-3,
            "{key}: dmnet-infer {a} vs dmnet-train eval {b}"
        );
    }
    let preds = read_predictions(&eval.join("predictions.parquet"));
    let cfg: ModelConfig = serde_json::from_value(side["model"].clone()).unwrap();
    let mut vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let net = DmNet::new(&vs.root(), &cfg).unwrap();
    vs.load_partial(best_weights(&run)).unwrap();
    let rows: Vec<SliceRecord> = dmnet::shard::schema::read_shards(&shards)
        .unwrap()
        .flat_map(|g| g.unwrap())
        .filter(|r| r.split == dmnet::shard::Split::Val)
        .collect();
    assert_eq!(rows.len(), preds.len());
    let (mut same, mut total) = (0usize, 0usize);
    for chunk in rows.chunks(16).zip(preds.chunks(16)) {
        let x: Vec<f32> = chunk.0.iter().flat_map(|r| r.image.clone()).collect();
        let x = tch::Tensor::from_slice(&x).view([chunk.0.len() as i64, 1, 64, 64]);
        let p = tch::no_grad(|| net.forward_t(&x, false).probabilities());
        let want = Vec::<i64>::try_from(p.argmax(1, false).flatten(0, -1)).unwrap();
        let got: Vec<u8> = chunk.1.iter().flat_map(|(_, m)| m.clone()).collect();
        same += want
            .iter()
            .zip(&got)
            .filter(|(a, b)| **a == **b as i64)
            .count();
        total += want.len();
    }
    let agree = same as f64 / total as f64;
    eprintln!(
        "val predictions: {:.4} % of {total} pixels agree with the tch model",
        agree * 100.0
    );
    assert!(agree >= 0.999, "{agree}");

    // The original NIfTI: a mask on the input's grid.
    let img = src.join(
        training[0]["image"]
            .as_str()
            .unwrap()
            .trim_start_matches("./"),
    );
    let masks = dir.path().join("masks");
    run_ok(
        bin("dmnet-infer")
            .args(["--device", "cpu", "--model"])
            .arg(&onnx)
            .arg("--input")
            .arg(&img)
            .arg("--out")
            .arg(&masks),
    );
    let nib = r#"
import nibabel as nib, numpy as np, sys
a, b = nib.load(sys.argv[1]), nib.load(sys.argv[2])
assert b.shape == a.shape and np.allclose(b.affine, a.affine, atol=1e-4), (b.shape, a.shape)
assert b.get_data_dtype() == np.uint8
"#;
    run_ok(
        py().args(["-c", nib])
            .arg(&img)
            .arg(masks.join(img.file_name().unwrap())),
    );
}

/// A DICOM series folder gives one mask on the series' own grid (affine derived from the
/// series, as `volume::read_dicom_series` computes it); a folder of NIfTI files gives one mask
/// per file with each file's shape and affine.
#[test]
fn dicom_series_and_nifti_folder_inputs_keep_their_geometry() {
    let Some(adc) = crate::util::shared_data("dicom/prostate-adc", "infer") else {
        return;
    };
    let Some(spleen) = crate::util::shared_data("spleen-ct/imagesTr/spleen2.nii.gz", "infer")
    else {
        return;
    };
    let Some(cord) = crate::util::shared_data("spinal-cord-mri/sub-unf01_T2w.nii.gz", "infer")
    else {
        return;
    };
    let dir = tmp();
    let run = make_run(dir.path(), &model_config(1));
    let onnx = dir.path().join("m.onnx");
    assert!(export(&run, &onnx, &["--opset", "18"]).status.success());
    let infer = |input: &Path, out: &Path| {
        let o = run_ok(
            bin("dmnet-infer")
                .args(["--device", "cpu", "--model"])
                .arg(&onnx)
                .arg("--input")
                .arg(input)
                .arg("--out")
                .arg(out),
        );
        serde_json::from_str::<serde_json::Value>(stdout(&o).trim()).unwrap()
    };

    let out = dir.path().join("dicom");
    let s = infer(&adc, &out);
    assert_eq!(
        (s["input_kind"].as_str(), s["cases"].as_u64()),
        (Some("dicom"), Some(1))
    );
    let mask = PathBuf::from(s["outputs"][0].as_str().unwrap());
    let (series, _) = dmnet::volume::scan_dicom_dir(&adc).unwrap();
    let vol = dmnet::volume::read_dicom_series(&series[0]).unwrap();
    let affine: Vec<f64> = vol.affine.iter().flatten().copied().collect();
    let check = r#"
import nibabel as nib, numpy as np, sys, json
m = nib.load(sys.argv[1])
dims, aff = json.loads(sys.argv[2]), np.array(json.loads(sys.argv[3])).reshape(4, 4)
assert list(m.shape) == dims, (m.shape, dims)
assert np.allclose(m.affine, aff, atol=1e-3), (m.affine, aff)
assert m.get_data_dtype() == np.uint8
"#;
    run_ok(
        py().args(["-c", check])
            .arg(&mask)
            .arg(serde_json::to_string(&vol.dims).unwrap())
            .arg(serde_json::to_string(&affine).unwrap()),
    );

    let folder = dir.path().join("niftis");
    std::fs::create_dir_all(&folder).unwrap();
    std::os::unix::fs::symlink(&spleen, folder.join("spleen2.nii.gz")).unwrap();
    std::os::unix::fs::symlink(&cord, folder.join("cord.nii.gz")).unwrap();
    let out = dir.path().join("folder");
    let s = infer(&folder, &out);
    assert_eq!(
        (s["input_kind"].as_str(), s["cases"].as_u64()),
        (Some("nifti"), Some(2))
    );
    let same = r#"
import nibabel as nib, numpy as np, sys
for a, b in zip(sys.argv[1::2], sys.argv[2::2]):
    a, b = nib.load(a), nib.load(b)
    assert b.shape == a.shape and np.allclose(b.affine, a.affine, atol=1e-4), (a.shape, b.shape)
"#;
    run_ok(
        py().args(["-c", same])
            .arg(&spleen)
            .arg(out.join("spleen2.nii.gz"))
            .arg(&cord)
            .arg(out.join("cord.nii.gz")),
    );
}

/// A two-channel model (BraTS FLAIR + T1ce): `<case>_<channel>.nii.gz` files are grouped into
/// cases, in the input folder and one level of sub-folders (the BraTS layout).
#[test]
fn multi_channel_cases_are_grouped_by_channel_suffix() {
    let Some(brats) = crate::util::shared_data("brats-mini", "infer") else {
        return;
    };
    let dir = tmp();
    let pre = PreprocessConfig {
        channels: vec!["flair".into(), "t1ce".into()],
        label_names: vec!["background".into(), "tumour".into()],
        ..preprocess()
    };
    let run = make_run_with(dir.path(), &model_config(2), &pre);
    let onnx = dir.path().join("brats.onnx");
    assert!(export(&run, &onnx, &[]).status.success());
    let side = dmnet::artifact::sidecar::ModelSidecar::read_for(&onnx).unwrap();
    assert_eq!(side.channel_names, ["flair", "t1ce"]);
    match dmnet::infer::input::detect_input(&brats, &side.channel_names)
        .unwrap()
        .kind
    {
        dmnet::infer::input::InputKind::Nifti(cases) => {
            assert_eq!(cases.len(), 6);
            let c = &cases[0];
            assert_eq!(c.name, "brats_2013_pat0001_1");
            assert!(c.files[0].ends_with("brats_2013_pat0001_1/brats_2013_pat0001_1_flair.nii.gz"));
            assert!(c.files[1].ends_with("brats_2013_pat0001_1/brats_2013_pat0001_1_t1ce.nii.gz"));
        }
        other => panic!("{other:?}"),
    }
    let case = brats.join("brats_2013_pat0001_1");
    let out = dir.path().join("out");
    run_ok(
        bin("dmnet-infer")
            .args(["--device", "cpu", "--batch", "32", "--model"])
            .arg(&onnx)
            .arg("--input")
            .arg(&case)
            .arg("--out")
            .arg(&out),
    );
    let same = r#"
import nibabel as nib, numpy as np, sys
a, b = nib.load(sys.argv[1]), nib.load(sys.argv[2])
assert b.shape == a.shape and np.allclose(b.affine, a.affine, atol=1e-4), (a.shape, b.shape)
"#;
    run_ok(
        py().args(["-c", same])
            .arg(case.join("brats_2013_pat0001_1_flair.nii.gz"))
            .arg(out.join("brats_2013_pat0001_1.nii.gz")),
    );
}

/// `--verify` fails (and says so) when ONNX Runtime and tch disagree: the ONNX model of one
/// checkpoint checked against another checkpoint.
#[test]
fn verify_flags_a_model_that_does_not_match_the_checkpoint() {
    let Some((img, lab)) = la_case() else { return };
    let dir = tmp();
    let cfg = model_config(1);
    let run = make_run(dir.path(), &cfg);
    let shards = make_shards(dir.path(), &img, &lab, 4);
    let onnx = dir.path().join("m.onnx");
    assert!(export(&run, &onnx, &[]).status.success());
    let other = tmp();
    tch::manual_seed(99);
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let _ = DmNet::new(&vs.root(), &cfg).unwrap();
    let ckpt = other.path().join("other.safetensors");
    vs.save(&ckpt).unwrap();
    let r = dmnet::export::verify::verify(&onnx, &cfg, &ckpt, &shards, 4).unwrap();
    assert_eq!(r.slices, 4);
    assert!(!r.ok && r.max_abs_diff > 1e-3, "{r:?}");
    let same = dmnet::export::verify::verify(&onnx, &cfg, &best_weights(&run), &shards, 4).unwrap();
    assert!(same.ok && same.max_abs_diff <= 1e-5, "{same:?}");
}

/// `--timepoint N` segments time point N of a 4-D input, a DICOM series with repeated
/// positions or a 4-D NIfTI, into a mask with the 3-D volume's geometry; without it a 4-D input
/// is refused naming its time points.
#[test]
fn timepoint_selects_one_volume_of_a_4d_input() {
    let Some(epi) = crate::util::shared_data("dicom/ge-epi-4d", "infer") else {
        return;
    };
    let dir = tmp();
    let run = make_run(dir.path(), &model_config(1));
    let onnx = dir.path().join("m.onnx");
    assert!(export(&run, &onnx, &[]).status.success());
    let infer = |input: &Path, out: &Path, extra: &[&str]| {
        bin("dmnet-infer")
            .args(["--device", "cpu", "--model"])
            .arg(&onnx)
            .arg("--input")
            .arg(input)
            .arg("--out")
            .arg(out)
            .args(extra)
            .output()
            .unwrap()
    };
    let o = infer(&epi.join("series"), &dir.path().join("x"), &[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("10 time points"), "{}", stderr(&o));
    let (series, _) = dmnet::volume::scan_dicom_dir(&epi.join("series")).unwrap();
    let vol = dmnet::volume::read_dicom_timepoint(&series[0], 2).unwrap();
    let reference = epi.join("dcm2niix-reference/mr_0004.nii.gz");
    for (input, out) in [(epi.join("series"), "dicom"), (reference.clone(), "nifti")] {
        let out = dir.path().join(out);
        let o = infer(&input, &out, &["--timepoint", "2"]);
        assert!(o.status.success(), "{}", stderr(&o));
        let s: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
        let mask = dmnet::volume::read_nifti(Path::new(s["outputs"][0].as_str().unwrap())).unwrap();
        assert_eq!(mask.dims, vol.dims);
        assert_eq!(mask.header.dim[0], 3);
        let src = if out.ends_with("dicom") {
            vol.clone()
        } else {
            dmnet::volume::read_nifti_timepoint(&reference, 2).unwrap()
        };
        for (a, b) in mask
            .affine
            .iter()
            .flatten()
            .zip(src.affine.iter().flatten())
        {
            assert!(
                (a - b).abs() < 1e-3,
                "{:?} vs {:?}",
                mask.affine,
                src.affine
            );
        }
    }
}

/// Issue 22's "Done when": `dmnet-train eval --split test` and `dmnet-infer` on the same test
/// volumes with their labels give the same per-case Dice, to 1e-6, for every case and class,
/// and no case is missing from either: one evaluator, on the source grid (shards written with
/// `--image-dtype float32`, no TTA). LA2018, 12 patients at 64×64, 40 steps of a small model.
#[test]
fn train_eval_and_infer_give_the_same_per_case_dice_on_the_source_volumes() {
    let Some(root) = crate::util::shared_data("la2018", "eval_infer_agree") else {
        return;
    };
    let dir = tmp();
    let link_cases = |dst: &Path, cases: &[serde_json::Value]| {
        std::fs::create_dir_all(dst.join("imagesTr")).unwrap();
        std::fs::create_dir_all(dst.join("labelsTr")).unwrap();
        for t in cases {
            for key in ["image", "label"] {
                let rel = t[key].as_str().unwrap().trim_start_matches("./");
                std::os::unix::fs::symlink(root.join(rel), dst.join(rel)).unwrap();
            }
        }
        let mut ds: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(root.join("dataset.json")).unwrap())
                .unwrap();
        ds["training"] = serde_json::Value::Array(cases.to_vec());
        ds["numTraining"] = cases.len().into();
        std::fs::write(dst.join("dataset.json"), ds.to_string()).unwrap();
    };
    let ds: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("dataset.json")).unwrap()).unwrap();
    let cases: Vec<serde_json::Value> = ds["training"].as_array().unwrap()[..12].to_vec();
    let src = dir.path().join("la");
    link_cases(&src, &cases);
    let shards = dir.path().join("shards");
    run_ok(
        bin("dmnet-prep")
            .args(["ingest", "--input"])
            .arg(&src)
            .arg("--out")
            .arg(&shards)
            .arg("--pipeline")
            .arg(crate::util::root().join("pipelines/la2018-cpu.toml"))
            .args([
                "--image-dtype",
                "float32",
                "--salt",
                "agree-test-salt-0123456",
                "-q",
            ]),
    );
    let run = dir.path().join("run");
    run_ok(
        bin("dmnet-train")
            .arg("--shards")
            .arg(&shards)
            .arg("--out")
            .arg(&run)
            .arg("--pipeline")
            .arg(crate::util::root().join("pipelines/la2018-cpu.toml"))
            .args([
                "--variant",
                "supervised",
                "--width",
                "0.125",
                "--steps",
                "40",
            ])
            .args([
                "--eval-every",
                "20",
                "--labeled-fraction",
                "100%",
                "--device",
                "cpu",
                "-q",
            ]),
    );
    let e = run_ok(
        bin("dmnet-train")
            .args([
                "eval", "--json", "--split", "test", "--device", "cpu", "--run",
            ])
            .arg(&run)
            .arg("--shards")
            .arg(&shards),
    );
    let eval: serde_json::Value = serde_json::from_str(&stdout(&e)).unwrap();
    let per_case = |report: &serde_json::Value| -> std::collections::BTreeMap<(String, u64), f64> {
        report["per_case"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|c| {
                let source = c["source"].as_str().unwrap().to_string();
                c["classes"].as_array().unwrap().iter().map(move |k| {
                    (
                        (source.clone(), k["class"].as_u64().unwrap()),
                        k["dice"].as_f64().unwrap_or(f64::NAN),
                    )
                })
            })
            .collect()
    };
    let ours = per_case(&eval["cases"]);
    assert!(!ours.is_empty(), "eval scored test cases: {eval}");
    assert_eq!(eval["cases"]["grid"], "source");
    // the test volumes, with their labels, as a folder dmnet-infer reads
    let test_sources: Vec<String> = ours.keys().map(|(s, _)| s.clone()).collect();
    let test_cases: Vec<serde_json::Value> = cases
        .iter()
        .filter(|c| {
            let rel = c["image"].as_str().unwrap().trim_start_matches("./");
            test_sources.iter().any(|s| s == rel)
        })
        .cloned()
        .collect();
    assert_eq!(
        test_cases.len(),
        ours.keys()
            .map(|(s, _)| s)
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        "every scored source is an LA image: {test_sources:?}"
    );
    let test_dir = dir.path().join("test-volumes");
    link_cases(&test_dir, &test_cases);
    let onnx = dir.path().join("model/la.onnx");
    let x = export(&run, &onnx, &[]);
    assert!(x.status.success(), "{}", stderr(&x));
    let out = dir.path().join("pred");
    let o = infer_run(&onnx, &test_dir, &out, &["--tta", "none"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let infer: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    let theirs = per_case(&infer);
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>(),
        "the same cases and classes in both"
    );
    for (k, a) in &ours {
        let b = theirs[k];
        assert!(
            (a - b).abs() <= 1e-6 || (a.is_nan() && b.is_nan()),
            "{k:?}: train eval Dice {a} vs dmnet-infer {b}"
        );
    }
}
