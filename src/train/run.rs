//! The training loop (paper §3, §4.2): rounds of `eval_every` steps ([`super::step`]), each
//! followed by validation and the best/last checkpoints. The length is a number of optimiser
//! steps (`--steps`, or `--epochs` of the labeled slices); the poly schedule and the ramp-up
//! follow it. A resume continues from the last checkpoint, bit-identically: every round's
//! shuffles and flips derive from (seed, round).
use super::batch::{augment, to_tensors, TensorBatch};
use super::data::{self, DataPlan, SliceRef, StreamSpec};
use super::draw_curves;
use super::eval::{evaluate_net, Evaluation};
use super::methods::{self, Learner, LossMeans, StepInput, StepLosses, StepPoint};
use super::optim::{poly_lr, LossScaler};
use crate::artifact::{
    read_metrics, write_metrics, CheckpointKind, DataSummary, EpochRecord, MetricsLine, RunConfig,
    RunDir, RunSummary, Schedule, TrainConfig, TrainState,
};
use crate::shard::{ShardIndex, Split};
use crate::{Error, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use tch::Device;

/// How much longer a resumed run should be (`--resume` with `--steps` or `--epochs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extend {
    /// A new total length in optimiser steps.
    Steps(usize),
    /// A new total length in labeled epochs.
    Epochs(usize),
}

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
    /// With `resume`: a new, longer total length (the poly schedule is recomputed over it).
    pub extend: Option<Extend>,
}

/// Derives an independent seed for (seed, round, purpose).
fn mix(seed: u64, round: usize, purpose: u64) -> u64 {
    let mut z = seed
        ^ (round as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ purpose.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// What the first row of the shards says: channel names, class names, slice size, prep config.
struct ShardProbe {
    channels: Vec<String>,
    labels: Vec<String>,
    size: usize,
    prep: Option<serde_json::Value>,
}

/// Channel and class names and the slice size, from the first row of the shards.
fn probe_shards(index: &ShardIndex) -> Result<ShardProbe> {
    let at = index
        .rows
        .first()
        .ok_or_else(|| Error::invalid(&index.dir, "the shards hold no slices"))?
        .at;
    let part = &index.parts[at.file];
    let prep = index
        .prep_config()
        .and_then(|s| serde_json::from_str(&s).ok());
    let first = part
        .read_row_group(at.row_group)?
        .into_iter()
        .nth(at.row)
        .ok_or_else(|| Error::invalid(&part.path, "the index names a row the file lacks"))?;
    if first.height != first.width {
        return Err(Error::invalid(
            &part.path,
            format!(
                "slices are {}×{}, training needs square slices",
                first.height, first.width
            ),
        ));
    }
    Ok(ShardProbe {
        channels: first.channel_names,
        labels: first.label_names,
        size: first.height as usize,
        prep,
    })
}

/// Everything the rounds of a run share.
struct Ctx<'a> {
    cfg: &'a TrainConfig,
    files: Arc<Vec<PathBuf>>,
    plan: &'a DataPlan,
    val: &'a [SliceRef],
    /// The val split's cases (for selection on per-case Dice).
    val_cases: super::eval::CaseSpec,
    device: Device,
    amp: bool,
    schedule: Schedule,
}

fn recv(rx: &crossbeam_channel::Receiver<Result<data::Batch>>, what: &str) -> Result<data::Batch> {
    rx.recv()
        .map_err(|_| Error::Torch(format!("the {what} stream ended early")))?
}

/// What one round of training measured.
struct RoundStats {
    losses: StepLosses,
    point: StepPoint,
    steps: usize,
    slices_per_s: f64,
    secs: f64,
}

/// A seeded stream of `steps` batches over `refs`; labeled and unlabeled streams and their
/// flips use separate seeds, so a variant without unlabeled data sees the same labeled batches.
fn batches(
    ctx: &Ctx,
    refs: &[SliceRef],
    batch: usize,
    steps: usize,
    seed: u64,
    unlabeled: bool,
) -> crossbeam_channel::Receiver<Result<data::Batch>> {
    let spec = StreamSpec {
        batch,
        steps: Some(steps),
        seed: Some(seed),
        drop_masks: unlabeled,
        window: ctx.cfg.shuffle_window,
        prefetch: ctx.cfg.prefetch,
    };
    data::stream(ctx.files.clone(), refs.to_vec(), spec)
}

fn next_batch(
    ctx: &Ctx,
    rx: &crossbeam_channel::Receiver<Result<data::Batch>>,
    what: &str,
    rng: &mut ChaCha8Rng,
) -> Result<TensorBatch> {
    let (s, c) = (ctx.cfg.model.input_size, ctx.cfg.model.in_channels);
    let mut b = to_tensors(&recv(rx, what)?, s, c, ctx.device)?;
    augment(&mut b, ctx.cfg.augment, ctx.cfg.flip_prob, rng);
    Ok(b)
}

fn train_round(
    t: &mut dyn Learner,
    ctx: &Ctx,
    round: usize,
    state: &mut TrainState,
    scaler: &mut LossScaler,
) -> Result<RoundStats> {
    let cfg = ctx.cfg;
    let (seed, n) = (state.seed, ctx.schedule.steps_in(round));
    let (lab_rx, unl_rx) = round_streams(ctx, round, seed, n);
    let mut rng_l = ChaCha8Rng::seed_from_u64(mix(seed, round, 4));
    let mut rng_u = ChaCha8Rng::seed_from_u64(mix(seed, round, 5));
    let bar = crate::cli::progress(n as u64, &format!("round {round}"));
    let (mut means, mut slices, start) = (LossMeans::default(), 0usize, Instant::now());
    let mut point = point_at(cfg, state.global_step, &ctx.schedule);
    for _ in 0..n {
        point = point_at(cfg, state.global_step, &ctx.schedule);
        let lab = next_batch(ctx, &lab_rx, "labeled", &mut rng_l)?;
        let unl = match &unl_rx {
            Some(rx) => Some(next_batch(ctx, rx, "unlabeled", &mut rng_u)?),
            None => None,
        };
        slices += lab.spacing.len() + unl.as_ref().map_or(0, |u| u.spacing.len());
        let input = StepInput {
            lab: &lab,
            unl: unl.as_ref(),
            at: point,
            amp: ctx.amp,
        };
        let l = t.step(input, scaler)?;
        means.add(&l);
        state.global_step += 1;
        bar.inc(1);
        let m = &means.mean;
        bar.set_message(format!(
            "loss {:.4} supervised {:.4} unlabeled {:.4} adv {:.3} dis {:.3}",
            m.seg, m.dice, m.semi, m.adv, m.dis
        ));
    }
    bar.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    Ok(RoundStats {
        losses: means.mean,
        point,
        steps: n,
        slices_per_s: slices as f64 / secs.max(1e-9),
        secs,
    })
}

/// The labeled and (for variants that use them) unlabeled batch streams of one round.
type Streams = (
    crossbeam_channel::Receiver<Result<data::Batch>>,
    Option<crossbeam_channel::Receiver<Result<data::Batch>>>,
);

fn round_streams(ctx: &Ctx, round: usize, seed: u64, n: usize) -> Streams {
    let (cfg, plan) = (ctx.cfg, ctx.plan);
    let lab = batches(
        ctx,
        &plan.labeled,
        cfg.labeled_batch,
        n,
        mix(seed, round, 2),
        false,
    );
    let use_unl = cfg.uses_unlabeled() && !plan.unlabeled.is_empty();
    let unl = use_unl.then(|| {
        let seed = mix(seed, round, 3);
        batches(ctx, &plan.unlabeled, cfg.unlabeled_batch, n, seed, true)
    });
    (lab, unl)
}

/// Learning rates (poly schedule over the run's length) and ramp-up weight (over the length the
/// run started with) at global step `g`.
fn point_at(cfg: &TrainConfig, g: usize, schedule: &Schedule) -> StepPoint {
    let total = schedule.total_steps;
    StepPoint {
        lr: poly_lr(cfg.lr, g, total, cfg.poly_power),
        lr_discriminator: poly_lr(cfg.lr_discriminator, g, total, cfg.poly_power),
        ramp: cfg.loss.ramp(g, schedule.ramp_total()),
        global_step: g,
        total_steps: total,
        ramp_steps: schedule.ramp_total(),
    }
}

/// The config of a new run, checked against the shards; nothing is written yet.
fn new_config(spec: &RunSpec, index: &ShardIndex) -> Result<RunConfig> {
    let mut train = spec.train.clone();
    let probe = probe_shards(index)?;
    if let Some(s) = train.size.filter(|&s| s != probe.size) {
        return Err(Error::Config {
            path: spec.shards.clone(),
            msg: format!(
                "the shards hold {0}×{0} slices and training was asked for {s}×{s}; prep is the \
                 only resampler: re-ingest with `dmnet-prep ingest … --size {s}`",
                probe.size
            ),
        });
    }
    train.model.in_channels = probe.channels.len();
    train.model.num_classes = probe.labels.len();
    train.model.input_size = probe.size;
    train.model.decoders = train.method.decoders();
    train.validate()?;
    if RunDir::new(&spec.out).config().exists() {
        return Err(Error::Config {
            path: spec.out.clone(),
            msg:
                "run dir already holds a run; pass --resume to continue it or choose another --out"
                    .into(),
        });
    }
    Ok(RunConfig {
        dmnet_version: crate::VERSION.to_string(),
        shards: spec.shards.clone(),
        pipeline: spec.pipeline.clone(),
        train,
        data: DataSummary {
            shard_size: probe.size,
            channel_names: probe.channels,
            label_names: probe.labels,
            shards_fingerprint: index.fingerprint.clone(),
            shards_rows: index.rows.len(),
            ..Default::default()
        },
        prep_config: probe.prep,
    })
}

/// Creates the run dir of a new run (after every check passed) with a copy of the shards'
/// manifest.
fn create_run_dir(spec: &RunSpec) -> Result<()> {
    let out = &spec.out;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let manifest = spec.shards.join(crate::shard::folder::MANIFEST);
    if manifest.exists() {
        let to = out.join("prep-manifest.json");
        std::fs::copy(&manifest, &to).map_err(|e| Error::io(&to, e))?;
    }
    Ok(())
}

/// The run and its shards for `--resume`: the run's own shard folder (a different `--shards`
/// is refused), unchanged since the run started (same parts, same bytes).
fn resume_config(spec: &RunSpec) -> Result<(RunConfig, ShardIndex)> {
    let rc = RunConfig::load(&spec.out)?;
    let same = |a: &std::path::Path, b: &std::path::Path| {
        a == b
            || a.canonicalize()
                .ok()
                .zip(b.canonicalize().ok())
                .is_some_and(|(x, y)| x == y)
    };
    if !spec.shards.as_os_str().is_empty() && !same(&spec.shards, &rc.shards) {
        return Err(Error::Config {
            path: spec.out.clone(),
            msg: format!(
                "--resume continues the run on its own shards ({}), not {}: drop --shards, or start a new run",
                rc.shards.display(),
                spec.shards.display()
            ),
        });
    }
    let index = ShardIndex::open(&rc.shards)?;
    let was = &rc.data.shards_fingerprint;
    if !was.is_empty() && *was != index.fingerprint {
        return Err(Error::Config {
            path: rc.shards.clone(),
            msg: format!(
                "the shard folder changed since this run started ({} rows now, {} then; its parts' hashes differ): \
                 resuming would train on other data; start a new run",
                index.rows.len(),
                rc.data.shards_rows
            ),
        });
    }
    Ok((rc, index))
}

/// Sets libtorch's CPU threads for `deterministic` runs (one thread: the same seed then gives
/// the same numbers in every process). On CUDA it can only turn cuDNN's autotuner off:
/// libtorch's deterministic-algorithms switch is not exposed by tch 0.24, so CUDA runs may
/// still differ in the last bits between processes (said in the log and the README).
fn set_determinism(cfg: &TrainConfig, device: Device) {
    if cfg.deterministic {
        tch::set_num_threads(1);
        if device.is_cuda() {
            tch::Cuda::cudnn_set_benchmark(false);
            tracing::warn!(
                "--deterministic on CUDA turns cuDNN's autotuner off, but libtorch's deterministic-algorithms \
                 switch is not reachable from tch 0.24: CUDA runs may still differ slightly between processes \
                 (CPU runs are bit-identical)"
            );
        }
    }
}

/// The schedule of a run: fixed at its start, or extended on resume.
fn schedule_of(spec: &RunSpec, rc: &RunConfig, labeled: usize) -> Result<Schedule> {
    let saved = rc.data.schedule;
    if !spec.resume || saved.total_steps == 0 {
        return Ok(rc.train.schedule(labeled));
    }
    let total = match spec.extend {
        None => return Ok(saved),
        Some(Extend::Steps(n)) => n,
        Some(Extend::Epochs(e)) => {
            let mut t = rc.train.clone();
            (t.epochs, t.steps) = (e, None);
            t.schedule(labeled).total_steps
        }
    };
    if total < saved.total_steps {
        return Err(Error::Config {
            path: spec.out.clone(),
            msg: format!(
                "the run is {} steps long; --resume can extend it, not shorten it (asked for {total})",
                saved.total_steps
            ),
        });
    }
    if total > saved.total_steps && rc.train.method.staged() {
        return Err(Error::Config {
            path: spec.out.clone(),
            msg: format!(
                "a {} run cannot be extended: its stages are fractions of the run length, so {} → {total} steps would move a stage boundary behind steps already trained (docs/methods.md); start a new run with --steps {total}",
                rc.train.method.name(),
                saved.total_steps
            ),
        });
    }
    if total > saved.total_steps {
        tracing::info!(
            "extending the run from {} to {total} steps; the poly schedule is recomputed over the new length, the ramp-ups keep their length (the unlabeled weights stay where they were)",
            saved.total_steps
        );
    }
    Ok(Schedule {
        total_steps: total,
        ramp_steps: saved.ramp_total(),
        ..saved
    })
}

/// Trains a run (or resumes it) and returns its summary. Writes `config.json`,
/// `metrics.jsonl`, `curves.png`, `prep-manifest.json` and `checkpoints/` into `spec.out`.
/// Every check (shards, config, device, data plan) passes before the run dir is created, so a
/// failed start leaves nothing behind.
pub fn run(spec: &RunSpec) -> Result<RunSummary> {
    let dir = RunDir::new(&spec.out);
    // the shard folder is opened (hashes verified, footers parsed) once per run
    let (mut rc, index) = if spec.resume {
        resume_config(spec)?
    } else {
        let index = ShardIndex::open(&spec.shards)?;
        (new_config(spec, &index)?, index)
    };
    let cfg = rc.train.clone();
    let device = crate::device::select(cfg.device)?;
    set_determinism(&cfg, device);
    let amp = cfg.amp && device.is_cuda();
    if cfg.amp && !amp {
        tracing::warn!("--amp is ignored on CPU (mixed precision runs on CUDA only)");
    }
    let plan = DataPlan::from_index(
        &index,
        cfg.labeled_patients,
        cfg.labeled_slice_fraction.get(),
        cfg.seed,
    )?;
    let val = match data::split_refs_of(&index, Split::Val) {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!("no validation ({e}): the \"best\" checkpoint will be the last round's");
            Vec::new()
        }
    };
    let schedule = schedule_of(spec, &rc, plan.labeled.len())?;
    rc.data.labeled_total = plan.labeled_total;
    rc.data.labeled_used = plan.labeled.len();
    rc.data.unlabeled = if cfg.uses_unlabeled() {
        plan.unlabeled.len()
    } else {
        0
    };
    rc.data.val = val.len();
    rc.data.schedule = schedule;
    if !spec.resume {
        create_run_dir(spec)?;
    }
    rc.save(&spec.out)?;
    let mut t = methods::build(&cfg, device)?;
    let mut scaler = LossScaler::new(amp);
    let (mut state, lines) = restore(spec, &dir, t.as_mut(), &mut scaler, cfg.seed)?;
    if spec.resume && state.global_step >= schedule.total_steps {
        tracing::info!(
            "{} is already finished ({} of {} steps): nothing to train; pass --steps N (N > {}) to extend it",
            spec.out.display(),
            state.global_step,
            schedule.total_steps,
            schedule.total_steps
        );
    }
    let mut val_cases = super::eval::CaseSpec::of(&index, Split::Val, cfg.convention);
    val_cases.distances = false;
    let ctx = Ctx {
        cfg: &cfg,
        files: plan.files.clone(),
        plan: &plan,
        val: &val,
        val_cases,
        device,
        amp,
        schedule,
    };
    tracing::info!(
        "training {} ({}, {} labeled of {}, {} unlabeled, {} val slices; {} steps, validation every {}) on {}",
        cfg.method_name(), cfg.model.encoder.name(), plan.labeled.len(), plan.labeled_total,
        rc.data.unlabeled, val.len(), schedule.total_steps, schedule.eval_every,
        crate::device::describe(device)
    );
    let lines = rounds(t.as_mut(), &ctx, &dir, &mut state, &mut scaler, lines)?;
    Ok(RunSummary {
        run_dir: spec.out.clone(),
        epochs: state.epoch,
        best_epoch: state.best_epoch,
        best_score: state.best_score,
        select_on: cfg.select_on,
        last: lines.last().map(|l| l.record.clone()),
        validated: !val.is_empty(),
    })
}

/// The state and `metrics.jsonl` lines to start from: the last checkpoint on resume (its
/// lines kept byte for byte), else a fresh start.
fn restore(
    spec: &RunSpec,
    dir: &RunDir,
    t: &mut dyn Learner,
    scaler: &mut LossScaler,
    seed: u64,
) -> Result<(TrainState, Vec<MetricsLine>)> {
    let fresh = TrainState {
        epoch: 0,
        global_step: 0,
        best_score: None,
        best_epoch: None,
        seed,
        loss_scale: scaler.scale,
    };
    if !spec.resume {
        write_metrics(&spec.out, &[])?;
        return Ok((fresh, Vec::new()));
    }
    if dir.checkpoint(CheckpointKind::Last).is_err() {
        tracing::warn!(
            "{}: no checkpoint yet (killed during round 1); starting at round 1",
            spec.out.display()
        );
        write_metrics(&spec.out, &[])?;
        return Ok((fresh, Vec::new()));
    }
    let state = t.nets_mut().load(dir, CheckpointKind::Last)?;
    scaler.scale = state.loss_scale;
    let mut lines = read_metrics(&spec.out)?;
    lines.retain(|l| l.record.epoch <= state.epoch);
    write_metrics(&spec.out, &lines)?;
    tracing::info!(
        "resuming {} after round {} (step {})",
        spec.out.display(),
        state.epoch,
        state.global_step
    );
    Ok((state, lines))
}

/// Runs the remaining rounds: train, validate, checkpoint, record.
fn rounds(
    t: &mut dyn Learner,
    ctx: &Ctx,
    dir: &RunDir,
    state: &mut TrainState,
    scaler: &mut LossScaler,
    mut lines: Vec<MetricsLine>,
) -> Result<Vec<MetricsLine>> {
    let total_rounds = ctx.schedule.rounds();
    for round in state.epoch + 1..=total_rounds {
        let start = Instant::now();
        let stats = train_round(t, ctx, round, state, scaler)?;
        let ev = validate(t, ctx)?;
        state.epoch = round;
        state.loss_scale = scaler.scale;
        let miou = ev.as_ref().map(|e| e.metrics.miou);
        let l = &stats.losses;
        tracing::info!(
            "round {round}/{total_rounds} (step {}/{}): loss {:.4} (supervised {:.4}{}, unlabeled {:.4}, adv {:.3}), L_dis {:.3}, val mIoU {}, {:.1} slices/s",
            state.global_step, ctx.schedule.total_steps, l.seg, l.dice,
            if ctx.cfg.method == crate::artifact::Method::Dmnet { " = sum over the 2 decoders" } else { "" },
            l.semi, l.adv, l.dis,
            miou.map_or("-".into(), |v| format!("{v:.4}")), stats.slices_per_s
        );
        let score = match ctx.cfg.select_on {
            crate::artifact::Selection::Miou => miou,
            crate::artifact::Selection::CaseDice => ev
                .as_ref()
                .and_then(|e| e.cases.as_ref())
                .and_then(|c| c.dice),
        };
        // the record first: a kill between the two leaves a record that a resume drops
        // (records after the checkpoint's round), never a checkpoint without its record
        lines.push(MetricsLine::new(record(
            state,
            &stats,
            ev,
            start.elapsed().as_secs_f64(),
        )));
        write_metrics(dir.path(), &lines)?;
        let selectable = state.global_step >= t.selects_from(ctx.schedule.total_steps);
        if selectable && state.best_score.zip(score).is_none_or(|(b, v)| v > b) {
            state.best_score = score;
            state.best_epoch = Some(round);
            t.nets().save(dir, CheckpointKind::Best, state)?;
        }
        t.nets().save(dir, CheckpointKind::Last, state)?;
        let records: Vec<EpochRecord> = lines.iter().map(|l| l.record.clone()).collect();
        if let Err(e) = draw_curves(&records, &dir.path().join("curves.png")) {
            tracing::warn!("curves.png not drawn: {e}");
        }
    }
    Ok(lines)
}

/// The validation of a round (none without validation slices).
fn validate(t: &dyn Learner, ctx: &Ctx) -> Result<Option<Evaluation>> {
    if ctx.val.is_empty() {
        return Ok(None);
    }
    let data = (ctx.files.clone(), ctx.val);
    // per-case Dice only when the run selects on it (overlap only: no distances)
    let cases =
        (ctx.cfg.select_on == crate::artifact::Selection::CaseDice).then(|| ctx.val_cases.clone());
    let (cfg, dev) = (ctx.cfg, ctx.device);
    evaluate_net(t.net(), data, cfg.eval_batch, dev, cases, &[]).map(Some)
}

/// The `metrics.jsonl` line of the round `state` just finished.
fn record(
    state: &TrainState,
    stats: &RoundStats,
    ev: Option<Evaluation>,
    secs: f64,
) -> EpochRecord {
    let l = &stats.losses;
    EpochRecord {
        epoch: state.epoch,
        step: state.global_step,
        lr: stats.point.lr,
        lr_discriminator: stats.point.lr_discriminator,
        loss_seg: l.seg,
        loss_dice: l.dice,
        loss_semi: l.semi,
        loss_adv: l.adv,
        loss_adv_unlabeled: l.adv_unlabeled,
        ramp: stats.point.ramp,
        loss_dis: l.dis,
        val: ev.as_ref().map(|e| e.metrics.clone()),
        val_case_dice: ev
            .as_ref()
            .and_then(|e| e.cases.as_ref())
            .and_then(|c| c.dice),
        val_diagnostics: ev.map(|e| e.diagnostics),
        steps: stats.steps,
        slices_per_s: stats.slices_per_s,
        train_seconds: stats.secs,
        seconds: secs,
    }
}
