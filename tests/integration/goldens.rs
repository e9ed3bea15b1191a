//! Golden tests that can fail (issue 22): each loss of every method, in value **and** in
//! gradient, the adversarial targets and detaches, dmnet's Adam with the poly schedule, and
//! SSL4MIS's sigmoid ramp-up, against the PyTorch reference `tests/golden/training.py` beside
//! its JSON. Each check is a function that takes an implementation and reports a mismatch;
//! the tests feed it dmnet's implementation (no mismatch) and perturbed ones (a swapped
//! real/fake target, each detach dropped, discriminator parameters in the segmenter's
//! optimiser, a loss scaled by 1.01, …), which it must report: the fault injections are
//! committed, so a check that stops checking fails its own test.
use dmnet::artifact::SupervisedLoss;
use dmnet::train::losses;
use serde_json::Value;
use tch::{Device, Kind, Tensor};

fn golden() -> Value {
    let p = crate::util::root().join("tests/golden/training.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn ints(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

fn shape(g: &Value) -> [i64; 4] {
    let s = ints(&g["shape"]);
    [s[0], s[1], s[2], s[3]]
}

/// A double tensor of `shape` from JSON, requiring a gradient when `grad`.
fn tensor(v: &Value, shape: &[i64], grad: bool) -> Tensor {
    Tensor::from_slice(&floats(v))
        .to_kind(Kind::Double)
        .reshape(shape)
        .set_requires_grad(grad)
}

fn labels(v: &Value, shape: &[i64]) -> Tensor {
    Tensor::from_slice(&ints(v)).reshape(shape)
}

/// `value` against the reference (1e-9 relative).
fn same_value(what: &str, got: &Tensor, want: &Value) -> Result<(), String> {
    let (g, w) = (got.double_value(&[]), want.as_f64().unwrap());
    if (g - w).abs() > 1e-9 * w.abs().max(1.0) {
        return Err(format!("{what}: value {g} vs reference {w}"));
    }
    Ok(())
}

/// The gradient of `loss` with respect to `input` against the reference, element by element.
fn same_grad(what: &str, loss: &Tensor, input: &Tensor, want: &Value) -> Result<(), String> {
    let g = Tensor::run_backward(&[loss], &[input], true, false)
        .pop()
        .unwrap();
    let got: Vec<f64> = if g.defined() {
        Vec::<f64>::try_from(g.flatten(0, -1)).unwrap()
    } else {
        vec![0.0; input.numel()]
    };
    let want = floats(want);
    let worst = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    if got.len() != want.len() || worst > 1e-9 {
        return Err(format!(
            "{what}: gradient differs from the reference by {worst:.3e}"
        ));
    }
    Ok(())
}

type Semi = dyn Fn(&Tensor, &Tensor, f64) -> Tensor;

/// Checks an implementation of one L_semi form (a function of the two decoders' logits and
/// the temperature) in value and in both gradients.
fn check_semi(g: &Value, key: &str, imp: &Semi) -> Result<(), String> {
    let s = shape(g);
    let (l1, l2) = (
        tensor(&g["logits1"], &s, true),
        tensor(&g["logits2"], &s, true),
    );
    let want = &g["semi"][key];
    let v = imp(&l1, &l2, g["temperature"].as_f64().unwrap());
    same_value(key, &v, &want["value"])?;
    same_grad(&format!("{key} ∂/∂logits1"), &v, &l1, &want["grad_logits1"])?;
    same_grad(&format!("{key} ∂/∂logits2"), &v, &l2, &want["grad_logits2"])
}

/// dmnet's L_semi of `form` from logits, as the DMNet step computes it.
fn dmnet_semi(form: dmnet::artifact::run_config::SemiLoss, sg: bool) -> Box<Semi> {
    Box::new(move |l1, l2, t| {
        let (p1, p2) = (l1.softmax(1, Kind::Double), l2.softmax(1, Kind::Double));
        let (s1, s2) = (
            losses::sharpen_logits(l1, t).to_kind(Kind::Double),
            losses::sharpen_logits(l2, t).to_kind(Kind::Double),
        );
        losses::semi(form, sg, (&p1, &p2), (&s1, &s2))
    })
}

#[test]
fn every_semi_loss_matches_pytorch_in_value_and_gradient() {
    use dmnet::artifact::run_config::SemiLoss::*;
    let g = golden();
    for (key, form, sg) in [
        ("dice-paper", DicePaper, false),
        ("dice-paper-sg", DicePaper, true),
        ("dice-squared", DiceSquared, false),
        ("dice-squared-sg", DiceSquared, true),
        ("mse", Mse, false),
    ] {
        check_semi(&g, key, &*dmnet_semi(form, sg)).unwrap();
    }
}

#[test]
fn the_semi_checks_catch_a_dropped_detach_and_a_scaled_loss() {
    let g = golden();
    let scaled = move |l1: &Tensor, l2: &Tensor, t: f64| {
        dmnet_semi(dmnet::artifact::run_config::SemiLoss::DicePaper, false)(l1, l2, t) * 1.01
    };
    let e = check_semi(&g, "dice-paper", &scaled).unwrap_err();
    assert!(e.contains("dice-paper: value"), "{e}");
    // stop-gradient without its detaches: the same value, other gradients
    let no_detach = move |l1: &Tensor, l2: &Tensor, t: f64| {
        let (s1, s2) = (losses::sharpen_logits(l1, t), losses::sharpen_logits(l2, t));
        (losses::semi_loss(&s1, &s2) + losses::semi_loss(&s1, &s2)) * 0.5
    };
    let e = check_semi(&g, "dice-paper-sg", &no_detach).unwrap_err();
    assert!(e.contains("gradient"), "{e}");
    // MSE whose targets are not detached
    let mse_no_detach = move |l1: &Tensor, l2: &Tensor, t: f64| {
        let (p1, p2) = (l1.softmax(1, Kind::Double), l2.softmax(1, Kind::Double));
        let (s1, s2) = (losses::sharpen_logits(l1, t), losses::sharpen_logits(l2, t));
        (&p1 - &s2).square().mean(Kind::Double) + (&p2 - &s1).square().mean(Kind::Double)
    };
    let e = check_semi(&g, "mse", &mse_no_detach).unwrap_err();
    assert!(e.contains("gradient"), "{e}");
}

type Sup = dyn Fn(SupervisedLoss, &Tensor, &Tensor) -> Tensor;

fn check_supervised(g: &Value, imp: &Sup) -> Result<(), String> {
    let s = shape(g);
    for (key, form) in [
        ("dice", SupervisedLoss::Dice),
        ("dice-ce", SupervisedLoss::DiceCe),
    ] {
        let l = tensor(&g["logits1"], &s, true);
        let v = imp(form, &l, &labels(&g["labels"], &[s[0], s[2], s[3]]));
        let want = &g["supervised"][key];
        same_value(key, &v, &want["value"])?;
        same_grad(key, &v, &l, &want["grad_logits"])?;
    }
    Ok(())
}

#[test]
fn the_supervised_losses_match_pytorch_and_a_scaled_one_is_caught() {
    let g = golden();
    check_supervised(&g, &move |f, l, y| losses::supervised(f, l, y, None)).unwrap();
    let e =
        check_supervised(&g, &move |f, l, y| losses::supervised(f, l, y, None) * 1.01).unwrap_err();
    assert!(e.contains("value"), "{e}");
}

/// The fixed 1×1-convolution discriminator of the reference.
fn disc(g: &Value, k: i64) -> (Tensor, Tensor) {
    (
        tensor(&g["disc_weight"], &[1, k, 1, 1], true),
        tensor(&g["disc_bias"], &[1], true),
    )
}

type DiscLoss = dyn Fn(&dyn Fn(&Tensor) -> Tensor, &Tensor, &Tensor, &Tensor) -> Tensor;

/// Checks a discriminator loss (D, p1, p2, one-hot) → L_dis: value, the gradients into the
/// decoders' logits (zero: the predictions are detached) and into D's weights.
fn check_discriminator(g: &Value, imp: &DiscLoss) -> Result<(), String> {
    let s = shape(g);
    let (l1, l2) = (
        tensor(&g["logits1"], &s, true),
        tensor(&g["logits2"], &s, true),
    );
    let (w, b) = disc(g, s[1]);
    let d = |x: &Tensor| x.conv2d(&w, Some(&b), [1, 1], [0, 0], [1, 1], 1);
    let y = losses::one_hot(&labels(&g["labels"], &[s[0], s[2], s[3]]), s[1]).to_kind(Kind::Double);
    let v = imp(
        &d,
        &l1.softmax(1, Kind::Double),
        &l2.softmax(1, Kind::Double),
        &y,
    );
    let want = &g["discriminator"];
    same_value("L_dis", &v, &want["value"])?;
    same_grad("L_dis ∂/∂logits1", &v, &l1, &want["grad_logits1"])?;
    same_grad("L_dis ∂/∂logits2", &v, &l2, &want["grad_logits2"])?;
    same_grad("L_dis ∂/∂D weight", &v, &w, &want["grad_weight"])?;
    same_grad("L_dis ∂/∂D bias", &v, &b, &want["grad_bias"])
}

type AdvLoss = dyn Fn(&dyn Fn(&Tensor) -> Tensor, &Tensor, &Tensor) -> Tensor;

fn check_adversarial(g: &Value, imp: &AdvLoss) -> Result<(), String> {
    let s = shape(g);
    let (l1, l2) = (
        tensor(&g["logits1"], &s, true),
        tensor(&g["logits2"], &s, true),
    );
    let (w, b) = disc(g, s[1]);
    let d = |x: &Tensor| x.conv2d(&w, Some(&b), [1, 1], [0, 0], [1, 1], 1);
    let v = imp(
        &d,
        &l1.softmax(1, Kind::Double),
        &l2.softmax(1, Kind::Double),
    );
    let want = &g["adversarial"];
    same_value("L_adv", &v, &want["value"])?;
    same_grad("L_adv ∂/∂logits1", &v, &l1, &want["grad_logits1"])?;
    same_grad("L_adv ∂/∂logits2", &v, &l2, &want["grad_logits2"])
}

#[test]
fn the_adversarial_losses_match_pytorch_with_their_targets_and_detaches() {
    let g = golden();
    check_discriminator(&g, &move |d, p1, p2, y| {
        losses::discriminator_loss(d, p1, p2, y)
    })
    .unwrap();
    check_adversarial(&g, &move |d, p1, p2| losses::adversarial_loss(d, p1, p2)).unwrap();
}

#[test]
fn the_adversarial_checks_catch_swapped_targets_and_dropped_detaches() {
    let g = golden();
    // real and fake targets swapped
    let swapped = move |d: &dyn Fn(&Tensor) -> Tensor, p1: &Tensor, p2: &Tensor, y: &Tensor| {
        losses::bce_with_logits(&d(&p1.detach()), 1.0)
            + losses::bce_with_logits(&d(&p2.detach()), 1.0)
            + losses::bce_with_logits(&d(y), 0.0)
    };
    let e = check_discriminator(&g, &swapped).unwrap_err();
    assert!(e.contains("L_dis: value"), "{e}");
    // the fake predictions not detached: L_dis would train the segmenter
    let no_detach = move |d: &dyn Fn(&Tensor) -> Tensor, p1: &Tensor, p2: &Tensor, y: &Tensor| {
        losses::bce_with_logits(&d(p1), 0.0)
            + losses::bce_with_logits(&d(p2), 0.0)
            + losses::bce_with_logits(&d(y), 1.0)
    };
    let e = check_discriminator(&g, &no_detach).unwrap_err();
    assert!(e.contains("∂/∂logits1"), "{e}");
    // the segmenter's adversarial target set to "fake"
    let wrong = move |d: &dyn Fn(&Tensor) -> Tensor, p1: &Tensor, p2: &Tensor| {
        losses::bce_with_logits(&d(p1), 0.0) + losses::bce_with_logits(&d(p2), 0.0)
    };
    let e = check_adversarial(&g, &wrong).unwrap_err();
    assert!(e.contains("L_adv: value"), "{e}");
    // the adversarial loss detached: it would never reach the segmenter
    let detached = move |d: &dyn Fn(&Tensor) -> Tensor, p1: &Tensor, p2: &Tensor| {
        losses::adversarial_loss(d, &p1.detach(), &p2.detach())
    };
    let e = check_adversarial(&g, &detached).unwrap_err();
    assert!(e.contains("gradient"), "{e}");
}

/// Checks that two optimiser groups are disjoint and cover exactly the segmenter's and the
/// discriminator's parameters: the discriminator's gradients can never be applied by the
/// segmenter's Adam, nor the reverse.
fn check_groups(
    cfg: &dmnet::model::ModelConfig,
    groups: &dmnet::model::ParamGroups,
) -> Result<(), String> {
    let seg_names: std::collections::BTreeSet<String> = dmnet::model::weight_specs(cfg)
        .into_iter()
        .filter(|w| w.trainable)
        .map(|w| w.name)
        .collect();
    let dis_names: std::collections::BTreeSet<String> = dmnet::model::discriminator_specs(cfg)
        .into_iter()
        .filter(|w| w.trainable)
        .map(|w| w.name)
        .collect();
    let seg: std::collections::BTreeSet<String> = groups.segmenter.iter().cloned().collect();
    let dis: std::collections::BTreeSet<String> = groups.discriminator.iter().cloned().collect();
    if let Some(x) = seg.intersection(&dis).next() {
        return Err(format!("{x} is in both optimisers"));
    }
    if let Some(x) = seg.iter().find(|n| !seg_names.contains(*n)) {
        return Err(format!(
            "the segmenter's optimiser updates {x}, not a segmenter parameter"
        ));
    }
    if let Some(x) = dis.iter().find(|n| !dis_names.contains(*n)) {
        return Err(format!(
            "the discriminator's optimiser updates {x}, not a discriminator parameter"
        ));
    }
    if seg != seg_names || dis != dis_names {
        return Err("an optimiser misses parameters of its network".into());
    }
    Ok(())
}

#[test]
fn the_optimisers_are_isolated_and_a_leak_is_caught() {
    let cfg = dmnet::model::ModelConfig {
        width: 0.125,
        input_size: 32,
        ..Default::default()
    };
    let groups = dmnet::model::param_groups(&cfg);
    check_groups(&cfg, &groups).unwrap();
    let mut leak = groups.clone();
    leak.segmenter.push(groups.discriminator[0].clone());
    let e = check_groups(&cfg, &leak).unwrap_err();
    assert!(e.contains("in both optimisers"), "{e}");
    let mut moved = groups.clone();
    let d = moved.discriminator.remove(0);
    moved.segmenter.push(d);
    let e = check_groups(&cfg, &moved).unwrap_err();
    assert!(e.contains("not a segmenter parameter"), "{e}");
}

/// Mean Teacher's loss (student logits, teacher logits, labels, weight) → total.
type MtLoss = dyn Fn(&Tensor, &Tensor, &Tensor, f64) -> Tensor;

fn check_mean_teacher(g: &Value, imp: &MtLoss) -> Result<(), String> {
    let m = &g["mean_teacher"];
    let [_, k, h, w] = shape(g);
    let (nl, nu) = (
        m["n_labeled"].as_i64().unwrap(),
        m["n_unlabeled"].as_i64().unwrap(),
    );
    let s = tensor(&m["student"], &[nl + nu, k, h, w], true);
    let t = tensor(&m["teacher"], &[nu, k, h, w], true);
    let v = imp(
        &s,
        &t,
        &labels(&m["labels"], &[nl, h, w]),
        m["weight"].as_f64().unwrap(),
    );
    same_value("mean teacher", &v, &m["value"])?;
    same_grad("mean teacher ∂/∂student", &v, &s, &m["grad_student"])?;
    same_grad("mean teacher ∂/∂teacher", &v, &t, &m["grad_teacher"])
}

#[test]
fn mean_teacher_matches_pytorch_and_an_undetached_teacher_is_caught() {
    let g = golden();
    let f = SupervisedLoss::DiceCe;
    check_mean_teacher(&g, &move |s, t, y, w| {
        losses::mean_teacher_loss(f, s, t, y, w).0
    })
    .unwrap();
    let leak = move |s: &Tensor, t: &Tensor, y: &Tensor, w: f64| {
        let nl = y.size()[0];
        let sup = losses::supervised(f, &s.narrow(0, 0, nl), y, None);
        let cons = (s.narrow(0, nl, t.size()[0]).softmax(1, Kind::Double)
            - t.softmax(1, Kind::Double))
        .square()
        .mean(Kind::Double);
        sup + cons * w
    };
    let e = check_mean_teacher(&g, &leak).unwrap_err();
    assert!(e.contains("∂/∂teacher"), "{e}");
    let scaled = move |s: &Tensor, t: &Tensor, y: &Tensor, w: f64| {
        losses::mean_teacher_loss(f, s, t, y, w * 1.01).0
    };
    assert!(check_mean_teacher(&g, &scaled).is_err());
}

/// semiFCN's loss under test: (student logits [labeled; unlabeled], frozen logits on the
/// unlabeled, labels, weight) → total.
type SelfTrainingLoss = dyn Fn(&Tensor, &Tensor, &Tensor, f64) -> Tensor;

fn check_semifcn(g: &Value, imp: &SelfTrainingLoss) -> Result<(), String> {
    let m = &g["semifcn"];
    let [_, k, h, w] = shape(g);
    let nl = g["mean_teacher"]["n_labeled"].as_i64().unwrap();
    let nu = g["mean_teacher"]["n_unlabeled"].as_i64().unwrap();
    let s = tensor(&m["student"], &[nl + nu, k, h, w], true);
    let f = tensor(&m["frozen"], &[nu, k, h, w], true);
    let y = labels(&m["labels"], &[nl, h, w]);
    let v = imp(&s, &f, &y, m["weight"].as_f64().unwrap());
    same_value("semifcn", &v, &m["value"])?;
    same_grad("semifcn ∂/∂student", &v, &s, &m["grad_student"])?;
    same_grad("semifcn ∂/∂frozen", &v, &f, &m["grad_frozen"])
}

#[test]
fn semifcn_matches_pytorch_and_self_labelling_is_caught() {
    let g = golden();
    let f = SupervisedLoss::DiceCe;
    check_semifcn(&g, &move |s, fr, y, w| {
        losses::self_training_loss(f, s, fr, y, w).0
    })
    .unwrap();
    // the fault: pseudo-masks from the student's own logits instead of the frozen network's
    let own = move |s: &Tensor, fr: &Tensor, y: &Tensor, w: f64| {
        let nl = y.size()[0];
        let mine = s.narrow(0, nl, fr.size()[0]);
        losses::self_training_loss(f, s, &mine, y, w).0
    };
    assert!(check_semifcn(&g, &own).is_err());
    let scaled = move |s: &Tensor, fr: &Tensor, y: &Tensor, w: f64| {
        losses::self_training_loss(f, s, fr, y, w * 1.01).0
    };
    assert!(check_semifcn(&g, &scaled).is_err());
}

type CpsLoss = dyn Fn(&Tensor, &Tensor, &Tensor, f64) -> Tensor;

fn check_cps(g: &Value, imp: &CpsLoss) -> Result<(), String> {
    let c = &g["cps"];
    let [_, k, h, w] = shape(g);
    let nl = g["mean_teacher"]["n_labeled"].as_i64().unwrap();
    let n = floats(&c["logits1"]).len() as i64 / (k * h * w);
    let (a, b) = (
        tensor(&c["logits1"], &[n, k, h, w], true),
        tensor(&c["logits2"], &[n, k, h, w], true),
    );
    let v = imp(
        &a,
        &b,
        &labels(&c["labels"], &[nl, h, w]),
        c["weight"].as_f64().unwrap(),
    );
    same_value("cps", &v, &c["value"])?;
    same_grad("cps ∂/∂logits1", &v, &a, &c["grad_logits1"])?;
    same_grad("cps ∂/∂logits2", &v, &b, &c["grad_logits2"])
}

#[test]
fn cps_matches_pytorch_and_swapped_pseudo_labels_are_caught() {
    let g = golden();
    let f = SupervisedLoss::DiceCe;
    check_cps(&g, &move |a, b, y, w| losses::cps_loss(f, a, b, y, w).0).unwrap();
    // each network taught by its own pseudo-labels instead of the other's
    let own = move |a: &Tensor, b: &Tensor, y: &Tensor, w: f64| {
        let nl = y.size()[0];
        let nu = a.size()[0] - nl;
        let sup = losses::supervised(f, &a.narrow(0, 0, nl), y, None)
            + losses::supervised(f, &b.narrow(0, 0, nl), y, None);
        let (u1, u2) = (a.narrow(0, nl, nu), b.narrow(0, nl, nu));
        let cps = losses::cross_entropy(&u1, &losses::hard_labels(&u1), None)
            + losses::cross_entropy(&u2, &losses::hard_labels(&u2), None);
        sup + cps * w
    };
    assert!(check_cps(&g, &own).is_err());
}

type MixLoss = dyn Fn(&Tensor, &Tensor, &Tensor, &Tensor, (f64, f64)) -> Tensor;

fn check_mix(g: &Value, imp: &MixLoss) -> Result<(), String> {
    let m = &g["bcp_mix"];
    let s = shape(g);
    let l = tensor(&m["logits"], &s, true);
    let lab = move |v: &Value| labels(v, &[s[0], s[2], s[3]]);
    let mask = tensor(&m["mask"], &[s[2], s[3]], false);
    let w = floats(&m["weights"]);
    let v = imp(
        &l,
        &lab(&m["img_labels"]),
        &lab(&m["patch_labels"]),
        &mask,
        (w[0], w[1]),
    );
    same_value("bcp mix_loss", &v, &m["value"])?;
    same_grad("bcp mix_loss ∂/∂logits", &v, &l, &m["grad_logits"])
}

#[test]
fn bcp_mix_loss_matches_pytorch_and_swapped_regions_are_caught() {
    let g = golden();
    let f = SupervisedLoss::DiceCe;
    check_mix(&g, &move |l, a, b, m, w| {
        losses::mix_loss(f, l, a, b, m, w).0
    })
    .unwrap();
    let swapped = move |l: &Tensor, a: &Tensor, b: &Tensor, m: &Tensor, w: (f64, f64)| {
        losses::mix_loss(f, l, b, a, m, w).0
    };
    assert!(check_mix(&g, &swapped).is_err());
}

/// An optimiser under test: (initial params, grads per step, lr per step, weight decay) →
/// the parameters after each step.
type Optimiser = dyn Fn(&[f64], &[Vec<f64>], &[f64], f64) -> Vec<Vec<f64>>;

/// Checks an optimiser (params, grads per step, lr per step → trajectory) against
/// `torch.optim.Adam` with the poly schedule.
fn check_adam(g: &Value, imp: &Optimiser) -> Result<(), String> {
    let a = &g["adam"];
    let grads: Vec<Vec<f64>> = a["grads"].as_array().unwrap().iter().map(floats).collect();
    let (base, power, total) = (
        a["base_lr"].as_f64().unwrap(),
        a["power"].as_f64().unwrap(),
        a["total_steps"].as_u64().unwrap() as usize,
    );
    let lrs: Vec<f64> = (0..grads.len())
        .map(|i| dmnet::train::optim::poly_lr(base, i, total, power))
        .collect();
    for (i, (mine, want)) in lrs.iter().zip(floats(&a["lrs"])).enumerate() {
        if (mine - want).abs() > 1e-15 {
            return Err(format!("poly lr at step {i}: {mine} vs {want}"));
        }
    }
    let traj = imp(
        &floats(&a["p0"]),
        &grads,
        &lrs,
        a["weight_decay"].as_f64().unwrap(),
    );
    for (i, (got, want)) in traj
        .iter()
        .zip(a["trajectory"].as_array().unwrap())
        .enumerate()
    {
        let worst = got
            .iter()
            .zip(floats(want))
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max);
        // dmnet's Adam takes the gradients in float32 (the training dtype): 1e-6 is float32
        // rounding on steps of lr 1e-2; the 1.01 fault below moves them by ≈ 1e-4
        if worst > 1e-6 {
            return Err(format!(
                "Adam step {}: parameters differ from torch.optim.Adam by {worst:.3e}",
                i + 1
            ));
        }
    }
    Ok(())
}

/// dmnet's Adam on one variable of a var store, fed the given gradients.
fn dmnet_adam(
    p0: &[f64],
    grads: &[Vec<f64>],
    lrs: &[f64],
    wd: f64,
    lr_scale: f64,
) -> Vec<Vec<f64>> {
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let p = vs
        .root()
        .var_copy("p", &Tensor::from_slice(p0).to_kind(Kind::Double));
    let mut opt = dmnet::train::optim::Adam::new(&vs, &["p".to_string()], wd).unwrap();
    let mut out = Vec::new();
    for (g, lr) in grads.iter().zip(lrs) {
        let mut grad = p.grad();
        if !grad.defined() {
            // a backward through p gives it a gradient buffer of its own
            (&p * 0.0).sum(Kind::Double).backward();
            grad = p.grad();
        }
        tch::no_grad(|| grad.copy_(&Tensor::from_slice(g)));
        opt.step(lr * lr_scale, 1.0);
        out.push(Vec::<f64>::try_from(&p).unwrap());
    }
    out
}

#[test]
fn adam_and_the_poly_schedule_match_torch_and_a_scaled_step_is_caught() {
    let g = golden();
    check_adam(&g, &move |p, gs, lrs, wd| dmnet_adam(p, gs, lrs, wd, 1.0)).unwrap();
    let e = check_adam(&g, &move |p, gs, lrs, wd| dmnet_adam(p, gs, lrs, wd, 1.01)).unwrap_err();
    assert!(e.contains("Adam step 1"), "{e}");
}

fn check_ramp(g: &Value, imp: &dyn Fn(usize, usize, f64) -> f64) -> Result<(), String> {
    let r = &g["rampup"];
    let (total, fraction) = (
        r["total"].as_u64().unwrap() as usize,
        r["fraction"].as_f64().unwrap(),
    );
    for (s, want) in ints(&r["steps"]).into_iter().zip(floats(&r["values"])) {
        let got = imp(s as usize, total, fraction);
        if (got - want).abs() > 1e-12 {
            return Err(format!("ramp at step {s}: {got} vs SSL4MIS {want}"));
        }
    }
    Ok(())
}

#[test]
fn the_sigmoid_ramp_matches_ssl4mis_and_dmnets_loss_ramp_is_the_same() {
    let g = golden();
    check_ramp(&g, &losses::sigmoid_rampup).unwrap();
    // DMNet's λ2 ramp (config ramp_up) is the same function
    check_ramp(&g, &move |s, t, f| {
        dmnet::artifact::run_config::LossConfig {
            ramp_up: f,
            ..Default::default()
        }
        .ramp(s, t)
    })
    .unwrap();
    let e = check_ramp(&g, &move |s, t, f| losses::sigmoid_rampup(s + 1, t, f)).unwrap_err();
    assert!(e.contains("ramp at step"), "{e}");
}
