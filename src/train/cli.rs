//! The `dmnet-train` command line: training flags, `eval`, `grid` and `check-device`, and how
//! flags merge into a [`TrainConfig`] (a pipeline's `[train]` table, then each given flag on
//! top). The binary `src/bin/dmnet-train.rs` only parses and calls [`run`].
use super::grid::{read_plan, Arm, GridPlan};
use super::grid_run::GridSpec;
use super::{Extend, RunSpec};
use crate::artifact::{CheckpointKind, Fraction, SemiLoss, TrainConfig, UnlabeledPass};
use crate::cli::{DeviceChoice, LogArgs};
use crate::model::{Encoder, Variant};
use crate::shard::Split;
use crate::{Error, Result};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Labeled fractions of a grid when neither the pipeline's arm nor `--fractions` gives them.
const DEFAULT_GRID_FRACTIONS: [f64; 2] = [0.1, 0.3];

/// Examples, one command per paragraph; no line is wider than 78 columns, so clap never wraps
/// them inside a command (tested: they paste into a shell as written).
const EXAMPLES: &str = "\
Examples:
  # DMNet with 10 % of the labeled training slices
  dmnet-train --shards shards/la --out runs/la-dmnet-10 \\
      --pipeline pipelines/la2018.toml --labeled-fraction 10%

  # the supervised variant, 2000 steps, a small encoder
  dmnet-train --shards shards/la --out runs/la-sup --variant supervised \\
      --encoder resnet18 --steps 2000

  # continue after an interruption (or extend with --steps N)
  dmnet-train --out runs/la-dmnet-10 --resume

  # per-case metrics on the source grid of the test cases
  dmnet-train eval --run runs/la-dmnet-10 --shards shards/la --split test

  # the committed LA2018 grid, two runs at a time
  dmnet-train grid --shards grid/shards --out grid/runs \\
      --pipeline pipelines/la2018-cpu.toml --jobs 2

  # which device --device auto picks, and why
  dmnet-train check-device --device auto";

/// Train DMNet (shared encoder, U-Net + DeepLab v3+ decoders, FCN discriminator) with libtorch.
#[derive(Parser)]
#[command(
    version,
    about,
    args_conflicts_with_subcommands = true,
    max_term_width = 100,
    after_help = EXAMPLES
)]
pub struct Cli {
    #[command(flatten)]
    log: LogArgs,
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    train: TrainArgs,
}

#[derive(Args)]
struct TrainArgs {
    /// Shard folder written by `dmnet-prep ingest`.
    #[arg(long)]
    shards: Option<PathBuf>,
    /// Run directory to create (or to continue with --resume).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Pipeline file whose [train] table gives the defaults (flags override it).
    #[arg(long)]
    pipeline: Option<PathBuf>,
    /// Training method: dmnet (default), supervised-single, mean-teacher, cps, bcp
    /// (docs/methods.md: each one's settings and the file it follows).
    #[arg(long, value_enum)]
    method: Option<crate::artifact::Method>,
    /// DMNet's variant (the paper's ablations; method dmnet only).
    #[arg(long, value_enum)]
    variant: Option<Variant>,
    /// Keep the labels of the first N training patients only (SSL4MIS list order for
    /// SSL4MIS folders, the seeded order otherwise); the others' slices train as unlabeled.
    #[arg(long)]
    labeled_patients: Option<usize>,
    /// The supervised loss of every method: dice or dice-ce.
    #[arg(long, value_enum)]
    supervised_loss: Option<crate::artifact::SupervisedLoss>,
    /// Select the best checkpoint on val miou (default) or val case-dice (mean per-case Dice).
    #[arg(long, value_enum)]
    select_on: Option<crate::artifact::Selection>,
    /// Augmentation of the training slices: flip (the paper's horizontal flip) or ssl4mis
    /// (SSL4MIS's RandomGenerator: 90° rotations and flips, or a rotation within ±20°).
    #[arg(long, value_enum)]
    augment: Option<crate::artifact::Augment>,
    /// Fraction of the training labeled slices used with labels: 0.1 or 10%.
    #[arg(long)]
    labeled_fraction: Option<Fraction>,
    /// Run length in epochs of the labeled slices (default 150; --steps wins).
    #[arg(long)]
    epochs: Option<usize>,
    /// Run length in optimiser steps, independent of the labeled fraction. With --resume:
    /// extend a run to this many steps.
    #[arg(long)]
    steps: Option<usize>,
    /// Steps between validations and checkpoints (default: one labeled epoch, at least 1/50
    /// of the run).
    #[arg(long)]
    eval_every: Option<usize>,
    /// Encoder depth.
    #[arg(long, value_enum)]
    encoder: Option<Encoder>,
    /// Width multiplier of all layers (1 = the paper's network).
    #[arg(long)]
    width: Option<f64>,
    /// Slice size S the shards must have (prep is the only resampler; default: theirs).
    #[arg(long)]
    size: Option<usize>,
    /// Labeled slices per step.
    #[arg(long)]
    labeled_batch: Option<usize>,
    /// Unlabeled slices per step.
    #[arg(long)]
    unlabeled_batch: Option<usize>,
    /// The form of L_semi.
    #[arg(long, value_enum)]
    semi_loss: Option<SemiLoss>,
    /// λ2, the weight of L_semi.
    #[arg(long)]
    lambda_semi: Option<f64>,
    /// λ1, the weight of the adversarial loss on labeled batches.
    #[arg(long)]
    lambda_adv: Option<f64>,
    /// Weight of the adversarial loss on unlabeled batches (default: λ1).
    #[arg(long)]
    lambda_adv_unlabeled: Option<f64>,
    /// Sigmoid ramp-up of the unlabeled terms over this fraction of the run (0 = none).
    #[arg(long)]
    ramp_up: Option<f64>,
    /// How labeled and unlabeled slices go through the network.
    #[arg(long, value_enum)]
    unlabeled_pass: Option<UnlabeledPass>,
    /// Cap on steps per epoch (smoke runs, benchmarks).
    #[arg(long)]
    max_steps_per_epoch: Option<usize>,
    /// Seed.
    #[arg(long)]
    seed: Option<u64>,
    /// auto | cpu | cuda
    #[arg(long, value_enum)]
    device: Option<DeviceChoice>,
    /// Mixed precision on CUDA (ignored with a warning on CPU).
    #[arg(long)]
    amp: bool,
    /// Same seed, same numbers in every process (one libtorch CPU thread).
    #[arg(long)]
    deterministic: bool,
    /// Continue the run in --out from its last checkpoint (its config.json is used; --steps or
    /// --epochs extend it).
    #[arg(long)]
    resume: bool,
    /// How per-case metrics score a structure missed on one side or absent from both:
    /// nnunet (default), brats or ssl4mis (recorded in every report).
    #[arg(long, value_enum)]
    convention: Option<crate::metrics::Convention>,
    /// Print the run summary as JSON (default: one line).
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Evaluate a run's checkpoint on a split; prints the metrics as JSON and writes them into
    /// the run dir (eval-<split>-<checkpoint>.json).
    Eval {
        /// Run directory.
        #[arg(long)]
        run: PathBuf,
        /// Shard folder.
        #[arg(long)]
        shards: PathBuf,
        /// The split to evaluate.
        #[arg(long, value_enum, default_value_t = Split::Test)]
        split: Split,
        /// best | last
        #[arg(long, value_enum, default_value_t = CheckpointKind::Best)]
        checkpoint: CheckpointKind,
        /// auto | cpu | cuda
        #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
        device: DeviceChoice,
        /// Evaluate even when the shards' channels, modality, classes or slice size differ
        /// from the run's training data (a warning instead of an error).
        #[arg(long)]
        allow_mismatch: bool,
        /// Convention for missing / empty structures (default: the run's).
        #[arg(long, value_enum)]
        convention: Option<crate::metrics::Convention>,
        /// Print the whole report as JSON (default: a table).
        #[arg(long)]
        json: bool,
    },
    /// Run variants × labeled fractions × seeds, evaluate each on the test split (best and last
    /// checkpoints) and write OUT/grid.md (mean ± sd tables, the paper's layout) + OUT/grid.json.
    Grid(Box<GridArgs>),
    /// Report which torch device `--device` resolves to (and why); exit 1 if unusable.
    CheckDevice {
        /// auto | cpu | cuda
        #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
        device: DeviceChoice,
    },
}

#[derive(Args)]
struct GridArgs {
    /// Arms (rows) to run from the pipeline's [grid.arms] tables, comma-separated (default:
    /// all of them).
    #[arg(long, value_delimiter = ',')]
    arms: Vec<String>,
    /// Without [grid.arms]: variants (rows), comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "dmnet,supervised"
    )]
    variants: Vec<Variant>,
    /// Labeled fractions (columns) for every arm, comma-separated: 0.1 or 10%.
    #[arg(long, value_delimiter = ',')]
    fractions: Vec<Fraction>,
    /// Seeds for every arm, comma-separated.
    #[arg(long, value_delimiter = ',')]
    seeds: Vec<u64>,
    /// Arm that paired differences are taken against (default: [grid] baseline, else
    /// `supervised` when it is an arm).
    #[arg(long)]
    baseline: Option<String>,
    /// Runs trained at once (use --deterministic: one CPU thread per run).
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// Train nothing: re-score the finished runs' best and last checkpoints with this dmnet's
    /// evaluator and rewrite grid.md / grid.json (unfinished runs are listed and left out).
    #[arg(long)]
    reevaluate: bool,
    /// This worker's index (0-based) of --num-workers: it runs every N-th cell from this one
    /// and writes OUT/grid-wI.json; `--merge` then writes the tables (docs/scaling.md).
    #[arg(long, requires = "num_workers")]
    worker_index: Option<usize>,
    /// How many workers share the grid (a Slurm array, a Kubernetes Indexed Job).
    #[arg(long, requires = "worker_index")]
    num_workers: Option<usize>,
    /// Train nothing: join the workers' OUT/grid-w*.json into grid.json and grid.md.
    #[arg(long, conflicts_with_all = ["worker_index", "reevaluate"])]
    merge: bool,
    #[command(flatten)]
    train: TrainArgs,
}

/// Applies the flags that were given on top of `t`.
fn apply(a: &TrainArgs, t: &mut TrainConfig) {
    macro_rules! set {
        ($($field:ident => $($path:ident).+),*) => { $(if let Some(v) = a.$field { t.$($path).+ = v; })* };
    }
    set!(method => method, supervised_loss => supervised_loss, select_on => select_on,
         augment => augment,
         variant => model.variant, labeled_fraction => labeled_slice_fraction, epochs => epochs,
         encoder => model.encoder, width => model.width, labeled_batch => labeled_batch,
         unlabeled_batch => unlabeled_batch, semi_loss => loss.semi_loss,
         lambda_semi => loss.lambda_semi, lambda_adv => loss.lambda_adv, ramp_up => loss.ramp_up,
         unlabeled_pass => loss.unlabeled_pass, seed => seed, device => device,
         convention => convention);
    if a.steps.is_some() {
        t.steps = a.steps;
    }
    if a.labeled_patients.is_some() {
        t.labeled_patients = a.labeled_patients;
    }
    if a.eval_every.is_some() {
        t.eval_every = a.eval_every;
    }
    if a.lambda_adv_unlabeled.is_some() {
        t.loss.lambda_adv_unlabeled = a.lambda_adv_unlabeled;
    }
    if a.size.is_some() {
        t.size = a.size;
    }
    if a.max_steps_per_epoch.is_some() {
        t.max_steps_per_epoch = a.max_steps_per_epoch;
    }
    t.amp |= a.amp;
    t.deterministic |= a.deterministic;
}

/// The pipeline's `[train]` table, or the defaults.
fn base_config(a: &TrainArgs) -> Result<TrainConfig> {
    Ok(match &a.pipeline {
        Some(p) => TrainConfig::from_pipeline(p)?,
        None => TrainConfig::default(),
    })
}

/// The grid's arms from the pipeline's `[grid.arms]` (or `--variants`), with the flags on top.
fn grid_spec(a: GridArgs) -> Result<GridSpec> {
    let (Some(shards), Some(out)) = (a.train.shards.clone(), a.train.out.clone()) else {
        return Err(Error::Usage("--shards and --out are required".into()));
    };
    let plan = match &a.train.pipeline {
        Some(p) => read_plan(p)?,
        None => GridPlan {
            arms: Vec::new(),
            baseline: None,
            published: None,
        },
    };
    let mut arms = select_arms(&a, plan.arms)?;
    for arm in &mut arms {
        apply(&a.train, &mut arm.train);
        if !a.fractions.is_empty() || (arm.fractions.is_empty() && arm.patients.is_empty()) {
            arm.fractions = if a.fractions.is_empty() {
                DEFAULT_GRID_FRACTIONS
                    .iter()
                    .map(|&f| Fraction::new(f).map_err(Error::Usage))
                    .collect::<Result<_>>()?
            } else {
                a.fractions.clone()
            };
        }
        if !a.seeds.is_empty() || arm.seeds.is_empty() {
            arm.seeds = if a.seeds.is_empty() {
                vec![0, 1, 2]
            } else {
                a.seeds.clone()
            };
        }
    }
    let baseline = a.baseline.or(plan.baseline).or_else(|| {
        arms.iter()
            .any(|x| x.name == "supervised")
            .then(|| "supervised".into())
    });
    Ok(GridSpec {
        shards,
        out,
        pipeline: a.train.pipeline,
        arms,
        baseline,
        published: plan.published,
        jobs: a.jobs,
        reevaluate: a.reevaluate,
        worker: match (a.worker_index, a.num_workers) {
            (Some(i), Some(n)) if i < n => Some((i, n)),
            (Some(i), Some(n)) => {
                return Err(Error::Usage(format!(
                    "--worker-index {i} is not below --num-workers {n}"
                )))
            }
            _ => None,
        },
        command: std::env::args().collect::<Vec<_>>().join(" "),
    })
}

/// The arms to run: `--arms` of the pipeline's `[grid.arms]` (all of them by default), or one
/// arm per `--variants` entry when the pipeline has none.
fn select_arms(a: &GridArgs, planned: Vec<Arm>) -> Result<Vec<Arm>> {
    if planned.is_empty() {
        let base = base_config(&a.train)?;
        let arm = |v: Variant| {
            let mut train = base.clone();
            train.model.variant = v;
            Arm {
                name: v.name().into(),
                description: String::new(),
                train,
                fractions: Vec::new(),
                patients: Vec::new(),
                seeds: Vec::new(),
                twin: None,
            }
        };
        return Ok(a.variants.iter().map(|&v| arm(v)).collect());
    }
    if a.arms.is_empty() {
        return Ok(planned);
    }
    a.arms
        .iter()
        .map(|n| {
            planned
                .iter()
                .find(|arm| &arm.name == n)
                .cloned()
                .ok_or_else(|| {
                    let known: Vec<&str> = planned.iter().map(|x| x.name.as_str()).collect();
                    Error::Usage(format!(
                        "no arm {n:?} in the pipeline's [grid.arms] (there are: {})",
                        known.join(", ")
                    ))
                })
        })
        .collect()
}

/// One training run: the pipeline's `[train]` table with the flags on top.
fn train_spec(a: TrainArgs) -> Result<RunSpec> {
    let shards = match (a.shards.clone(), a.resume) {
        (Some(s), _) => s,
        (None, true) => PathBuf::new(), // the run's own, from its config.json
        (None, false) => {
            return Err(Error::Usage(
                "--shards and --out are required to train".into(),
            ))
        }
    };
    let Some(out) = a.out.clone() else {
        return Err(Error::Usage(
            "--out is required (the run directory to create, or to continue with --resume)".into(),
        ));
    };
    let mut t = base_config(&a)?;
    apply(&a, &mut t);
    let extend = match (a.resume, a.steps, a.epochs) {
        (true, Some(n), _) => Some(Extend::Steps(n)),
        (true, None, Some(e)) => Some(Extend::Epochs(e)),
        _ => None,
    };
    Ok(RunSpec {
        shards,
        out,
        pipeline: a.pipeline,
        train: t,
        resume: a.resume,
        extend,
    })
}

/// `dmnet-train`: installs the logger, runs the subcommand (or trains), maps the result to the
/// exit code (0; 1 on an error, after one `error:` line).
pub fn run(cli: Cli) -> ExitCode {
    cli.log.init();
    crate::cli::exit_code(run_cmd(cli).map(|()| ExitCode::SUCCESS))
}

fn run_cmd(cli: Cli) -> Result<()> {
    match cli.cmd {
        Some(Cmd::CheckDevice { device }) => {
            println!("{:?}", crate::device::select(device)?);
        }
        Some(Cmd::Eval {
            run,
            shards,
            split,
            checkpoint,
            device,
            allow_mismatch,
            convention,
            json,
        }) => {
            let r = super::evaluate(
                &run,
                &shards,
                split,
                checkpoint,
                device,
                allow_mismatch,
                convention,
            )?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
            } else {
                print!("{}", eval_table(&r));
            }
        }
        Some(Cmd::Grid(args)) => {
            let merge = args.merge;
            let spec = grid_spec(*args)?;
            let results = if merge {
                super::grid_run::merge_workers(&spec)?
            } else {
                super::grid_run::run_grid(&spec)?
            };
            if let Some((i, _)) = spec.worker {
                eprintln!(
                    "worker {i}: {} evaluations in {}; when every worker is done, run the same command with --merge instead of --worker-index/--num-workers",
                    results.len(),
                    spec.out.join(format!("grid-w{i}.json")).display()
                );
                return Ok(());
            }
            let table = spec.out.join("grid.md");
            println!(
                "{}",
                std::fs::read_to_string(&table).map_err(|e| Error::io(&table, e))?
            );
            eprintln!(
                "{} evaluations; every run: {}",
                results.len(),
                spec.out.join("grid.json").display()
            );
        }
        None => {
            let json = cli.train.json;
            let s = super::run(&train_spec(cli.train)?)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
            } else {
                println!("{}", s.line());
            }
        }
    }
    Ok(())
}

/// `dmnet-train eval`'s table: slice-pooled mIoU, then per class the per-case means and what
/// they hide.
fn eval_table(r: &super::eval::EvalReport) -> String {
    let pct = |v: Option<f64>| v.map_or("–".to_string(), |x| format!("{:.1}", x * 100.0));
    let num = |v: Option<f64>| v.map_or("–".to_string(), |x| format!("{x:.2}"));
    let c = &r.cases;
    let units = match c.units {
        crate::metrics::evaluate::Units::Mm => "mm",
        crate::metrics::evaluate::Units::Voxel => "vox",
    };
    let mut out = format!(
        "{} split, {} checkpoint (round {}, step {}): mIoU {:.1} % (slices pooled, shard grid)\n\n\
         | class | Dice % | IoU % | HD95 {units} | ASD {units} | shard-grid Dice % | missed | false pos. | empty |\n\
         |---|---|---|---|---|---|---|---|---|\n",
        r.split,
        r.checkpoint.name(),
        r.epoch,
        r.step,
        r.metrics.miou * 100.0
    );
    for k in &c.classes {
        out += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            k.name,
            pct(k.dice),
            pct(k.iou),
            num(k.hd95),
            num(k.asd),
            pct(k.shard_grid_dice),
            k.missed,
            k.false_positive,
            k.empty
        );
    }
    out += &format!(
        "| mean | {} | {} | {} | {} | {} | {} | {} | {} |\n\n{}\n",
        pct(c.dice),
        pct(c.iou),
        num(c.hd95),
        num(c.asd),
        pct(c.shard_grid_dice),
        c.missed,
        c.false_positive,
        c.empty,
        c.footnote()
    );
    out
}
