//! dmnet-train: train DMNet with tch on CUDA or CPU, evaluate a run's checkpoints.
use clap::{Args, Parser, Subcommand};
use dmnet::artifact::{CheckpointKind, TrainConfig};
use dmnet::cli::{DeviceChoice, LogArgs};
use dmnet::model::{Encoder, Variant};
use dmnet::train::grid_run::GridSpec;
use dmnet::train::RunSpec;
use std::path::PathBuf;

/// Train DMNet (shared encoder, U-Net + DeepLab v3+ decoders, FCN discriminator) with libtorch.
#[derive(Parser)]
#[command(
    version,
    about,
    args_conflicts_with_subcommands = true,
    after_help = "Examples:\n  \
      dmnet-train --shards shards/la2018 --out runs/la-dmnet-10 --pipeline pipelines/la2018.toml --labeled-fraction 10\n  \
      dmnet-train --shards shards/la2018 --out runs/la-sup --variant supervised --encoder resnet18 --size 224 --epochs 50\n  \
      dmnet-train --out runs/la-dmnet-10 --shards shards/la2018 --resume\n  \
      dmnet-train eval --run runs/la-dmnet-10 --shards shards/la2018 --split test --checkpoint best\n  \
      dmnet-train check-device --device auto"
)]
struct Cli {
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
    /// Training variant (the paper's ablations).
    #[arg(long, value_enum)]
    variant: Option<Variant>,
    /// Fraction of the training labeled slices used with labels: 0.1 or 10 (percent), … 1 / 100.
    #[arg(long)]
    labeled_fraction: Option<f64>,
    /// Epochs (default 150).
    #[arg(long)]
    epochs: Option<usize>,
    /// Encoder depth.
    #[arg(long, value_enum)]
    encoder: Option<Encoder>,
    /// Width multiplier of all layers (1 = the paper's network).
    #[arg(long)]
    width: Option<f64>,
    /// Input size S (a multiple of 16; default: the shards' slice size, others are resized).
    #[arg(long)]
    size: Option<usize>,
    /// Labeled slices per step.
    #[arg(long)]
    labeled_batch: Option<usize>,
    /// Unlabeled slices per step.
    #[arg(long)]
    unlabeled_batch: Option<usize>,
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
    /// Continue the run in --out from its last checkpoint (its config.json is used).
    #[arg(long)]
    resume: bool,
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
        /// train | val | test
        #[arg(long, default_value = "test")]
        split: String,
        /// best | last
        #[arg(long, value_enum, default_value_t = CheckpointKind::Best)]
        checkpoint: CheckpointKind,
        /// auto | cpu | cuda
        #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
        device: DeviceChoice,
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
    /// Variants (rows), comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "dmnet,supervised"
    )]
    variants: Vec<Variant>,
    /// Labeled fractions (columns), comma-separated: 0.1 or 10 (percent).
    #[arg(long, value_delimiter = ',', default_value = "10,30")]
    fractions: Vec<f64>,
    /// Seeds, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "0,1,2")]
    seeds: Vec<u64>,
    #[command(flatten)]
    train: TrainArgs,
}

fn grid_spec(a: GridArgs) -> anyhow::Result<GridSpec> {
    let base = train_spec(a.train)?;
    Ok(GridSpec {
        shards: base.shards,
        out: base.out,
        pipeline: base.pipeline,
        base: base.train,
        variants: a.variants,
        fractions: a
            .fractions
            .iter()
            .map(|&f| if f > 1.0 { f / 100.0 } else { f })
            .collect(),
        seeds: a.seeds,
        command: std::env::args().collect::<Vec<_>>().join(" "),
    })
}

fn train_spec(a: TrainArgs) -> anyhow::Result<RunSpec> {
    let (Some(shards), Some(out)) = (a.shards, a.out) else {
        anyhow::bail!("--shards and --out are required to train (see --help)");
    };
    let mut t = match &a.pipeline {
        Some(p) => TrainConfig::from_pipeline(p)?,
        None => TrainConfig::default(),
    };
    if let Some(v) = a.variant {
        t.model.variant = v;
    }
    if let Some(f) = a.labeled_fraction {
        t.labeled_fraction = if f > 1.0 { f / 100.0 } else { f };
    }
    if let Some(e) = a.encoder {
        t.model.encoder = e;
    }
    macro_rules! set {
        ($($field:ident => $($path:ident).+),*) => { $(if let Some(v) = a.$field { t.$($path).+ = v; })* };
    }
    set!(epochs => epochs, width => model.width,
         labeled_batch => labeled_batch, unlabeled_batch => unlabeled_batch, seed => seed,
         device => device);
    if a.size.is_some() {
        t.size = a.size;
    }
    if a.max_steps_per_epoch.is_some() {
        t.max_steps_per_epoch = a.max_steps_per_epoch;
    }
    t.amp |= a.amp;
    Ok(RunSpec {
        shards,
        out,
        pipeline: a.pipeline,
        train: t,
        resume: a.resume,
    })
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    cli.log.init();
    let result: anyhow::Result<()> = match cli.cmd {
        Some(Cmd::CheckDevice { device }) => dmnet::device::select(device)
            .map(|d| println!("{d:?}"))
            .map_err(Into::into),
        Some(Cmd::Eval {
            run,
            shards,
            split,
            checkpoint,
            device,
        }) => dmnet::train::evaluate(&run, &shards, &split, checkpoint, device)
            .map(|r| {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&r).expect("serialisable")
                )
            })
            .map_err(Into::into),
        Some(Cmd::Grid(args)) => grid_spec(*args).and_then(|spec| {
            let results = dmnet::train::grid_run::run_grid(&spec)?;
            println!("{}", std::fs::read_to_string(spec.out.join("grid.md"))?);
            eprintln!(
                "{} evaluations; every run: {}",
                results.len(),
                spec.out.join("grid.json").display()
            );
            Ok(())
        }),
        None => train_spec(cli.train).and_then(|spec| {
            let s = dmnet::train::run(&spec)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&s).expect("serialisable")
            );
            Ok(())
        }),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", dmnet::error::report_line(e.as_ref()));
            std::process::ExitCode::FAILURE
        }
    }
}
