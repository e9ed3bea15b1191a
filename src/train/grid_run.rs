//! `dmnet-train grid`: runs variants × labeled fractions × seeds on one shard folder (the
//! paper's Tables 1 and 3), evaluates every run on the test split with its best-on-validation
//! and its last checkpoint, and rewrites `OUT/grid.json` and `OUT/grid.md` after each run, so a
//! partial grid is readable and a rerun skips finished runs.
use super::grid::{markdown_table, GridResult};
use super::{evaluate, run, RunSpec};
use crate::artifact::{read_state, CheckpointKind, TrainConfig};
use crate::cli::DeviceChoice;
use crate::model::Variant;
use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// What the grid runs.
#[derive(Debug, Clone)]
pub struct GridSpec {
    /// Shard folder (the split is the one `dmnet-prep` wrote: every run uses the same patients).
    pub shards: PathBuf,
    /// Output folder: one run dir per cell plus grid.json / grid.md.
    pub out: PathBuf,
    /// Pipeline the base config came from (recorded).
    pub pipeline: Option<PathBuf>,
    /// Base hyper-parameters; variant, fraction and seed are set per cell.
    pub base: TrainConfig,
    /// Variants (rows of the table).
    pub variants: Vec<Variant>,
    /// Labeled fractions in (0, 1] (columns).
    pub fractions: Vec<f64>,
    /// Seeds (aggregated as mean ± sd).
    pub seeds: Vec<u64>,
    /// The command line, written at the top of grid.md.
    pub command: String,
}

fn cell_dir(out: &Path, v: Variant, fraction: f64, seed: u64) -> PathBuf {
    out.join(format!(
        "{}-{:.0}pct-seed{seed}",
        v.name(),
        fraction * 100.0
    ))
}

/// Whether a run dir holds a finished run of `epochs` epochs.
fn finished(run_dir: &Path, epochs: usize) -> bool {
    read_state(run_dir, CheckpointKind::Last).is_ok_and(|s| s.epoch >= epochs)
}

/// Runs (or resumes) the whole grid and returns every evaluated result.
pub fn run_grid(spec: &GridSpec) -> Result<Vec<GridResult>> {
    std::fs::create_dir_all(&spec.out).map_err(|e| Error::io(&spec.out, e))?;
    let total = spec.variants.len() * spec.fractions.len() * spec.seeds.len();
    let mut results = Vec::new();
    let mut k = 0;
    for &v in &spec.variants {
        for &fraction in &spec.fractions {
            for &seed in &spec.seeds {
                k += 1;
                let dir = cell_dir(&spec.out, v, fraction, seed);
                tracing::info!(
                    "grid {k}/{total}: {} {:.0}% seed {seed} → {}",
                    v.name(),
                    fraction * 100.0,
                    dir.display()
                );
                if !finished(&dir, spec.base.epochs) {
                    let mut t = spec.base.clone();
                    t.model.variant = v;
                    t.labeled_fraction = fraction;
                    t.seed = seed;
                    let resume = dir.join("config.json").exists();
                    run(&RunSpec {
                        shards: spec.shards.clone(),
                        out: dir.clone(),
                        pipeline: spec.pipeline.clone(),
                        train: t,
                        resume,
                    })?;
                }
                for kind in [CheckpointKind::Best, CheckpointKind::Last] {
                    let r = evaluate(&dir, &spec.shards, "test", kind, spec.base.device)?;
                    results.push(GridResult {
                        variant: v.name().into(),
                        fraction,
                        seed,
                        checkpoint: kind.name().into(),
                        miou: r.metrics.miou,
                        dice: r.metrics.mean_dice,
                        run_dir: dir.display().to_string(),
                    });
                }
                write_outputs(spec, &results)?;
            }
        }
    }
    Ok(results)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    format!("{cores} cores ({cpu})")
}

fn write_outputs(spec: &GridSpec, results: &[GridResult]) -> Result<()> {
    let json = spec.out.join("grid.json");
    std::fs::write(
        &json,
        serde_json::to_string_pretty(results).expect("serialisable") + "\n",
    )
    .map_err(|e| Error::io(&json, e))?;
    let names: Vec<String> = spec.variants.iter().map(|v| v.name().to_string()).collect();
    let protocol = std::fs::read_to_string(spec.shards.join(crate::shard::folder::PREP_CONFIG))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .map(|j| j["protocol"].as_str().unwrap_or("?").to_string())
        .unwrap_or_else(|| "?".into());
    let device = match spec.base.device {
        DeviceChoice::Cuda => "cuda",
        DeviceChoice::Cpu => "cpu",
        DeviceChoice::Auto => "auto",
    };
    let m = &spec.base.model;
    let mut md = format!(
        "# DMNet grid on `{}`\n\nCommand: `{}`\n\nMachine: {}, device {device}. Slice protocol: `{protocol}`. \
         Encoder {:?} width {}, {} epochs, labeled/unlabeled batch {}/{}. Test split, mean ± sample sd over seeds {:?}; \
         mIoU = mean IoU over all classes including background; Dice = mean over foreground classes.\n\n",
        spec.shards.display(), spec.command, machine(), m.encoder, m.width, spec.base.epochs,
        spec.base.labeled_batch, spec.base.unlabeled_batch, spec.seeds
    );
    for (ck, what) in [
        ("best", "best-on-validation checkpoint"),
        ("last", "last checkpoint"),
    ] {
        md += &format!(
            "## {what}\n\n{}\n{}\n",
            markdown_table(results, &names, ck, "miou"),
            markdown_table(results, &names, ck, "dice")
        );
    }
    let path = spec.out.join("grid.md");
    std::fs::write(&path, md).map_err(|e| Error::io(&path, e))
}
