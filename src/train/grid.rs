//! The experiment grid (the paper's Tables 1 and 3, and this project's ablations): arms ×
//! labeled fractions × seeds, each run evaluated on the test split with the best-on-validation
//! and the last checkpoint, summarised as mean ± sample standard deviation over seeds, with
//! paired per-seed differences against a baseline arm. An arm is a named set of overrides of
//! the `[train]` table (`[grid.arms.<name>]` in a pipeline file), so every ablation is
//! configuration. Torch-free: this part reads pipeline tables and aggregates results.
use crate::artifact::{CheckpointKind, Fraction, TrainConfig};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// One arm of the grid: a name, its training config, and the fractions and seeds it runs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Arm {
    /// Row name in the tables (`supervised`, `dmnet`, `joint-control`, …).
    pub name: String,
    /// One line saying what the arm changes.
    pub description: String,
    /// The complete training config (base `[train]` with the arm's overrides).
    pub train: TrainConfig,
    /// Labeled fractions it runs.
    pub fractions: Vec<Fraction>,
    /// Labeled-patient budgets it runs instead (`labeled_patients`, the SSL4MIS protocol;
    /// empty: the fractions).
    pub patients: Vec<usize>,
    /// Seeds it runs.
    pub seeds: Vec<u64>,
    /// The arm its paired differences are taken against (`paired_with`; default: the grid's
    /// baseline): each comparator against `supervised-single`, DMNet against `supervised`.
    pub twin: Option<String>,
}

/// A column of the grid's tables: a labeled fraction of the training slices, or a number of
/// labeled training patients.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Budget {
    /// A fraction of the labeled training slices.
    Fraction(Fraction),
    /// The first N labeled training patients.
    Patients(usize),
}

impl Budget {
    /// The columns of an arm, in order.
    pub(crate) fn of(arm: &Arm) -> Vec<Budget> {
        if arm.patients.is_empty() {
            arm.fractions.iter().map(|&f| Budget::Fraction(f)).collect()
        } else {
            arm.patients.iter().map(|&n| Budget::Patients(n)).collect()
        }
    }
    /// `10pct` or `7pat`, for run folder names.
    pub(crate) fn tag(self) -> String {
        match self {
            Budget::Fraction(f) => format!("{:.0}pct", f.percent()),
            Budget::Patients(n) => format!("{n}pat"),
        }
    }
}

/// The `[grid]` table of a pipeline file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GridTable {
    #[serde(default)]
    fractions: Vec<Fraction>,
    #[serde(default)]
    patients: Vec<usize>,
    #[serde(default)]
    seeds: Vec<u64>,
    #[serde(default)]
    baseline: Option<String>,
    /// A CSV of published numbers for the same protocol, shown beside the grid (relative to
    /// the pipeline file).
    #[serde(default)]
    published: Option<std::path::PathBuf>,
    #[serde(default)]
    arms: toml::Table,
}

/// The arms and the baseline of a pipeline's `[grid]` table.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GridPlan {
    /// The arms, in file order.
    pub arms: Vec<Arm>,
    /// The arm paired differences are taken against.
    pub baseline: Option<String>,
    /// The published-numbers CSV (`[grid] published`), resolved against the pipeline's folder.
    pub published: Option<std::path::PathBuf>,
}

/// Deep-merges `over` into `base` (tables merge, everything else replaces).
fn merge(base: &mut toml::Table, over: &toml::Table) {
    for (k, v) in over {
        match (base.get_mut(k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

fn config_err(path: &Path, msg: String) -> Error {
    Error::Config {
        path: path.into(),
        msg,
    }
}

/// Reads the arms of `[grid.arms.*]` from a pipeline file; each arm's keys other than
/// `description`, `fractions` and `seeds` override the file's `[train]` table. Arms without
/// fractions or seeds take `[grid] fractions`/`seeds`, then 10 %, 30 % and seeds 0, 1, 2.
pub(crate) fn read_plan(path: &Path) -> Result<GridPlan> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let doc: toml::Table = toml::from_str(&text).map_err(|e| config_err(path, e.to_string()))?;
    let base = match doc.get("train") {
        Some(toml::Value::Table(t)) => t.clone(),
        _ => toml::Table::new(),
    };
    let grid: GridTable = match doc.get("grid") {
        Some(g) => g
            .clone()
            .try_into()
            .map_err(|e: toml::de::Error| config_err(path, format!("[grid]: {e}")))?,
        None => GridTable::default(),
    };
    let mut arms = Vec::new();
    for (name, v) in &grid.arms {
        let toml::Value::Table(over) = v else {
            return Err(config_err(
                path,
                format!("[grid.arms.{name}] must be a table"),
            ));
        };
        let mut over = over.clone();
        let err = |e: toml::de::Error| config_err(path, format!("[grid.arms.{name}]: {e}"));
        let description = over
            .remove("description")
            .and_then(|d| d.as_str().map(str::to_string))
            .unwrap_or_default();
        let fractions: Vec<Fraction> = match over.remove("fractions") {
            Some(v) => v.try_into().map_err(err)?,
            None => grid.fractions.clone(),
        };
        let seeds: Vec<u64> = match over.remove("seeds") {
            Some(v) => v.try_into().map_err(err)?,
            None => grid.seeds.clone(),
        };
        let patients: Vec<usize> = match over.remove("patients") {
            Some(v) => v.try_into().map_err(err)?,
            None => grid.patients.clone(),
        };
        let twin: Option<String> = match over.remove("paired_with") {
            Some(v) => Some(v.try_into().map_err(err)?),
            None => None,
        };
        let mut table = base.clone();
        merge(&mut table, &over);
        let train: TrainConfig = toml::Value::Table(table).try_into().map_err(err)?;
        arms.push(Arm {
            name: name.clone(),
            description,
            train,
            fractions: if fractions.is_empty() {
                vec![
                    Fraction::new(0.1).map_err(|e| config_err(path, e))?,
                    Fraction::new(0.3).map_err(|e| config_err(path, e))?,
                ]
            } else {
                fractions
            },
            patients,
            seeds: if seeds.is_empty() {
                vec![0, 1, 2]
            } else {
                seeds
            },
            twin,
        });
    }
    let names: Vec<&str> = arms.iter().map(|a| a.name.as_str()).collect();
    if let Some(b) = &grid.baseline {
        if !names.contains(&b.as_str()) {
            return Err(config_err(
                path,
                format!("[grid] baseline {b:?} is not an arm"),
            ));
        }
    }
    for a in &arms {
        if let Some(t) = a.twin.as_deref().filter(|t| !names.contains(t)) {
            return Err(config_err(
                path,
                format!("[grid.arms.{}] paired_with {t:?} is not an arm", a.name),
            ));
        }
    }
    Ok(GridPlan {
        arms,
        baseline: grid.baseline,
        published: grid
            .published
            .map(|p| path.parent().unwrap_or(Path::new(".")).join(p)),
    })
}

/// One evaluated run of the grid.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct GridResult {
    /// Arm name.
    pub arm: String,
    /// Variant name (`dmnet`, `supervised`, …).
    pub variant: String,
    /// Fraction of the training labeled slices used (0–1].
    pub fraction: f64,
    /// The labeled-patient budget (`None`: every labeled patient, the fraction applies).
    #[serde(default)]
    pub labeled_patients: Option<usize>,
    /// Seed of the run.
    pub seed: u64,
    /// `best` (on validation) or `last`.
    pub checkpoint: CheckpointKind,
    /// Optimiser steps when the checkpoint was saved.
    pub step: usize,
    /// Test mIoU (mean over classes including background, pooled over slices), 0–1.
    pub miou: f64,
    /// Test Dice of the foreground classes pooled over slices, 0–1.
    pub dice: f64,
    /// Mean per-case Dice on test (source grid, the run's convention), 0–1.
    pub case_dice: Option<f64>,
    /// Mean per-case IoU (Jaccard) on test, 0–1.
    pub case_iou: Option<f64>,
    /// Mean per-case HD95 on test ([`GridResult::units`]).
    pub case_hd95: Option<f64>,
    /// Mean per-case ASD on test.
    pub case_asd: Option<f64>,
    /// Mean per-case Dice on the shard grid (the secondary column), 0–1.
    #[serde(default)]
    pub shard_grid_case_dice: Option<f64>,
    /// Per foreground class: mean per-case Dice, 0–1.
    #[serde(default)]
    pub class_dice: Vec<Option<f64>>,
    /// Per foreground class: mean per-case HD95.
    #[serde(default)]
    pub class_hd95: Vec<Option<f64>>,
    /// Case × class pairs the prediction missed.
    #[serde(default)]
    pub missed: usize,
    /// Case × class pairs predicted where the truth has none.
    #[serde(default)]
    pub false_positive: usize,
    /// Case × class pairs absent from both.
    #[serde(default)]
    pub empty: usize,
    /// The evaluator's convention, grid and units.
    #[serde(default)]
    pub scoring: String,
    /// Per foreground class: mean per-case Dice under the run's `also_convention`.
    #[serde(default)]
    pub also_class_dice: Vec<Option<f64>>,
    /// Per foreground class: mean per-case HD95 under the run's `also_convention`.
    #[serde(default)]
    pub also_class_hd95: Vec<Option<f64>>,
    /// That convention's description (empty without one).
    #[serde(default)]
    pub also_scoring: String,
    /// Share of test pixels predicted as foreground.
    pub predicted_foreground: f64,
    /// Share of test pixels that are foreground.
    pub true_foreground: f64,
    /// Dice between the two decoders' foreground on test.
    pub decoder_dice: f64,
    /// The run's best validation mIoU (what checkpoint selection saw), 0–1.
    pub val_miou: Option<f64>,
    /// The run directory.
    pub run_dir: String,
}

/// Mean and sample standard deviation (n − 1; 0 for a single value).
pub(crate) fn mean_sd(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    if values.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mean = values.iter().sum::<f64>() / n;
    let var = if values.len() > 1 {
        values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// A metric of a [`GridResult`] as a percentage (or mm), with its column title.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Metric {
    /// Test mIoU %.
    Miou,
    /// Test Dice % pooled over slices.
    SliceDice,
    /// Mean per-case Dice %.
    CaseDice,
    /// Mean per-case HD95.
    CaseHd95,
    /// Mean per-case ASD.
    CaseAsd,
    /// Mean per-case Dice on the shard grid %.
    ShardGridCaseDice,
    /// Mean per-case Dice % of one foreground class (1-based).
    ClassDice(usize),
    /// Mean per-case HD95 of one foreground class (1-based).
    ClassHd95(usize),
    /// Mean per-case Dice % of one class under the second convention (1-based; 0 = mean).
    AlsoDice(usize),
    /// Mean per-case HD95 of one class under the second convention (1-based; 0 = mean).
    AlsoHd95(usize),
    /// Predicted foreground % of test pixels.
    PredictedForeground,
    /// Dice % between the decoders.
    DecoderDice,
    /// Best validation mIoU %.
    ValMiou,
}

impl Metric {
    fn title(self) -> String {
        match self {
            Metric::Miou => "test mIoU %".into(),
            Metric::SliceDice => "test Dice % (slices pooled, shard grid)".into(),
            Metric::CaseDice => "test per-case Dice % (source grid)".into(),
            Metric::CaseHd95 => "test per-case HD95".into(),
            Metric::CaseAsd => "test per-case ASD".into(),
            Metric::ShardGridCaseDice => "test per-case Dice % on the shard grid".into(),
            Metric::ClassDice(c) => format!("test per-case Dice % of class {c}"),
            Metric::ClassHd95(c) => format!("test per-case HD95 of class {c}"),
            Metric::AlsoDice(0) => {
                "test per-case Dice %, mean of the classes (published convention)".into()
            }
            Metric::AlsoDice(c) => {
                format!("test per-case Dice % of class {c} (published convention)")
            }
            Metric::AlsoHd95(0) => {
                "test per-case HD95, mean of the classes (published convention)".into()
            }
            Metric::AlsoHd95(c) => {
                format!("test per-case HD95 of class {c} (published convention)")
            }
            Metric::PredictedForeground => "predicted foreground % of test pixels".into(),
            Metric::DecoderDice => "Dice % between the two decoders (test)".into(),
            Metric::ValMiou => "best val mIoU %".into(),
        }
    }
    fn of(self, r: &GridResult) -> Option<f64> {
        let class = |v: &[Option<f64>], c: usize| v.get(c.wrapping_sub(1)).copied().flatten();
        match self {
            Metric::Miou => Some(r.miou * 100.0),
            Metric::SliceDice => Some(r.dice * 100.0),
            Metric::CaseDice => r.case_dice.map(|v| v * 100.0),
            Metric::CaseHd95 => r.case_hd95,
            Metric::CaseAsd => r.case_asd,
            Metric::ShardGridCaseDice => r.shard_grid_case_dice.map(|v| v * 100.0),
            Metric::ClassDice(c) => class(&r.class_dice, c).map(|v| v * 100.0),
            Metric::ClassHd95(c) => class(&r.class_hd95, c),
            Metric::AlsoDice(0) => mean_of(&r.also_class_dice).map(|v| v * 100.0),
            Metric::AlsoDice(c) => class(&r.also_class_dice, c).map(|v| v * 100.0),
            Metric::AlsoHd95(0) => mean_of(&r.also_class_hd95),
            Metric::AlsoHd95(c) => class(&r.also_class_hd95, c),
            Metric::PredictedForeground => Some(r.predicted_foreground * 100.0),
            Metric::DecoderDice => Some(r.decoder_dice * 100.0),
            Metric::ValMiou => r.val_miou.map(|v| v * 100.0),
        }
    }
}

/// The column key of a result: its patient budget (after every fraction), else its fraction.
/// The mean of the defined values (none defined: `None`).
fn mean_of(v: &[Option<f64>]) -> Option<f64> {
    let xs: Vec<f64> = v.iter().flatten().copied().collect();
    (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64)
}

fn key(r: &GridResult) -> u64 {
    match r.labeled_patients {
        Some(n) => 1_000_000_000 + n as u64,
        None => (r.fraction * 1e6).round() as u64,
    }
}

fn label(k: u64) -> String {
    if k >= 1_000_000_000 {
        format!("{} patients", k - 1_000_000_000)
    } else {
        format!("{:.0}%", k as f64 / 1e4)
    }
}

fn columns_of(results: &[GridResult]) -> Vec<u64> {
    let mut f: Vec<u64> = results.iter().map(key).collect();
    f.sort();
    f.dedup();
    f
}

/// Values of `metric` per (arm, fraction) and seed, for one checkpoint kind.
fn cells(
    results: &[GridResult],
    checkpoint: CheckpointKind,
    metric: Metric,
) -> BTreeMap<(String, u64), BTreeMap<u64, f64>> {
    let mut out: BTreeMap<(String, u64), BTreeMap<u64, f64>> = BTreeMap::new();
    for r in results.iter().filter(|r| r.checkpoint == checkpoint) {
        if let Some(v) = metric.of(r) {
            out.entry((r.arm.clone(), key(r)))
                .or_default()
                .insert(r.seed, v);
        }
    }
    out
}

fn header(title: String, fractions: &[u64]) -> String {
    let cols: Vec<String> = fractions.iter().map(|&k| label(k)).collect();
    format!(
        "| {title} | {} |\n|---|{}\n",
        cols.join(" | "),
        "---|".repeat(fractions.len())
    )
}

/// A Markdown table in the layout of the paper's Tables 1/3: one row per arm (in the order
/// given), one column per labeled fraction, cells `mean ± sd (n)` over seeds.
pub(crate) fn markdown_table(
    results: &[GridResult],
    arms: &[String],
    checkpoint: CheckpointKind,
    metric: Metric,
) -> String {
    let fractions = columns_of(results);
    let c = cells(results, checkpoint, metric);
    let mut out = header(format!("{} ({checkpoint})", metric.title()), &fractions);
    for a in arms {
        let row: Vec<String> = fractions
            .iter()
            .map(|f| match c.get(&(a.clone(), *f)) {
                Some(v) => {
                    let vals: Vec<f64> = v.values().copied().collect();
                    let (m, s) = mean_sd(&vals);
                    format!("{m:.1} ± {s:.1} (n={})", vals.len())
                }
                None => "–".into(),
            })
            .collect();
        out += &format!("| {a} | {} |\n", row.join(" | "));
    }
    out
}

/// Paired differences `arm − twin` over the seeds both ran, one row per `(arm, twin)` pair:
/// `mean ± sd (n), mean/se`, where se = sd/√n; |mean/se| > 2 is the issue's bar for a gain.
pub(crate) fn paired_table(
    results: &[GridResult],
    pairs: &[(String, String)],
    checkpoint: CheckpointKind,
    metric: Metric,
) -> String {
    let fractions = columns_of(results);
    let c = cells(results, checkpoint, metric);
    let mut out = header(
        format!(
            "Δ {} vs the arm's supervised twin ({checkpoint}), paired by seed",
            metric.title()
        ),
        &fractions,
    );
    for (a, twin) in pairs {
        let row: Vec<String> = fractions
            .iter()
            .map(|f| {
                let (Some(x), Some(b)) = (c.get(&(a.clone(), *f)), c.get(&(twin.clone(), *f)))
                else {
                    return "–".into();
                };
                let d: Vec<f64> = x
                    .iter()
                    .filter_map(|(s, v)| b.get(s).map(|w| v - w))
                    .collect();
                if d.is_empty() {
                    return "–".into();
                }
                let (m, s) = mean_sd(&d);
                let se = s / (d.len() as f64).sqrt();
                let ratio = if se > 0.0 {
                    format!("{:+.1}", m / se)
                } else {
                    "–".into()
                };
                format!("{m:+.1} ± {s:.1} (n={}), mean/se {ratio}", d.len())
            })
            .collect();
        out += &format!("| {a} − {twin} | {} |\n", row.join(" | "));
    }
    out
}

/// The published-numbers CSV at `path` as a Markdown table (its header row, then its rows;
/// empty cells print `–`). An unreadable file or a ragged row is an error naming the file.
pub(crate) fn published_table(path: &Path) -> Result<String> {
    let mut rdr = csv::Reader::from_path(path).map_err(|e| Error::invalid(path, e.to_string()))?;
    let cell = |s: &str| match s.trim() {
        "" => "–".to_string(),
        t => t.replace('|', "\\|"),
    };
    let head: Vec<String> = rdr
        .headers()
        .map_err(|e| Error::invalid(path, e.to_string()))?
        .iter()
        .map(cell)
        .collect();
    let mut out = format!("| {} |\n|{}\n", head.join(" | "), "---|".repeat(head.len()));
    for row in rdr.records() {
        let row = row.map_err(|e| Error::invalid(path, e.to_string()))?;
        let cells: Vec<String> = row.iter().map(cell).collect();
        out += &format!("| {} |\n", cells.join(" | "));
    }
    Ok(out)
}

/// The `(arm, twin)` pairs of a grid: each arm against its `paired_with`, else `baseline`;
/// an arm is never paired with itself.
pub(crate) fn pairs(arms: &[Arm], baseline: Option<&str>) -> Vec<(String, String)> {
    arms.iter()
        .filter_map(|a| {
            let twin = a.twin.as_deref().or(baseline)?;
            (twin != a.name).then(|| (a.name.clone(), twin.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(arm: &str, fraction: f64, seed: u64, ck: CheckpointKind, miou: f64) -> GridResult {
        GridResult {
            arm: arm.into(),
            variant: arm.into(),
            fraction,
            labeled_patients: None,
            seed,
            checkpoint: ck,
            step: 10,
            miou,
            dice: miou / 2.0,
            case_dice: Some(miou / 2.0),
            case_iou: None,
            case_hd95: None,
            case_asd: None,
            shard_grid_case_dice: None,
            class_dice: vec![],
            class_hd95: vec![],
            missed: 0,
            false_positive: 0,
            empty: 0,
            scoring: String::new(),
            also_class_dice: vec![],
            also_class_hd95: vec![],
            also_scoring: String::new(),
            predicted_foreground: 0.1,
            true_foreground: 0.1,
            decoder_dice: 0.9,
            val_miou: None,
            run_dir: String::new(),
        }
    }

    #[test]
    fn mean_sd_uses_the_sample_standard_deviation() {
        let (m, s) = mean_sd(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(m, 2.5);
        assert!(
            (s - 1.2909944487358056).abs() < 1e-12,
            "numpy.std(ddof=1) of 1..4"
        );
        assert_eq!(mean_sd(&[7.0]), (7.0, 0.0));
    }

    #[test]
    fn table_has_paper_layout_and_separates_checkpoints() {
        let rs = vec![
            r("dmnet", 0.1, 0, CheckpointKind::Best, 0.80),
            r("dmnet", 0.1, 1, CheckpointKind::Best, 0.90),
            r("dmnet", 0.3, 0, CheckpointKind::Best, 0.95),
            r("supervised", 0.1, 0, CheckpointKind::Best, 0.70),
            r("dmnet", 0.1, 0, CheckpointKind::Last, 0.10),
        ];
        let t = markdown_table(
            &rs,
            &["supervised".into(), "dmnet".into()],
            CheckpointKind::Best,
            Metric::Miou,
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "| test mIoU % (best) | 10% | 30% |");
        assert_eq!(lines[2], "| supervised | 70.0 ± 0.0 (n=1) | – |");
        assert_eq!(lines[3], "| dmnet | 85.0 ± 7.1 (n=2) | 95.0 ± 0.0 (n=1) |");
        let dice = markdown_table(
            &rs,
            &["dmnet".into()],
            CheckpointKind::Last,
            Metric::SliceDice,
        );
        assert!(dice.contains("| dmnet | 5.0 ± 0.0 (n=1) | – |"), "{dice}");
    }

    #[test]
    fn paired_differences_use_common_seeds_only() {
        let rs = vec![
            r("dmnet", 0.1, 0, CheckpointKind::Best, 0.80),
            r("dmnet", 0.1, 1, CheckpointKind::Best, 0.84),
            r("dmnet", 0.1, 2, CheckpointKind::Best, 0.99),
            r("supervised", 0.1, 0, CheckpointKind::Best, 0.70),
            r("supervised", 0.1, 1, CheckpointKind::Best, 0.72),
        ];
        let t = paired_table(
            &rs,
            &[("dmnet".into(), "supervised".into())],
            CheckpointKind::Best,
            Metric::Miou,
        );
        // differences 10 and 12 (seed 2 has no baseline): mean 11, sd 1.414, se 1, ratio 11
        assert!(
            t.contains("| dmnet − supervised | +11.0 ± 1.4 (n=2), mean/se +11.0 |"),
            "{t}"
        );
        assert!(!t.contains("| supervised −"), "{t}");
    }

    #[test]
    fn arms_override_the_train_table_and_inherit_grid_lists() {
        let dir = std::env::temp_dir().join(format!("dmnet-grid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("g.toml");
        std::fs::write(
            &p,
            r#"
[train]
lr = 1e-3
[train.model]
width = 0.25
[grid]
fractions = ["10%", 0.3]
seeds = [0, 1]
baseline = "supervised"
[grid.arms.supervised]
model = { variant = "supervised" }
[grid.arms.joint]
description = "the joint pass"
seeds = [5]
loss = { unlabeled_pass = "joint", lambda_semi = 0.0 }
"#,
        )
        .unwrap();
        let plan = read_plan(&p).unwrap();
        assert_eq!(plan.baseline.as_deref(), Some("supervised"));
        assert_eq!(
            pairs(&plan.arms, plan.baseline.as_deref()),
            vec![("joint".to_string(), "supervised".to_string())]
        );
        let (sup, joint) = (&plan.arms[0], &plan.arms[1]);
        assert_eq!(sup.name, "supervised");
        assert_eq!(sup.train.model.variant, crate::model::Variant::Supervised);
        assert_eq!(sup.train.lr, 1e-3);
        assert_eq!(sup.train.model.width, 0.25);
        assert_eq!(sup.seeds, [0, 1]);
        assert_eq!(
            sup.fractions.iter().map(|f| f.get()).collect::<Vec<_>>(),
            [0.1, 0.3]
        );
        assert_eq!(joint.seeds, [5]);
        assert_eq!(joint.train.loss.lambda_semi, 0.0);
        assert_eq!(
            joint.train.model.width, 0.25,
            "deep merge keeps [train.model]"
        );
        assert_eq!(joint.description, "the joint pass");
        std::fs::write(&p, "[grid]\nbaseline = \"nope\"\n[grid.arms.a]\n").unwrap();
        assert!(read_plan(&p).is_err());
        std::fs::write(
            &p,
            "[grid]\nbaseline = \"a\"\n[grid.arms.a]\n[grid.arms.b]\n[grid.arms.c]\npaired_with = \"b\"\n",
        )
        .unwrap();
        let plan = read_plan(&p).unwrap();
        assert_eq!(
            pairs(&plan.arms, plan.baseline.as_deref()),
            vec![("b".into(), "a".into()), ("c".into(), "b".into())]
        );
        std::fs::write(&p, "[grid.arms.a]\npaired_with = \"z\"\n").unwrap();
        let e = read_plan(&p).unwrap_err().to_string();
        assert!(e.contains("paired_with \"z\" is not an arm"), "{e}");
        std::fs::write(
            dir.join("pub.csv"),
            "method,dice,source\nBCP,88.84,\"Bai et al., Table 2\"\nU-Net,,x|y\n",
        )
        .unwrap();
        let t = published_table(&dir.join("pub.csv")).unwrap();
        assert_eq!(
            t,
            "| method | dice | source |\n|---|---|---|\n| BCP | 88.84 | Bai et al., Table 2 |\n| U-Net | – | x\\|y |\n"
        );
        std::fs::write(dir.join("bad.csv"), "a,b\n1,2,3\n").unwrap();
        assert!(published_table(&dir.join("bad.csv")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
