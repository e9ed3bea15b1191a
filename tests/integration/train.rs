//! Training: metrics against NumPy references (`tests/golden/*.py` beside their JSON; the
//! losses are in `goldens.rs`), the shard data loader, and small end-to-end runs on real
//! LA2018 shards.
use dmnet::metrics::MetricsAccumulator;
use serde_json::Value;

fn golden(name: &str) -> Value {
    let p = crate::util::root().join("tests/golden").join(name);
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn metrics_match_numpy() {
    let g = golden("metrics.json");
    let k = g["num_classes"].as_u64().unwrap() as usize;
    let (h, w) = (
        g["height"].as_u64().unwrap() as usize,
        g["width"].as_u64().unwrap() as usize,
    );
    let mut acc = MetricsAccumulator::new(k);
    for s in g["slices"].as_array().unwrap() {
        let to_u8 = |v: &Value| -> Vec<u8> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u8)
                .collect()
        };
        let (pred, gt) = (to_u8(&s["pred"]), to_u8(&s["gt"]));
        assert_eq!(pred.len(), h * w);
        acc.add(&pred, &gt);
    }
    let m = acc.finish();
    let near =
        |a: f64, b: f64, what: &str| assert!((a - b).abs() < 1e-9, "{what}: {a} vs NumPy {b}");
    for (c, want) in floats(&g["iou"]).into_iter().enumerate() {
        near(m.iou[c], want, "iou");
    }
    for (c, want) in floats(&g["dice"]).into_iter().enumerate() {
        near(m.dice[c], want, "dice");
    }
    near(m.miou, g["miou"].as_f64().unwrap(), "miou");
    near(m.mean_dice, g["mean_dice"].as_f64().unwrap(), "mean dice");
    assert_eq!(m.slices, 6);
}

/// Shards of the first 10 LA2018 cases at 64×64 (all-slices protocol of pipelines/la2018.toml).
fn la_shards(data: &std::path::Path, out: &std::path::Path) {
    crate::util::run_ok(
        crate::util::bin("dmnet-prep")
            .args(["ingest", "--input"])
            .arg(data)
            .arg("--out")
            .arg(out)
            .arg("--pipeline")
            .arg(crate::util::root().join("pipelines/la2018.toml"))
            .args([
                "--size",
                "64",
                "--max-studies",
                "10",
                "--threads",
                "1",
                "-q",
            ]),
    );
}

fn read_jsonl(p: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// mIoU of predicting background everywhere on the val split: IoU_bg = background share, IoU_fg = 0.
fn all_background_miou(shards: &std::path::Path) -> f64 {
    let (mut bg, mut all) = (0u64, 0u64);
    for group in dmnet::shard::schema::read_shards(shards).unwrap() {
        for r in group
            .unwrap()
            .into_iter()
            .filter(|r| r.split == dmnet::shard::Split::Val)
        {
            let m = r.mask.unwrap();
            bg += m.iter().filter(|&&v| v == 0).count() as u64;
            all += m.len() as u64;
        }
    }
    bg as f64 / all as f64 / 2.0
}

/// Train DMNet (smallest encoder, width 1/8, 64×64, 2 epochs, CPU) on real LA2018 shards, kill
/// it during epoch 2, resume, then evaluate on test: losses fall, val mIoU beats the
/// all-background prediction, the resumed run continues at epoch 2, the run dir is complete.
#[test]
fn e2e_la2018_train_kill_resume_eval() {
    let data = crate::require_data!("la2018");
    let tmp = crate::util::tmp();
    let shards = tmp.path().join("shards");
    la_shards(&data, &shards);
    let pipeline = tmp.path().join("smoke.toml");
    // A higher learning rate than the paper's so two short epochs visibly learn.
    std::fs::write(
        &pipeline,
        "[train]\nlr = 1e-3\nlr_discriminator = 1e-4\nlabeled_batch = 2\nunlabeled_batch = 2\n\
         [train.model]\nwidth = 0.125\n",
    )
    .unwrap();
    let run = tmp.path().join("run");
    let train = || {
        let mut c = crate::util::bin("dmnet-train");
        c.arg("--shards").arg(&shards).arg("--out").arg(&run);
        c.arg("--pipeline").arg(&pipeline).arg("--json");
        c.args([
            "--encoder",
            "resnet18",
            "--size",
            "64",
            "--epochs",
            "2",
            "--device",
            "cpu",
        ]);
        c
    };
    // Start, wait for the epoch-1 checkpoint, kill during epoch 2.
    let mut child = train()
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let state = run.join("checkpoints/last/state.json");
    let t0 = std::time::Instant::now();
    loop {
        if let Ok(s) = std::fs::read_to_string(&state) {
            if serde_json::from_str::<Value>(&s).is_ok_and(|v| v["epoch"] == 1) {
                break;
            }
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "dmnet-train exited before epoch 1 ended"
        );
        assert!(t0.elapsed().as_secs() < 300, "epoch 1 took over 5 minutes");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(read_jsonl(&run.join("metrics.jsonl")).len(), 1);

    let out = crate::util::run_ok(train().arg("--resume"));
    let log = crate::util::stderr(&out);
    assert!(log.contains("after round 1"), "{log}");
    assert!(
        log.contains("round 2/2") && !log.contains("round 1/2"),
        "{log}"
    );
    let summary: Value = serde_json::from_str(&crate::util::stdout(&out)).unwrap();
    assert_eq!(summary["epochs"], 2);

    let recs = read_jsonl(&run.join("metrics.jsonl"));
    let epochs: Vec<u64> = recs.iter().map(|r| r["epoch"].as_u64().unwrap()).collect();
    assert_eq!(epochs, [1, 2]);
    let loss = |i: usize, k: &str| recs[i][k].as_f64().unwrap();
    // the supervised term (not L_S, which the ramp-up may raise) falls over the run
    assert!(
        loss(1, "loss_dice") < loss(0, "loss_dice"),
        "L_dice did not fall: {recs:?}"
    );
    let baseline = all_background_miou(&shards);
    assert_eq!(
        summary["select_on"], "miou",
        "the default selection: {summary}"
    );
    let best = summary["best_score"].as_f64().unwrap();
    // the best checkpoint is the round with the highest val mIoU, exactly
    let top = recs
        .iter()
        .map(|r| r["val"]["miou"].as_f64().unwrap())
        .fold(f64::MIN, f64::max);
    assert_eq!(
        best, top,
        "best_score is the best round's val mIoU: {recs:?}"
    );
    assert!(
        best > baseline,
        "val mIoU {best} ≤ all-background {baseline}"
    );

    for f in [
        "config.json",
        "curves.png",
        "prep-manifest.json",
        "checkpoints/best/model.safetensors",
        "checkpoints/last/optim.safetensors",
    ] {
        assert!(run.join(f).exists(), "{f} missing");
    }
    let cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["train"]["model"]["variant"], "dmnet");
    assert_eq!(cfg["train"]["model"]["in_channels"], 1);
    assert_eq!(cfg["data"]["label_names"][1], "left atrium");
    assert!(cfg["prep_config"].is_object());
    // The checkpoint's names are the contract's names.
    let ck = tch::Tensor::read_safetensors(run.join("checkpoints/last/model.safetensors")).unwrap();
    let names: std::collections::BTreeSet<String> = ck.into_iter().map(|(n, _)| n).collect();
    let model: dmnet::model::ModelConfig =
        serde_json::from_value(cfg["train"]["model"].clone()).unwrap();
    for n in dmnet::model::weight_names(&model) {
        assert!(names.contains(&n), "{n} not in the checkpoint");
    }

    let out = crate::util::run_ok(
        crate::util::bin("dmnet-train")
            .args(["eval", "--json", "--run"])
            .arg(&run)
            .arg("--shards")
            .arg(&shards)
            .args(["--split", "test", "--checkpoint", "last", "--device", "cpu"]),
    );
    let report: Value = serde_json::from_str(&crate::util::stdout(&out)).unwrap();
    assert_eq!(report["epoch"], 2);
    assert_eq!(report["metrics"]["iou"].as_array().unwrap().len(), 2);
    assert!(report["metrics"]["slices"].as_u64().unwrap() > 0);
    assert!(run.join("eval-test-last.json").exists());
    // Per-case metrics on the source grid: one CSV row per test case and class, the same cases
    // as in the JSON; the report names its grid, convention and units, and nothing is dropped.
    let c = &report["cases"];
    assert_eq!(
        (&c["grid"], &c["convention"], &c["units"]),
        (&"source".into(), &"nnunet".into(), &"mm".into()),
        "{c}"
    );
    let cases = c["per_case"].as_array().unwrap();
    assert_eq!(cases.len() as u64, c["cases"].as_u64().unwrap());
    let csv = std::fs::read_to_string(run.join("eval-test-last-cases.csv")).unwrap();
    assert_eq!(csv.lines().count(), cases.len() + 1, "{csv}");
    for case in cases {
        let k = &case["classes"][0];
        // every LA test case holds the atrium: a miss scores Dice 0 and the penalty, never null
        assert!(k["true_voxels"].as_u64().unwrap() > 0, "{case}");
        assert!(k["dice"].is_number() && k["hd95"].is_number(), "{case}");
        assert!(case["complete"].as_bool().unwrap(), "{case}");
    }
    let missed = cases
        .iter()
        .filter(|k| k["classes"][0]["presence"] == "missed")
        .count();
    assert_eq!(c["missed"].as_u64().unwrap() as usize, missed);
}

/// The loader on real shards: the labeled fraction is seeded and exact, streams yield the
/// requested number of full batches, shuffling is seeded, unlabeled streams carry no masks;
/// then one short epoch of every variant trains with the losses that variant defines.
#[test]
fn loader_and_every_variant_on_la2018_shards() {
    use dmnet::model::Variant;
    use dmnet::train::data::{stream, DataPlan, StreamSpec};
    let data = crate::require_data!("la2018");
    let tmp = crate::util::tmp();
    let shards = tmp.path().join("shards");
    la_shards(&data, &shards);

    let full = DataPlan::build(&shards, 1.0, 0).unwrap();
    assert_eq!(full.labeled.len(), full.labeled_total);
    let tenth = DataPlan::build(&shards, 0.1, 0).unwrap();
    assert_eq!(
        tenth.labeled.len(),
        (full.labeled_total as f64 * 0.1).ceil() as usize
    );
    assert_eq!(
        tenth.unlabeled.len(),
        full.unlabeled.len() + full.labeled_total - tenth.labeled.len()
    );
    assert_eq!(
        DataPlan::build(&shards, 0.1, 0).unwrap().labeled,
        tenth.labeled
    );
    assert_ne!(
        DataPlan::build(&shards, 0.1, 1).unwrap().labeled,
        tenth.labeled
    );
    assert!(DataPlan::build(&shards, 0.0, 0).is_err());

    let spec = |seed, drop| StreamSpec {
        batch: 5,
        steps: Some(7),
        seed,
        drop_masks: drop,
        window: 32,
        prefetch: 2,
    };
    let keys = |seed| -> Vec<(String, i32)> {
        let rx = stream(full.files.clone(), tenth.labeled.clone(), spec(seed, false));
        let batches: Vec<_> = rx.iter().map(|b| b.unwrap()).collect();
        assert_eq!(
            batches.len(),
            7,
            "cycled to 7 batches of 5 from {} slices",
            tenth.labeled.len()
        );
        assert!(batches
            .iter()
            .all(|b| b.len() == 5 && b.iter().all(|r| r.mask.is_some())));
        batches
            .iter()
            .flatten()
            .map(|r| (r.patient_key.clone(), r.slice_index))
            .collect()
    };
    assert_eq!(keys(Some(3)), keys(Some(3)));
    assert_ne!(keys(Some(3)), keys(Some(4)));
    let unl = stream(
        full.files.clone(),
        full.unlabeled.clone(),
        spec(Some(1), true),
    );
    assert!(unl.iter().all(|b| b
        .unwrap()
        .iter()
        .all(|r| r.mask.is_none() && r.split == dmnet::shard::Split::Train)));
    // One pass without shuffling: every val slice once, last batch short.
    let (files, val) = dmnet::train::data::split_refs(&shards, dmnet::shard::Split::Val).unwrap();
    let rx = stream(
        files,
        val.clone(),
        StreamSpec {
            batch: 16,
            steps: None,
            seed: None,
            drop_masks: false,
            window: 1,
            prefetch: 2,
        },
    );
    assert_eq!(
        rx.iter().map(|b| b.unwrap().len()).sum::<usize>(),
        val.len()
    );

    for variant in Variant::ALL {
        let mut t = dmnet::artifact::TrainConfig::default();
        t.model.variant = variant;
        t.model.width = 0.125;
        t.size = Some(64);
        t.epochs = 1;
        t.max_steps_per_epoch = Some(1);
        t.labeled_batch = 2;
        t.unlabeled_batch = 2;
        t.device = dmnet::cli::DeviceChoice::Cpu;
        let out = tmp.path().join(variant.name());
        let s = dmnet::train::run(&dmnet::train::RunSpec {
            shards: shards.clone(),
            out: out.clone(),
            pipeline: None,
            train: t,
            resume: false,
            extend: None,
        })
        .unwrap();
        let r = s.last.unwrap();
        assert_eq!((r.epoch, r.steps), (1, 1));
        assert!(
            r.loss_dice > 0.0 && r.loss_seg.is_finite(),
            "{variant:?}: {r:?}"
        );
        assert_eq!(
            r.loss_semi > 0.0,
            variant.uses_unlabeled(),
            "{variant:?} L_semi {}",
            r.loss_semi
        );
        assert_eq!(
            r.loss_adv > 0.0,
            variant.uses_adversarial(),
            "{variant:?} L_adv {}",
            r.loss_adv
        );
        assert_eq!(
            r.loss_dis > 0.0,
            variant.uses_adversarial(),
            "{variant:?} L_dis {}",
            r.loss_dis
        );
        let ck =
            tch::Tensor::read_safetensors(out.join("checkpoints/last/model.safetensors")).unwrap();
        assert_eq!(
            ck.iter().any(|(n, _)| n.starts_with("encoder2.")),
            variant.separate_encoders()
        );
        assert_eq!(
            ck.iter().any(|(n, _)| n.starts_with("discriminator.")),
            variant.uses_adversarial()
        );
    }
}

/// A short deterministic run of `t` on `shards` into `out`; returns the segmenter's trainable
/// weights of the last checkpoint (BatchNorm running statistics excluded: they are buffers).
fn trained_weights(
    shards: &std::path::Path,
    out: &std::path::Path,
    t: dmnet::artifact::TrainConfig,
) -> std::collections::BTreeMap<String, tch::Tensor> {
    trained_tensors(shards, out, t, |n| {
        !n.contains("running_") && !n.contains("num_batches")
    })
}

/// The segmenter's tensors of the last checkpoint of a short run, those `keep` accepts.
fn trained_tensors(
    shards: &std::path::Path,
    out: &std::path::Path,
    t: dmnet::artifact::TrainConfig,
    keep: fn(&str) -> bool,
) -> std::collections::BTreeMap<String, tch::Tensor> {
    dmnet::train::run(&dmnet::train::RunSpec {
        shards: shards.into(),
        out: out.into(),
        pipeline: None,
        train: t,
        resume: false,
        extend: None,
    })
    .unwrap();
    tch::Tensor::read_safetensors(out.join("checkpoints/last/model.safetensors"))
        .unwrap()
        .into_iter()
        .filter(|(n, _)| !n.starts_with("discriminator.") && keep(n))
        .collect()
}

fn small_config(variant: dmnet::model::Variant) -> dmnet::artifact::TrainConfig {
    let mut t = dmnet::artifact::TrainConfig::default();
    t.model.variant = variant;
    t.model.width = 0.125;
    t.steps = Some(4);
    t.eval_every = Some(4);
    t.labeled_batch = 2;
    t.unlabeled_batch = 2;
    t.lr = 1e-3;
    t.labeled_slice_fraction = "30%".parse().unwrap();
    t.deterministic = true;
    t.device = dmnet::cli::DeviceChoice::Cpu;
    t
}

fn max_diff(
    a: &std::collections::BTreeMap<String, tch::Tensor>,
    b: &std::collections::BTreeMap<String, tch::Tensor>,
) -> f64 {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    a.iter()
        .map(|(n, x)| (x - &b[n]).abs().max().double_value(&[]))
        .fold(0.0, f64::max)
}

/// With λ1 = λ2 = 0 nothing trains on the unlabeled slices, so a DMNet step must equal the
/// supervised step exactly when the two passes are separate (issue 9's regression test). In
/// the joint pass the unlabeled slices enter the labeled slices' BatchNorm statistics, and the
/// weights differ: the mechanism that made DMNet score below its supervised variant.
#[test]
fn dmnet_with_zero_weights_trains_exactly_like_supervised_only_with_separate_passes() {
    use dmnet::artifact::UnlabeledPass;
    use dmnet::model::Variant;
    let data = crate::require_data!("la2018");
    let tmp = crate::util::tmp();
    let shards = tmp.path().join("shards");
    la_shards(&data, &shards);
    let sup = trained_weights(
        &shards,
        &tmp.path().join("sup"),
        small_config(Variant::Supervised),
    );
    let zero = |pass| {
        let mut t = small_config(Variant::Dmnet);
        t.loss.lambda_adv = 0.0;
        t.loss.lambda_semi = 0.0;
        t.loss.unlabeled_pass = pass;
        t
    };
    let separate = trained_weights(
        &shards,
        &tmp.path().join("sep"),
        zero(UnlabeledPass::Separate),
    );
    assert_eq!(
        max_diff(&sup, &separate),
        0.0,
        "separate passes with λ = 0 must equal supervised"
    );
    let joint = trained_weights(
        &shards,
        &tmp.path().join("joint"),
        zero(UnlabeledPass::Joint),
    );
    let d = max_diff(&sup, &joint);
    assert!(
        d > 1e-6,
        "the joint pass should change the labeled gradients (max |Δ| {d})"
    );
    // The BatchNorm policy: both passes update the running statistics (momentum 0.1 per pass),
    // so the eval-time statistics describe labeled and unlabeled slices alike.
    let running = |n: &str| n.contains("running_mean");
    let sup_stats = trained_tensors(
        &shards,
        &tmp.path().join("sup-stats"),
        small_config(Variant::Supervised),
        running,
    );
    let sep_stats = trained_tensors(
        &shards,
        &tmp.path().join("sep-stats"),
        zero(UnlabeledPass::Separate),
        running,
    );
    let d = max_diff(&sup_stats, &sep_stats);
    assert!(
        d > 1e-6,
        "the unlabeled pass must update the BatchNorm running statistics (max |Δ| {d})"
    );
}

/// `--deterministic`: the same seed gives the same weights and losses in two processes; and
/// `--resume --steps N` extends a finished run instead of silently doing nothing.
#[test]
fn deterministic_runs_repeat_across_processes_and_resume_extends_a_finished_run() {
    let data = crate::require_data!("la2018");
    let tmp = crate::util::tmp();
    let shards = tmp.path().join("shards");
    la_shards(&data, &shards);
    let train = |out: &std::path::Path, steps: &str, extra: &[&str]| {
        let mut c = crate::util::bin("dmnet-train");
        c.arg("--shards")
            .arg(&shards)
            .arg("--out")
            .arg(out)
            .arg("--json");
        c.args([
            "--width",
            "0.125",
            "--labeled-batch",
            "2",
            "--unlabeled-batch",
            "2",
        ]);
        c.args([
            "--steps",
            steps,
            "--eval-every",
            "2",
            "--device",
            "cpu",
            "--deterministic",
        ]);
        c.args(["--labeled-fraction", "30%", "-q"]).args(extra);
        crate::util::run_ok(&mut c)
    };
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    // the ramp over the whole 4-step run: not finished at the last step (3 of 0..4)
    train(&a, "4", &["--ramp-up", "1.0"]);
    train(&b, "4", &["--ramp-up", "1.0"]);
    let bytes =
        |d: &std::path::Path| std::fs::read(d.join("checkpoints/last/model.safetensors")).unwrap();
    assert!(
        bytes(&a) == bytes(&b),
        "same seed, different weights across processes"
    );
    let losses = |d: &std::path::Path| -> Vec<f64> {
        read_jsonl(&d.join("metrics.jsonl"))
            .iter()
            .map(|r| r["loss_seg"].as_f64().unwrap())
            .collect()
    };
    assert_eq!(losses(&a), losses(&b));
    assert_eq!(losses(&a).len(), 2, "4 steps, validation every 2");

    // Extend run a from 4 to 6 steps: one more round, step 6, the schedule recorded.
    let out = train(&a, "6", &["--resume"]);
    let summary: Value = serde_json::from_str(&crate::util::stdout(&out)).unwrap();
    assert_eq!(summary["epochs"], 3, "{summary}");
    let recs = read_jsonl(&a.join("metrics.jsonl"));
    assert_eq!(recs.last().unwrap()["step"], 6);
    let cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["data"]["schedule"]["total_steps"], 6);
    // The ramp keeps the length the run started with (issue 22, item 5): at step 5 it is
    // sigmoid_rampup(5, 4) = 1, where a ramp recomputed over 6 steps would fall back to
    // exp(-5 (1 - 5/6)^2) = 0.87 after having reached exp(-5 (1 - 3/4)^2) = 0.73 at step 3.
    assert_eq!(cfg["data"]["schedule"]["ramp_steps"], 4);
    let ramps: Vec<f64> = recs.iter().map(|r| r["ramp"].as_f64().unwrap()).collect();
    let want = dmnet::artifact::run_config::sigmoid_rampup(3, 4, 1.0);
    assert!((ramps[1] - want).abs() < 1e-12, "{ramps:?}");
    assert_eq!(ramps[2], 1.0, "the extended run keeps its ramp: {ramps:?}");
    // Shortening is refused.
    let short = crate::util::bin("dmnet-train")
        .arg("--shards")
        .arg(&shards)
        .arg("--out")
        .arg(&a)
        .args(["--resume", "--steps", "2", "-q"])
        .output()
        .unwrap();
    assert!(!short.status.success());
    assert!(
        crate::util::stderr(&short).contains("not shorten"),
        "{}",
        crate::util::stderr(&short)
    );
}

/// `dmnet-train grid`: two arms paired by seed, both checkpoints evaluated, grid.md/json
/// written; `--reevaluate` re-scores the finished runs without training (metrics.jsonl and the
/// weights unchanged) and leaves unfinished cells out without creating them (issue 22, item 7).
#[test]
fn grid_pairs_arms_and_reevaluate_trains_nothing() {
    let data = crate::require_data!("la2018");
    let tmp = crate::util::tmp();
    let shards = tmp.path().join("shards");
    la_shards(&data, &shards);
    let pipe = tmp.path().join("g.toml");
    std::fs::write(
        &pipe,
        r#"
[train]
steps = 2
eval_every = 1
labeled_batch = 2
unlabeled_batch = 2
lr = 1e-3
deterministic = true
device = "cpu"
[train.model]
width = 0.125
[grid]
fractions = ["30%"]
seeds = [0]
baseline = "supervised"
[grid.arms.supervised]
model = { variant = "supervised" }
[grid.arms.dmnet]
model = { variant = "dmnet" }
"#,
    )
    .unwrap();
    let out = tmp.path().join("runs");
    let grid = |extra: &[&str]| {
        let mut c = crate::util::bin("dmnet-train");
        c.args(["grid", "--shards"])
            .arg(&shards)
            .arg("--out")
            .arg(&out)
            .arg("--pipeline")
            .arg(&pipe)
            .args(["--jobs", "2", "-q"])
            .args(extra);
        c.output().unwrap()
    };
    let o = grid(&[]);
    assert!(o.status.success(), "{}", crate::util::stderr(&o));
    let md = std::fs::read_to_string(out.join("grid.md")).unwrap();
    assert!(md.contains("| dmnet − supervised |"), "{md}");
    let results = |p: &std::path::Path| -> Vec<Value> {
        serde_json::from_str::<Value>(&std::fs::read_to_string(p).unwrap())
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    };
    assert_eq!(
        results(&out.join("grid.json")).len(),
        4,
        "2 arms × best/last"
    );
    let run = out.join("dmnet-30pct-seed0");
    let before = (
        std::fs::read(run.join("metrics.jsonl")).unwrap(),
        std::fs::read(run.join("checkpoints/last/model.safetensors")).unwrap(),
    );
    std::fs::remove_file(out.join("grid.json")).unwrap();
    // seed 1 is not trained: --reevaluate names it and leaves it out
    let o = grid(&["--reevaluate", "--seeds", "0,1"]);
    assert!(o.status.success(), "{}", crate::util::stderr(&o));
    let err = crate::util::stderr(&o);
    assert!(
        err.contains("seed1") && err.contains("not finished"),
        "{err}"
    );
    assert!(!out.join("dmnet-30pct-seed1").exists(), "nothing trained");
    assert_eq!(results(&out.join("grid.json")).len(), 4, "re-scored");
    let after = (
        std::fs::read(run.join("metrics.jsonl")).unwrap(),
        std::fs::read(run.join("checkpoints/last/model.safetensors")).unwrap(),
    );
    assert!(before == after, "--reevaluate trained");
}

/// Issue 26, the grid across machines: two workers (`--worker-index I --num-workers 2`, two
/// processes at once) and `--merge` give the tables of a single-worker grid, run for run
/// (`deterministic = true`), and `--merge` refuses while a cell has no result.
#[test]
fn two_grid_workers_merge_to_the_single_worker_grid() {
    let data = crate::require_data!("la2018");
    let tmp = crate::util::tmp();
    let shards = tmp.path().join("shards");
    la_shards(&data, &shards);
    let pipe = tmp.path().join("g.toml");
    std::fs::write(
        &pipe,
        "[train]\nsteps = 2\neval_every = 1\nlabeled_batch = 2\nunlabeled_batch = 2\n\
         lr = 1e-3\ndeterministic = true\ndevice = \"cpu\"\n[train.model]\nwidth = 0.125\n\
         [grid]\nfractions = [\"30%\"]\nseeds = [0, 1]\nbaseline = \"supervised\"\n\
         [grid.arms.supervised]\nmodel = { variant = \"supervised\" }\n\
         [grid.arms.dmnet]\nmodel = { variant = \"dmnet\" }\n",
    )
    .unwrap();
    let grid = |out: &std::path::Path, extra: &[&str]| {
        let mut c = crate::util::bin("dmnet-train");
        c.args(["grid", "--shards"])
            .arg(&shards)
            .arg("--out")
            .arg(out)
            .arg("--pipeline")
            .arg(&pipe)
            .arg("-q")
            .args(extra);
        c
    };
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    crate::util::run_ok(&mut grid(&one, &[]));
    let workers: Vec<std::process::Child> = (0..2)
        .map(|i| {
            grid(
                &two,
                &["--worker-index", &i.to_string(), "--num-workers", "2"],
            )
            .spawn()
            .unwrap()
        })
        .collect();
    // before the workers finish there is nothing, or not everything, to merge
    for mut w in workers {
        assert!(w.wait().unwrap().success());
    }
    assert!(!two.join("grid.md").exists(), "workers write no tables");
    let w0 = std::fs::read_to_string(two.join("grid-w0.json")).unwrap();
    std::fs::rename(two.join("grid-w1.json"), tmp.path().join("w1")).unwrap();
    let o = grid(&two, &["--merge"]).output().unwrap();
    assert!(!o.status.success());
    assert!(
        crate::util::stderr(&o).contains("cells have no results"),
        "{}",
        crate::util::stderr(&o)
    );
    std::fs::rename(tmp.path().join("w1"), two.join("grid-w1.json")).unwrap();
    crate::util::run_ok(&mut grid(&two, &["--merge"]));
    let strip = |dir: &std::path::Path| -> Vec<Value> {
        let v: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("grid.json")).unwrap()).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let mut r = r.clone();
                r.as_object_mut().unwrap().remove("run_dir");
                r
            })
            .collect()
    };
    let (a, b) = (strip(&one), strip(&two));
    assert_eq!(a.len(), 8, "2 arms × 2 seeds × best/last");
    assert_eq!(a, b, "the merged grid equals the single-worker grid");
    assert!(!w0.is_empty());
    let md = std::fs::read_to_string(two.join("grid.md")).unwrap();
    assert!(md.contains("| dmnet − supervised |"), "{md}");
}
