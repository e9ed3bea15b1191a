//! Issue 14 point 1: model–data compatibility (channels, modality, classes, slice size) in
//! `dmnet-infer` and in the contract function `dmnet-train eval` calls, `--allow-mismatch`, and
//! sidecar metrics that come from the exported checkpoint or say "none".
use super::{
    ct_preprocess, export, exported, infer_run, la_case, make_run_with, make_shards, model_config,
    preprocess,
};
use crate::util::{stderr, tmp};
use dmnet::artifact::compat::check_run_against_shards;
use dmnet::artifact::{DataSummary, RunConfig, TrainConfig};

/// A CT kidney model (3 classes), like the demo's.
fn kidney() -> (
    dmnet::model::ModelConfig,
    dmnet::preprocess::PreprocessConfig,
) {
    let cfg = dmnet::model::ModelConfig {
        num_classes: 3,
        ..model_config(1)
    };
    let pre = dmnet::preprocess::PreprocessConfig {
        label_names: vec!["background".into(), "kidney".into(), "tumour".into()],
        ..ct_preprocess()
    };
    (cfg, pre)
}

#[test]
fn a_ct_model_refuses_an_mr_series_unless_told_otherwise() {
    let Some(adc) = crate::util::shared_data("dicom/prostate-adc", "infer") else {
        return;
    };
    let dir = tmp();
    let onnx = exported(dir.path(), "ct", &model_config(1), &ct_preprocess());
    let out = dir.path().join("out");
    let o = infer_run(&onnx, &adc, &out, &[]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    let line = e
        .lines()
        .find(|l| l.contains("modality"))
        .unwrap_or_else(|| panic!("{e}"));
    assert!(
        line.contains("prostate-adc") && line.contains("ct.onnx"),
        "{line}"
    );
    assert!(line.contains("trained on CT, input is MR"), "{line}");
    assert!(!out.join("prostate-adc.nii.gz").exists());

    let o = infer_run(
        &onnx,
        &adc,
        &out,
        &["--allow-mismatch", "--format", "nifti"],
    );
    let e = stderr(&o);
    assert!(o.status.success(), "{e}");
    assert!(e.contains("WARN") && e.contains("--allow-mismatch"), "{e}");
    assert!(out.join("prostate-adc.nii.gz").exists());
}

#[test]
fn a_ct_kidney_model_refuses_la_mri_shards_and_an_msd_mri_dataset() {
    let Some((img, lab)) = la_case() else { return };
    let Some(la_root) = crate::util::shared_data("la2018", "infer") else {
        return;
    };
    let dir = tmp();
    let (cfg, pre) = kidney();
    let onnx = exported(dir.path(), "kidney", &cfg, &pre);
    let shards = make_shards(dir.path(), &img, &lab, 2);
    let o = infer_run(&onnx, &shards, &dir.path().join("o1"), &[]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    for what in [
        "channels: model [ct] vs input [mri]",
        "modality",
        "classes: model has 3",
    ] {
        assert!(e.contains(what), "{what}: {e}");
    }
    assert!(e.contains("shards") && e.contains("kidney.onnx"), "{e}");
    assert!(!dir.path().join("o1/metrics.json").exists());

    // The MSD root says MRI and two classes in dataset.json.
    let o = infer_run(&onnx, &la_root, &dir.path().join("o2"), &[]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        e.contains("trained on CT, input is MR") && e.contains("left atrium"),
        "{e}"
    );

    // Allowed: the shards run, and the metrics are written (with a warning).
    let o = infer_run(
        &onnx,
        &shards,
        &dir.path().join("o3"),
        &["--allow-mismatch"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(dir.path().join("o3/predictions.parquet").exists());
}

#[test]
fn train_eval_check_compares_the_run_with_the_shards() {
    let Some((img, lab)) = la_case() else { return };
    let dir = tmp();
    let shards = make_shards(dir.path(), &img, &lab, 2);
    let run_config = |pre: &dmnet::preprocess::PreprocessConfig, size: usize| RunConfig {
        dmnet_version: dmnet::VERSION.into(),
        shards: shards.clone(),
        pipeline: None,
        train: TrainConfig::default(),
        data: DataSummary {
            shard_size: size,
            channel_names: pre.channels.clone(),
            label_names: pre.label_names.clone(),
            ..Default::default()
        },
        prep_config: Some(serde_json::json!({ "preprocess": pre })),
    };
    let run = dir.path().join("runs/kidney");
    let (_, kid) = kidney();
    let e = check_run_against_shards(&run, &run_config(&kid, 64), &shards, false)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("runs/kidney") && e.contains(shards.to_str().unwrap()),
        "{e}"
    );
    assert!(
        e.contains("modality: model trained on CT, input is MR"),
        "{e}"
    );
    assert!(check_run_against_shards(&run, &run_config(&kid, 64), &shards, true).is_ok());
    // The LA run itself matches its shards; a run trained on 96×96 slices does not.
    let la = preprocess();
    check_run_against_shards(&run, &run_config(&la, 64), &shards, false).unwrap();
    let e = check_run_against_shards(&run, &run_config(&la, 96), &shards, false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("slice size: model 96×96, input 64×64"), "{e}");
}

#[test]
fn sidecar_metrics_come_from_the_exported_checkpoint_or_say_none() {
    let dir = tmp();
    let run = make_run_with(dir.path(), &model_config(1), &preprocess());
    // `last` was never evaluated: none, although best has val and (stale) test metrics.
    let last = dir.path().join("last.onnx");
    let o = export(&run, &last, &["--checkpoint", "last"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("validation metrics: none"),
        "{}",
        stderr(&o)
    );
    let side = dmnet::artifact::sidecar::ModelSidecar::read_for(&last).unwrap();
    assert_eq!(
        side.source.checkpoint,
        dmnet::artifact::CheckpointKind::Last
    );
    assert!(side.validation_metrics.is_none());
    // A newer best checkpoint (round 5) than the one evaluated (round 3): none either.
    let state = run.join("checkpoints/best/state.json");
    let text = std::fs::read_to_string(&state).unwrap();
    std::fs::write(&state, text.replace("\"epoch\":3", "\"epoch\":5")).unwrap();
    let best = dir.path().join("best.onnx");
    assert!(export(&run, &best, &[]).status.success());
    let side = dmnet::artifact::sidecar::ModelSidecar::read_for(&best).unwrap();
    assert!(
        side.validation_metrics.is_none(),
        "{:?}",
        side.validation_metrics
    );
}
