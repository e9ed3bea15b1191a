//! `dmnet-train grid`: runs arms × labeled fractions × seeds on one shard folder, evaluates
//! every run on the test split with its best-on-validation and its last checkpoint, and
//! rewrites `OUT/grid.json` and `OUT/grid.md` after each run, so a partial grid is readable and
//! a rerun skips finished runs. `jobs` runs that many cells at once (threads of one process;
//! with `deterministic` each run uses one libtorch thread, so 2 jobs fill 2 cores).
use super::eval::{evaluate, EvalReport};
use super::grid::{
    markdown_table, paired_table, pairs, published_table, Arm, Budget, GridResult, Metric,
};
use super::{run, RunSpec};
use crate::artifact::{read_state, CheckpointKind, RunConfig};
use crate::shard::Split;
use crate::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// What the grid runs.
#[derive(Debug, Clone)]
pub(crate) struct GridSpec {
    /// Shard folder (the split is the one `dmnet-prep` wrote: every run uses the same patients).
    pub shards: PathBuf,
    /// Output folder: one run dir per cell plus grid.json / grid.md.
    pub out: PathBuf,
    /// Pipeline the configs came from (recorded).
    pub pipeline: Option<PathBuf>,
    /// The arms (rows), each with its config, fractions and seeds.
    pub arms: Vec<Arm>,
    /// Arm that paired differences are taken against (an arm's `paired_with` wins).
    pub baseline: Option<String>,
    /// Published numbers for the same protocol (`[grid] published`), shown beside the grid.
    pub published: Option<PathBuf>,
    /// Cells run at once.
    pub jobs: usize,
    /// Train nothing: evaluate the finished cells only (`--reevaluate`).
    pub reevaluate: bool,
    /// `(index, count)`: run every count-th cell from index, write `grid-w<index>.json` only.
    pub worker: Option<(usize, usize)>,
    /// The command line, written at the top of grid.md.
    pub command: String,
}

/// One cell: an arm at one labeled budget and seed.
#[derive(Debug, Clone)]
struct Cell<'a> {
    arm: &'a Arm,
    budget: Budget,
    seed: u64,
    dir: PathBuf,
}

/// The cells seed by seed (every arm's seed 0, then seed 1, …), so that a grid stopped part
/// way holds whole seeds to compare, and a resumed one finishes them first.
fn cells(spec: &GridSpec) -> Vec<Cell<'_>> {
    let mut out = Vec::new();
    for arm in &spec.arms {
        for budget in Budget::of(arm) {
            for (rank, &seed) in arm.seeds.iter().enumerate() {
                let dir = spec
                    .out
                    .join(format!("{}-{}-seed{seed}", arm.name, budget.tag()));
                out.push((
                    rank,
                    Cell {
                        arm,
                        budget,
                        seed,
                        dir,
                    },
                ));
            }
        }
    }
    out.sort_by_key(|(rank, _)| *rank);
    out.into_iter().map(|(_, c)| c).collect()
}

/// Whether a run dir holds a finished run.
fn finished(run_dir: &Path) -> bool {
    let Ok(rc) = RunConfig::load(run_dir) else {
        return false;
    };
    let total = rc.data.schedule.total_steps;
    read_state(run_dir, CheckpointKind::Last).is_ok_and(|s| total > 0 && s.global_step >= total)
}

/// Trains (or resumes, or skips) one cell and evaluates both checkpoints on test.
fn run_cell(spec: &GridSpec, c: &Cell) -> Result<Vec<GridResult>> {
    if spec.reevaluate && !finished(&c.dir) {
        tracing::warn!(
            "{}: not finished, left out (--reevaluate trains nothing; rerun without it to finish)",
            c.dir.display()
        );
        return Ok(Vec::new());
    }
    if !finished(&c.dir) {
        let mut t = c.arm.train.clone();
        match c.budget {
            Budget::Fraction(f) => t.labeled_slice_fraction = f,
            Budget::Patients(n) => t.labeled_patients = Some(n),
        }
        t.seed = c.seed;
        let resume = c.dir.join("config.json").exists();
        run(&RunSpec {
            shards: spec.shards.clone(),
            out: c.dir.clone(),
            pipeline: spec.pipeline.clone(),
            train: t,
            resume,
            extend: None,
        })?;
    }
    let val_miou = read_state(&c.dir, CheckpointKind::Best)
        .ok()
        .and_then(|s| s.best_score);
    [CheckpointKind::Best, CheckpointKind::Last]
        .into_iter()
        .map(|kind| {
            let r = evaluate(
                &c.dir,
                &spec.shards,
                Split::Test,
                kind,
                c.arm.train.device,
                false,
                None,
            )?;
            Ok(result(c, &r, val_miou))
        })
        .collect()
}

fn result(c: &Cell, r: &EvalReport, val_miou: Option<f64>) -> GridResult {
    let (fraction, labeled_patients) = match c.budget {
        Budget::Fraction(f) => (f.get(), None),
        Budget::Patients(n) => (1.0, Some(n)),
    };
    GridResult {
        arm: c.arm.name.clone(),
        variant: c.arm.train.method_name().into(),
        fraction,
        labeled_patients,
        seed: c.seed,
        checkpoint: r.checkpoint,
        step: r.step,
        miou: r.metrics.miou,
        dice: r.metrics.mean_dice,
        case_dice: r.cases.dice,
        case_iou: r.cases.iou,
        case_hd95: r.cases.hd95,
        case_asd: r.cases.asd,
        shard_grid_case_dice: r.cases.shard_grid_dice,
        class_dice: r.cases.classes.iter().map(|c| c.dice).collect(),
        class_hd95: r.cases.classes.iter().map(|c| c.hd95).collect(),
        missed: r.cases.missed,
        false_positive: r.cases.false_positive,
        empty: r.cases.empty,
        scoring: r.cases.footnote(),
        also_class_dice: r
            .cases_also
            .iter()
            .flat_map(|a| a.classes.iter().map(|c| c.dice))
            .collect(),
        also_class_hd95: r
            .cases_also
            .iter()
            .flat_map(|a| a.classes.iter().map(|c| c.hd95))
            .collect(),
        also_scoring: r
            .cases_also
            .as_ref()
            .map(|a| a.footnote())
            .unwrap_or_default(),
        predicted_foreground: r.diagnostics.predicted_foreground,
        true_foreground: r.diagnostics.true_foreground,
        decoder_dice: r.diagnostics.decoder_dice,
        val_miou,
        run_dir: c.dir.display().to_string(),
    }
}

/// Runs (or resumes) the whole grid and returns every evaluated result.
pub(crate) fn run_grid(spec: &GridSpec) -> Result<Vec<GridResult>> {
    std::fs::create_dir_all(&spec.out).map_err(|e| Error::io(&spec.out, e))?;
    let todo: Vec<Cell> = cells(spec)
        .into_iter()
        .enumerate()
        .filter(|(k, _)| spec.worker.is_none_or(|(i, n)| k % n == i))
        .map(|(_, c)| c)
        .collect();
    let total = todo.len();
    let next = Mutex::new(0usize);
    let results: Mutex<Vec<GridResult>> = Mutex::new(Vec::new());
    let failed: Mutex<Option<Error>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..spec.jobs.clamp(1, total.max(1)) {
            s.spawn(|| loop {
                let k = {
                    let mut n = next.lock().unwrap_or_else(|e| e.into_inner());
                    if *n >= total || failed.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
                        return;
                    }
                    *n += 1;
                    *n - 1
                };
                let c = &todo[k];
                let _span = tracing::info_span!("cell", name = %format!("{}-{}-seed{}", c.arm.name, c.budget.tag(), c.seed)).entered();
                tracing::info!("grid {}/{total}: {}", k + 1, c.dir.display());
                match run_cell(spec, c) {
                    Ok(rs) => {
                        let mut all = results.lock().unwrap_or_else(|e| e.into_inner());
                        all.extend(rs);
                        if let Err(e) = write_outputs(spec, &all) {
                            tracing::warn!("grid outputs not written: {e}");
                        }
                    }
                    Err(e) => {
                        tracing::error!("{}: {e}", c.dir.display());
                        *failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                    }
                }
            });
        }
    });
    if let Some(e) = failed.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e);
    }
    let mut all = results.into_inner().unwrap_or_else(|e| e.into_inner());
    all.sort_by(|a, b| {
        (&a.arm, key(a), a.seed, &a.checkpoint).cmp(&(&b.arm, key(b), b.seed, &b.checkpoint))
    });
    write_outputs(spec, &all)?;
    Ok(all)
}

fn key(r: &GridResult) -> (u64, u64) {
    (
        r.labeled_patients.map_or(0, |n| n as u64),
        (r.fraction * 1e6).round() as u64,
    )
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1).map(|s| s.trim().to_string()))
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    format!("{cores} cores ({cpu})")
}

fn arm_lines(spec: &GridSpec) -> String {
    let mut out = String::from(
        "| arm | method | what it changes | labeled budget | seeds |\n|---|---|---|---|---|\n",
    );
    for a in &spec.arms {
        let budget: Vec<String> = Budget::of(a)
            .into_iter()
            .map(|b| match b {
                Budget::Fraction(f) => f.to_string(),
                Budget::Patients(n) => format!("{n} patients"),
            })
            .collect();
        let seeds: Vec<String> = a.seeds.iter().map(|s| s.to_string()).collect();
        out += &format!(
            "| {} | {} | {} | {} | {} |\n",
            a.name,
            a.train.method_name(),
            a.description,
            budget.join(", "),
            seeds.join(", ")
        );
    }
    out
}

/// Joins the workers' `grid-w*.json` into `grid.json` and `grid.md` (`--merge`), checking that
/// every cell of the grid is there once.
pub(crate) fn merge_workers(spec: &GridSpec) -> Result<Vec<GridResult>> {
    let mut all: Vec<GridResult> = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&spec.out)
        .map_err(|e| Error::io(&spec.out, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("grid-w") && n.ends_with(".json"))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::invalid(
            &spec.out,
            "no grid-w*.json: run the workers (--worker-index I --num-workers N) first",
        ));
    }
    for f in &files {
        let text = std::fs::read_to_string(f).map_err(|e| Error::io(f, e))?;
        let part: Vec<GridResult> =
            serde_json::from_str(&text).map_err(|e| Error::invalid(f, e.to_string()))?;
        all.extend(part);
    }
    let want = cells(spec);
    let missing: Vec<String> = want
        .iter()
        .filter(|c| !all.iter().any(|r| Path::new(&r.run_dir) == c.dir))
        .map(|c| c.dir.display().to_string())
        .collect();
    if !missing.is_empty() {
        return Err(Error::invalid(
            &spec.out,
            format!(
                "{} of {} cells have no results in {} worker file(s) (a worker still running or failed?): {}",
                missing.len(),
                want.len(),
                files.len(),
                missing.join(", ")
            ),
        ));
    }
    all.sort_by(|a, b| {
        (&a.arm, key(a), a.seed, &a.checkpoint).cmp(&(&b.arm, key(b), b.seed, &b.checkpoint))
    });
    all.dedup_by(|a, b| a.run_dir == b.run_dir && a.checkpoint == b.checkpoint);
    write_tables(spec, &all)?;
    Ok(all)
}

fn write_outputs(spec: &GridSpec, results: &[GridResult]) -> Result<()> {
    if let Some((i, _)) = spec.worker {
        let json = spec.out.join(format!("grid-w{i}.json"));
        let text = serde_json::to_string_pretty(results)
            .map_err(|e| Error::invalid(&json, e.to_string()))?;
        return crate::atomic::write_bytes(&json, text + "\n");
    }
    write_tables(spec, results)
}

/// `grid.json` and `grid.md` from `results`.
fn write_tables(spec: &GridSpec, results: &[GridResult]) -> Result<()> {
    let json = spec.out.join("grid.json");
    let text =
        serde_json::to_string_pretty(results).map_err(|e| Error::invalid(&json, e.to_string()))?;
    crate::atomic::write_bytes(&json, text + "\n")?;
    let names: Vec<String> = spec.arms.iter().map(|a| a.name.clone()).collect();
    let protocol = std::fs::read_to_string(spec.shards.join(crate::shard::folder::PREP_CONFIG))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|j| j["protocol"].as_str().map(str::to_string))
        .unwrap_or_else(|| "?".into());
    let mut md = format!(
        "# DMNet grid on `{}`\n\nCommand: `{}`\n\nMachine: {}. Slice protocol: `{protocol}`. Test split; cells are mean ± sample sd over seeds (n); \
         mIoU = mean IoU over all classes including background, pooled over slices; per-case Dice = mean over test cases of the 3-D Dice of each volume.\n\n## Arms\n\n{}\n",
        spec.shards.display(),
        spec.command,
        machine(),
        arm_lines(spec)
    );
    if let Some(r) = results.first() {
        md += &format!(
            "Per-case scoring (the evaluator of `dmnet-train eval`; one run shown): {}\n\n",
            r.scoring
        );
    }
    let (missed, fp): (usize, usize) = results
        .iter()
        .fold((0, 0), |(m, f), r| (m + r.missed, f + r.false_positive));
    md += &format!(
        "Over all evaluations in this grid: {missed} missed structures and {fp} false-positive structures (case × class), each scored, never dropped.\n\n"
    );
    let classes = results
        .iter()
        .map(|r| r.class_dice.len())
        .max()
        .unwrap_or(0);
    let twins = pairs(&spec.arms, spec.baseline.as_deref());
    for ck in [CheckpointKind::Best, CheckpointKind::Last] {
        md += &format!("## {ck} checkpoint\n\n");
        for m in [Metric::Miou, Metric::CaseDice] {
            md += &format!("{}\n", markdown_table(results, &names, ck, m));
            if !twins.is_empty() {
                md += &format!("{}\n", paired_table(results, &twins, ck, m));
            }
        }
    }
    md += "## Other metrics and diagnostics (best checkpoint)\n\n";
    let mut others = vec![
        Metric::ValMiou,
        Metric::SliceDice,
        Metric::ShardGridCaseDice,
        Metric::CaseHd95,
        Metric::CaseAsd,
    ];
    if classes > 1 {
        others.extend((1..=classes).map(Metric::ClassDice));
        others.extend((1..=classes).map(Metric::ClassHd95));
    }
    others.extend([Metric::PredictedForeground, Metric::DecoderDice]);
    if let Some(r) = results.iter().find(|r| !r.also_scoring.is_empty()) {
        others.push(Metric::AlsoDice(0));
        others.extend((1..=r.also_class_dice.len()).map(Metric::AlsoDice));
        others.push(Metric::AlsoHd95(0));
        others.extend((1..=r.also_class_hd95.len()).map(Metric::AlsoHd95));
        md += &format!(
            "The published-convention tables below: {}\n\n",
            r.also_scoring
        );
    }
    for m in others {
        md += &format!(
            "{}\n",
            markdown_table(results, &names, CheckpointKind::Best, m)
        );
    }
    let truth: Vec<f64> = results.iter().map(|r| r.true_foreground * 100.0).collect();
    if let Some(t) = truth.first() {
        md += &format!("True foreground: {t:.2} % of test pixels.\n");
    }
    if let Some(p) = &spec.published {
        md += &format!(
            "\n## Published numbers (`{}`)\n\nRead from the committed file, each row citing its source; scored under the published convention (see above), on the authors' protocol, which differs from this grid's as the file's `protocol` column says.\n\n{}",
            p.display(),
            published_table(p)?
        );
    }
    let path = spec.out.join("grid.md");
    crate::atomic::write_bytes(&path, md)
}
