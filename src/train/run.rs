//! The training loop (paper §3, §4.2) and evaluation. Each step draws a labeled and (for
//! variants that use them) an unlabeled batch, runs both through the network in one forward
//! pass, updates the segmenter on L_S = L_dice + λ1·L_adv + λ2·L_semi and then the
//! discriminator on BCE(D(ŷ1),0) + BCE(D(ŷ2),0) + BCE(D(y),1), each with its own Adam.
use super::batch::{random_flip, to_tensors, TensorBatch};
use super::data::{self, DataPlan, SliceRef, StreamSpec};
use super::draw_curves;
use super::losses;
use super::optim::{poly_lr, Adam, LossScaler};
use crate::artifact::{
    read_metrics, read_state, write_metrics, CheckpointKind, DataSummary, EpochRecord, RunConfig,
    RunSummary, TrainConfig, TrainState,
};
use crate::metrics::{MetricsAccumulator, SegMetrics};
use crate::model::{Discriminator, DmNet, ModelConfig};
use crate::shard::schema::{file_metadata, shard_files, META_PREP_CONFIG};
use crate::{Error, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use tch::{nn, Device, Kind, Tensor};

/// What to run: shards, run directory and hyper-parameters.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// Shard folder from `dmnet-prep ingest`.
    pub shards: PathBuf,
    /// Run directory (created).
    pub out: PathBuf,
    /// Pipeline file the config came from (recorded only).
    pub pipeline: Option<PathBuf>,
    /// Hyper-parameters.
    pub train: TrainConfig,
    /// Continue the run in `out` from its last checkpoint (its `config.json` wins).
    pub resume: bool,
}

/// Derives an independent seed for (seed, epoch, purpose).
fn mix(seed: u64, epoch: usize, purpose: u64) -> u64 {
    let mut z = seed
        ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ purpose.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// What the first row of the shards says: channel names, class names, slice size, prep config.
type ShardProbe = (Vec<String>, Vec<String>, usize, Option<serde_json::Value>);

/// Channel and class names and the slice size, from the first row of the shards.
fn probe_shards(dir: &Path) -> Result<ShardProbe> {
    let files = shard_files(dir)?;
    let meta = file_metadata(&files[0])?;
    let prep = meta
        .get(META_PREP_CONFIG)
        .and_then(|s| serde_json::from_str(s).ok());
    let mut reader = crate::shard::schema::read_shards(dir)?;
    let first = reader
        .next()
        .transpose()?
        .and_then(|g| g.into_iter().next())
        .ok_or_else(|| Error::invalid(dir, "the shards hold no slices"))?;
    if first.height != first.width {
        return Err(Error::invalid(
            &files[0],
            format!(
                "slices are {}×{}, training needs square slices",
                first.height, first.width
            ),
        ));
    }
    Ok((
        first.channel_names,
        first.label_names,
        first.height as usize,
        prep,
    ))
}

/// The network, discriminator and optimisers of a run.
struct Model {
    vs: nn::VarStore,
    net: DmNet,
    disc: Option<Discriminator>,
    seg_opt: Adam,
    dis_opt: Option<Adam>,
}

impl Model {
    fn new(cfg: &ModelConfig, train: &TrainConfig, device: Device) -> Result<Model> {
        let vs = nn::VarStore::new(device);
        let net = DmNet::new(&vs.root(), cfg)?;
        let disc = cfg
            .variant
            .uses_adversarial()
            .then(|| Discriminator::new(&(vs.root() / "discriminator"), cfg));
        let seg_opt = Adam::new(
            &vs,
            &["encoder", "decoder1", "decoder2"],
            train.weight_decay,
        );
        let dis_opt = disc
            .as_ref()
            .map(|_| Adam::new(&vs, &["discriminator"], train.weight_decay));
        Ok(Model {
            vs,
            net,
            disc,
            seg_opt,
            dis_opt,
        })
    }
}

fn ckpt_dir(run: &Path) -> PathBuf {
    run.join("checkpoints")
}

fn save_checkpoint(run: &Path, kind: CheckpointKind, m: &Model, state: &TrainState) -> Result<()> {
    let dir = ckpt_dir(run);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let name = kind.name();
    // Write to temporary names, then rename: a kill never leaves a half-written checkpoint.
    let weights = dir.join(format!("{name}.safetensors"));
    let optim = dir.join(format!("{name}.optim.safetensors"));
    let json = dir.join(format!("{name}.json"));
    let tmp = |p: &Path| p.with_extension("tmp.safetensors");
    m.vs.save(tmp(&weights))?;
    let mut opt = m.seg_opt.state("segmenter");
    if let Some(d) = &m.dis_opt {
        opt.extend(d.state("discriminator"));
    }
    let cpu: Vec<(String, Tensor)> = opt
        .into_iter()
        .map(|(n, t)| (n, t.to_device(Device::Cpu)))
        .collect();
    Tensor::write_safetensors(&cpu, tmp(&optim))?;
    let tmp_json = json.with_extension("json.tmp");
    std::fs::write(
        &tmp_json,
        serde_json::to_string_pretty(state).expect("serialisable"),
    )
    .map_err(|e| Error::io(&tmp_json, e))?;
    for (from, to) in [
        (tmp(&weights), &weights),
        (tmp(&optim), &optim),
        (tmp_json, &json),
    ] {
        std::fs::rename(&from, to).map_err(|e| Error::io(&from, e))?;
    }
    Ok(())
}

fn load_weights(vs: &mut nn::VarStore, run: &Path, kind: CheckpointKind) -> Result<PathBuf> {
    let p = ckpt_dir(run).join(format!("{}.safetensors", kind.name()));
    if !p.exists() {
        return Err(Error::invalid(
            &p,
            "checkpoint not found (has the run completed an epoch?)",
        ));
    }
    vs.load(&p).map_err(|e| Error::invalid(&p, e.to_string()))?;
    Ok(p)
}

fn load_checkpoint(run: &Path, kind: CheckpointKind, m: &mut Model) -> Result<TrainState> {
    load_weights(&mut m.vs, run, kind)?;
    let dir = ckpt_dir(run);
    let optim = dir.join(format!("{}.optim.safetensors", kind.name()));
    let tensors: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(&optim)
        .map_err(|e| Error::invalid(&optim, e.to_string()))?
        .into_iter()
        .map(|(n, t)| (n, t.to_device(m.vs.device())))
        .collect();
    m.seg_opt.load_state("segmenter", &tensors)?;
    if let Some(d) = &mut m.dis_opt {
        d.load_state("discriminator", &tensors)?;
    }
    let json = dir.join(format!("{}.json", kind.name()));
    let text = std::fs::read_to_string(&json).map_err(|e| Error::io(&json, e))?;
    serde_json::from_str(&text).map_err(|e| Error::invalid(&json, e.to_string()))
}

/// Running means of the step losses.
#[derive(Default)]
struct LossMeans {
    n: usize,
    seg: f64,
    dice: f64,
    semi: f64,
    adv: f64,
    dis: f64,
}

impl LossMeans {
    fn add(&mut self, seg: f64, dice: f64, semi: f64, adv: f64, dis: f64) {
        self.n += 1;
        let k = 1.0 / self.n as f64;
        self.seg += (seg - self.seg) * k;
        self.dice += (dice - self.dice) * k;
        self.semi += (semi - self.semi) * k;
        self.adv += (adv - self.adv) * k;
        self.dis += (dis - self.dis) * k;
    }
}

/// Everything one epoch needs.
struct Ctx<'a> {
    cfg: &'a TrainConfig,
    files: Arc<Vec<PathBuf>>,
    plan: &'a DataPlan,
    val: &'a [SliceRef],
    device: Device,
    amp: bool,
    steps: usize,
    max_iter: usize,
}

fn value(t: &Tensor) -> f64 {
    t.double_value(&[])
}

/// One training step; returns (L_S, L_dice, L_semi, L_adv, L_dis).
fn step(
    m: &mut Model,
    ctx: &Ctx,
    lab: &TensorBatch,
    unl: Option<&TensorBatch>,
    lr: (f64, f64),
    scaler: &mut LossScaler,
) -> (f64, f64, f64, f64, f64) {
    let mc = &ctx.cfg.model;
    let k = mc.num_classes as i64;
    let nl = lab.images.size()[0];
    let x = match unl {
        Some(u) => Tensor::cat(&[&lab.images, &u.images], 0),
        None => lab.images.shallow_clone(),
    };
    let out = tch::autocast(ctx.amp, || m.net.forward_t(&x, true));
    let (l1, l2) = (
        out.logits1.to_kind(Kind::Float),
        out.logits2.to_kind(Kind::Float),
    );
    let (p1, p2) = (l1.softmax(1, Kind::Float), l2.softmax(1, Kind::Float));
    let onehot = losses::one_hot(lab.masks.as_ref().expect("labeled batch has masks"), k);
    let dice = losses::dice_loss(&p1.narrow(0, 0, nl), &onehot)
        + losses::dice_loss(&p2.narrow(0, 0, nl), &onehot);
    let semi = match unl {
        Some(u) => {
            let nu = u.images.size()[0];
            let (s1, s2) = if mc.variant.sharpens() {
                (
                    losses::sharpen_logits(&l1.narrow(0, nl, nu), mc.temperature),
                    losses::sharpen_logits(&l2.narrow(0, nl, nu), mc.temperature),
                )
            } else {
                (p1.narrow(0, nl, nu), p2.narrow(0, nl, nu))
            };
            if mc.semi_stop_gradient {
                losses::semi_loss_stop_gradient(&s1, &s2)
            } else {
                losses::semi_loss(&s1, &s2)
            }
        }
        None => Tensor::zeros([], (Kind::Float, ctx.device)),
    };
    let adv = match &m.disc {
        // One discriminator pass over both decoders' maps (D has no batch statistics).
        Some(d) => {
            let n = p1.size()[0];
            let z = d.forward(&Tensor::cat(&[&p1, &p2], 0));
            losses::bce_with_logits(&z.narrow(0, 0, n), 1.0)
                + losses::bce_with_logits(&z.narrow(0, n, n), 1.0)
        }
        None => Tensor::zeros([], (Kind::Float, ctx.device)),
    };
    let total = &dice + &adv * mc.lambda_adv + &semi * mc.lambda_semi;
    m.seg_opt.zero_grad();
    (&total * scaler.scale).backward();
    if !scaler.enabled() || scaler.update(m.seg_opt.grads_finite()) {
        m.seg_opt.step(lr.0, scaler.scale);
    }
    let mut dis_v = 0.0;
    if let (Some(d), Some(opt)) = (&m.disc, &mut m.dis_opt) {
        opt.zero_grad();
        let n = p1.size()[0];
        let z = d.forward(&Tensor::cat(
            &[p1.detach(), p2.detach(), onehot.shallow_clone()],
            0,
        ));
        let ld = losses::bce_with_logits(&z.narrow(0, 0, n), 0.0)
            + losses::bce_with_logits(&z.narrow(0, n, n), 0.0)
            + losses::bce_with_logits(&z.narrow(0, 2 * n, nl), 1.0);
        ld.backward();
        opt.step(lr.1, 1.0);
        dis_v = value(&ld);
    }
    (
        value(&total),
        value(&dice),
        value(&semi),
        value(&adv),
        dis_v,
    )
}

fn recv(rx: &crossbeam_channel::Receiver<Result<data::Batch>>, what: &str) -> Result<data::Batch> {
    rx.recv()
        .map_err(|_| Error::Torch(format!("the {what} stream ended early")))?
}

fn train_epoch(
    m: &mut Model,
    ctx: &Ctx,
    epoch: usize,
    state: &mut TrainState,
    scaler: &mut LossScaler,
) -> Result<(LossMeans, f64, f64, f64, f64)> {
    let cfg = ctx.cfg;
    let seed = state.seed;
    tch::manual_seed(mix(seed, epoch, 1) as i64);
    let spec = |batch, s| StreamSpec {
        batch,
        steps: Some(ctx.steps),
        seed: Some(s),
        drop_masks: false,
        window: cfg.shuffle_window,
        prefetch: cfg.prefetch,
    };
    let lab_rx = data::stream(
        ctx.files.clone(),
        ctx.plan.labeled.clone(),
        spec(cfg.labeled_batch, mix(seed, epoch, 2)),
    );
    let use_unl = cfg.model.variant.uses_unlabeled() && !ctx.plan.unlabeled.is_empty();
    let unl_rx = use_unl.then(|| {
        let mut s = spec(cfg.unlabeled_batch, mix(seed, epoch, 3));
        s.drop_masks = true;
        data::stream(ctx.files.clone(), ctx.plan.unlabeled.clone(), s)
    });
    let mut rng = ChaCha8Rng::seed_from_u64(mix(seed, epoch, 4));
    let bar = crate::cli::progress(ctx.steps as u64, &format!("epoch {epoch}"));
    let (mut means, mut slices) = (LossMeans::default(), 0usize);
    let (mut lr, mut lr_d) = (cfg.lr, cfg.lr_discriminator);
    let start = Instant::now();
    let (s, c) = (cfg.model.input_size, cfg.model.in_channels);
    for _ in 0..ctx.steps {
        lr = poly_lr(cfg.lr, state.global_step, ctx.max_iter, cfg.poly_power);
        lr_d = poly_lr(
            cfg.lr_discriminator,
            state.global_step,
            ctx.max_iter,
            cfg.poly_power,
        );
        let mut lab = to_tensors(&recv(&lab_rx, "labeled")?, s, c, ctx.device)?;
        random_flip(&mut lab, cfg.flip_prob, &mut rng);
        let unl = match &unl_rx {
            Some(rx) => {
                let mut u = to_tensors(&recv(rx, "unlabeled")?, s, c, ctx.device)?;
                random_flip(&mut u, cfg.flip_prob, &mut rng);
                Some(u)
            }
            None => None,
        };
        slices += lab.spacing.len() + unl.as_ref().map_or(0, |u| u.spacing.len());
        let l = step(m, ctx, &lab, unl.as_ref(), (lr, lr_d), scaler);
        means.add(l.0, l.1, l.2, l.3, l.4);
        state.global_step += 1;
        bar.inc(1);
        bar.set_message(format!(
            "L_S {:.4} dice {:.4} semi {:.4} adv {:.3} dis {:.3} {:.1} slices/s",
            means.seg,
            means.dice,
            means.semi,
            means.adv,
            means.dis,
            slices as f64 / start.elapsed().as_secs_f64().max(1e-9)
        ));
    }
    bar.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    Ok((means, slices as f64 / secs.max(1e-9), lr, lr_d, secs))
}

/// Metrics of `net` on the labeled slices `refs` (eval mode, average of the two decoders'
/// softmax, argmax).
pub fn evaluate_net(
    net: &DmNet,
    files: Arc<Vec<PathBuf>>,
    refs: &[SliceRef],
    batch: usize,
    device: Device,
) -> Result<SegMetrics> {
    let cfg = net.config();
    let rx = data::stream(
        files,
        refs.to_vec(),
        StreamSpec {
            batch,
            steps: None,
            seed: None,
            drop_masks: false,
            window: 1,
            prefetch: 2,
        },
    );
    let mut acc = MetricsAccumulator::new(cfg.num_classes);
    let s = cfg.input_size;
    let _g = tch::no_grad_guard();
    for b in rx {
        let b = to_tensors(&b?, s, cfg.in_channels, device)?;
        let pred = net
            .forward_t(&b.images, false)
            .probabilities()
            .argmax(1, false)
            .to_kind(Kind::Uint8)
            .to_device(Device::Cpu);
        let gt = b
            .masks
            .as_ref()
            .expect("evaluation slices are labeled")
            .to_kind(Kind::Uint8)
            .to_device(Device::Cpu);
        let n = b.spacing.len();
        let pv =
            Vec::<u8>::try_from(pred.flatten(0, -1)).map_err(|e| Error::Torch(e.to_string()))?;
        let gv = Vec::<u8>::try_from(gt.flatten(0, -1)).map_err(|e| Error::Torch(e.to_string()))?;
        for i in 0..n {
            let r = i * s * s..(i + 1) * s * s;
            acc.add(&pv[r.clone()], &gv[r], s, s, b.spacing[i]);
        }
    }
    Ok(acc.finish())
}

fn prepare_new(spec: &RunSpec) -> Result<RunConfig> {
    let mut train = spec.train.clone();
    let (channels, labels, shard_size, prep) = probe_shards(&spec.shards)?;
    train.model.in_channels = channels.len();
    train.model.num_classes = labels.len();
    train.model.input_size = train.size.unwrap_or(shard_size);
    if train.model.input_size != shard_size {
        tracing::info!(
            "slices are {shard_size}×{shard_size}; resizing them to {0}×{0}",
            train.model.input_size
        );
    }
    train.validate()?;
    let out = &spec.out;
    if out.join("config.json").exists() {
        return Err(Error::Config {
            path: out.clone(),
            msg:
                "run dir already holds a run; pass --resume to continue it or choose another --out"
                    .into(),
        });
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let manifest = spec.shards.join(crate::shard::folder::MANIFEST);
    if manifest.exists() {
        let to = out.join("prep-manifest.json");
        std::fs::copy(&manifest, &to).map_err(|e| Error::io(&to, e))?;
    }
    Ok(RunConfig {
        dmnet_version: crate::VERSION.to_string(),
        shards: spec.shards.clone(),
        pipeline: spec.pipeline.clone(),
        train,
        data: DataSummary {
            shard_size,
            channel_names: channels,
            label_names: labels,
            ..Default::default()
        },
        prep_config: prep,
    })
}

/// Trains a run (or resumes it) and returns its summary. Writes `config.json`,
/// `metrics.jsonl`, `curves.png`, `prep-manifest.json` and `checkpoints/` into `spec.out`.
pub fn run(spec: &RunSpec) -> Result<RunSummary> {
    let mut rc = if spec.resume {
        RunConfig::load(&spec.out)?
    } else {
        prepare_new(spec)?
    };
    let cfg = rc.train.clone();
    let device = crate::device::select(cfg.device)?;
    let amp = cfg.amp && device.is_cuda();
    if cfg.amp && !amp {
        tracing::warn!("--amp is ignored on CPU (mixed precision runs on CUDA only)");
    }
    let plan = DataPlan::build(&rc.shards, cfg.labeled_fraction, cfg.seed)?;
    let val = match data::split_refs(&rc.shards, "val") {
        Ok((_, v)) => v,
        Err(e) => {
            tracing::warn!("no validation: {e}");
            Vec::new()
        }
    };
    let mut steps = plan.labeled.len().div_ceil(cfg.labeled_batch);
    if let Some(cap) = cfg.max_steps_per_epoch {
        steps = steps.min(cap.max(1));
    }
    rc.data.labeled_total = plan.labeled_total;
    rc.data.labeled_used = plan.labeled.len();
    rc.data.unlabeled = if cfg.model.variant.uses_unlabeled() {
        plan.unlabeled.len()
    } else {
        0
    };
    rc.data.val = val.len();
    rc.data.steps_per_epoch = steps;
    rc.save(&spec.out)?;
    tch::manual_seed(cfg.seed as i64);
    let mut m = Model::new(&cfg.model, &cfg, device)?;
    let mut scaler = LossScaler::new(amp);
    let mut state = TrainState {
        epoch: 0,
        global_step: 0,
        best_miou: None,
        best_epoch: None,
        seed: cfg.seed,
        loss_scale: scaler.scale,
    };
    let mut records = Vec::new();
    if spec.resume && ckpt_dir(&spec.out).join("last.json").exists() {
        state = load_checkpoint(&spec.out, CheckpointKind::Last, &mut m)?;
        scaler.scale = state.loss_scale;
        records = read_metrics(&spec.out)?;
        records.retain(|r| r.epoch <= state.epoch);
        tracing::info!(
            "resuming {} after epoch {} (step {})",
            spec.out.display(),
            state.epoch,
            state.global_step
        );
    } else if spec.resume {
        tracing::warn!(
            "{}: no checkpoint yet (killed during epoch 1); starting at epoch 1",
            spec.out.display()
        );
    }
    write_metrics(&spec.out, &records)?;
    let ctx = Ctx {
        cfg: &cfg,
        files: plan.files.clone(),
        plan: &plan,
        val: &val,
        device,
        amp,
        steps,
        max_iter: steps * cfg.epochs,
    };
    tracing::info!(
        "training {} ({}, {} labeled of {}, {} unlabeled, {} val slices, {} steps/epoch) on {device:?}",
        cfg.model.variant.name(), cfg.model.encoder.name(), plan.labeled.len(), plan.labeled_total, rc.data.unlabeled, val.len(), steps
    );
    for epoch in state.epoch + 1..=cfg.epochs {
        let start = Instant::now();
        let (means, sps, lr, lr_d, train_secs) =
            train_epoch(&mut m, &ctx, epoch, &mut state, &mut scaler)?;
        let metrics = if ctx.val.is_empty() {
            None
        } else {
            Some(evaluate_net(
                &m.net,
                ctx.files.clone(),
                ctx.val,
                cfg.eval_batch,
                device,
            )?)
        };
        state.epoch = epoch;
        state.loss_scale = scaler.scale;
        let miou = metrics.as_ref().map(|v| v.miou);
        let better = match (miou, state.best_miou) {
            (Some(v), Some(b)) => v > b,
            (Some(_), None) => true,
            (None, _) => true,
        };
        if better {
            state.best_miou = miou;
            state.best_epoch = Some(epoch);
            save_checkpoint(&spec.out, CheckpointKind::Best, &m, &state)?;
        }
        save_checkpoint(&spec.out, CheckpointKind::Last, &m, &state)?;
        let rec = EpochRecord {
            epoch,
            lr,
            lr_discriminator: lr_d,
            loss_seg: means.seg,
            loss_dice: means.dice,
            loss_semi: means.semi,
            loss_adv: means.adv,
            loss_dis: means.dis,
            val: metrics,
            steps,
            slices_per_s: sps,
            train_seconds: train_secs,
            seconds: start.elapsed().as_secs_f64(),
        };
        tracing::info!(
            "epoch {epoch}/{}: L_S {:.4} (dice {:.4}, semi {:.4}, adv {:.3}), L_dis {:.3}, val mIoU {}, {:.1} slices/s",
            cfg.epochs, rec.loss_seg, rec.loss_dice, rec.loss_semi, rec.loss_adv, rec.loss_dis,
            miou.map_or("-".into(), |v| format!("{v:.4}")), sps
        );
        records.push(rec);
        write_metrics(&spec.out, &records)?;
        if let Err(e) = draw_curves(&records, &spec.out.join("curves.png")) {
            tracing::warn!("curves.png not drawn: {e}");
        }
    }
    Ok(RunSummary {
        run_dir: spec.out.clone(),
        epochs: state.epoch,
        best_epoch: state.best_epoch,
        best_miou: state.best_miou,
        last: records.last().cloned(),
    })
}

/// The result of [`evaluate`] (`RUN/eval-<split>-<checkpoint>.json`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct EvalReport {
    /// Split evaluated.
    pub split: String,
    /// Checkpoint evaluated.
    pub checkpoint: CheckpointKind,
    /// Epoch the checkpoint was saved at.
    pub epoch: usize,
    /// Shard folder evaluated on.
    pub shards: PathBuf,
    /// The metrics.
    pub metrics: SegMetrics,
}

/// Evaluates a run's checkpoint on the labeled slices of `split` of `shards` and writes
/// `RUN/eval-<split>-<checkpoint>.json` (and `RUN/eval-<split>.json` for the best checkpoint).
pub fn evaluate(
    run_dir: &Path,
    shards: &Path,
    split: &str,
    kind: CheckpointKind,
    device: crate::cli::DeviceChoice,
) -> Result<EvalReport> {
    let rc = RunConfig::load(run_dir)?;
    let device = crate::device::select(device)?;
    let mut vs = nn::VarStore::new(device);
    let net = DmNet::new(&vs.root(), &rc.train.model)?;
    load_weights(&mut vs, run_dir, kind)?;
    let state = read_state(run_dir, kind)?;
    let (files, refs) = data::split_refs(shards, split)?;
    let metrics = evaluate_net(&net, files, &refs, rc.train.eval_batch, device)?;
    let report = EvalReport {
        split: split.into(),
        checkpoint: kind,
        epoch: state.epoch,
        shards: shards.into(),
        metrics,
    };
    let text = serde_json::to_string_pretty(&report).expect("serialisable") + "\n";
    let mut outs = vec![run_dir.join(format!("eval-{split}-{}.json", kind.name()))];
    if kind == CheckpointKind::Best {
        outs.push(run_dir.join(format!("eval-{split}.json")));
    }
    for p in outs {
        std::fs::write(&p, &text).map_err(|e| Error::io(&p, e))?;
    }
    Ok(report)
}
