//! The one case evaluator of `dmnet-train eval`, the grid and `dmnet-infer` (issue 22): each
//! case (one study's volume) is scored on its **source grid**, the prediction brought back as
//! `dmnet-infer` writes masks (the S×S class probabilities resized bilinearly to the source
//! in-plane size, then argmax: [`source_labels`]) and compared with the original label volume
//! (the shards' `source_mask`, or the label file for `dmnet-infer`). Per foreground class:
//! Dice, IoU (Jaccard), HD95 and ASD ([`super::case`]), in mm, or in voxels where the source
//! has no spacing (SSL4MIS h5). The shard-grid Dice is kept as a secondary column.
//!
//! How a case where the class is missing on one side or both scores is a named
//! [`Convention`], recorded in every report:
//!
//! | | nnunet (default) | brats | ssl4mis |
//! |---|---|---|---|
//! | truth has it, prediction misses it | Dice 0, HD95/ASD = penalty | Dice 0, penalty | Dice 0, HD95/ASD 0 |
//! | truth lacks it, prediction has it | Dice 0, penalty | Dice 0, penalty | Dice 0, HD95/ASD 0 |
//! | absent from both | NaN: excluded, counted | Dice 1, HD95/ASD 0 | Dice 0, HD95/ASD 0 |
//!
//! `nnunet` follows nnU-Net's Dice (NaN on empty reference and prediction); nnU-Net computes no
//! HD95, and MedPy raises on an empty mask, so the **penalty**, the length of the volume's
//! diagonal (in the report's units), is dmnet's own choice; it equals BraTS's published
//! penalty (373.13 mm on its 240×240×155 1-mm grid). `ssl4mis` reproduces SSL4MIS's and BCP's
//! test scripts (`calculate_metric_percase`: an empty prediction scores Dice 0 and HD95 0),
//! so that figures can sit beside the published ones. Nothing is ever dropped: every case ×
//! class has a row, and the counts of missed, false-positive and empty structures are kept.
//!
//! Distances need a volume: a case of one slice (the `paper` protocol's val/test cases)
//! reports Dice and IoU only.
use super::case::{surface_metrics, Grid};
use crate::preprocess::resize_bilinear;
use crate::shard::SliceRecord;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// How missing and empty structures score (see the module docs).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Convention {
    /// nnU-Net's Dice (NaN and excluded when absent from both); dmnet's HD95 penalty.
    #[default]
    Nnunet,
    /// The BraTS challenge's: absent from both is a perfect score.
    Brats,
    /// SSL4MIS's and BCP's test scripts: a missed structure scores Dice 0 and HD95/ASD 0.
    Ssl4mis,
}

impl Convention {
    /// `nnunet`, `brats` or `ssl4mis`.
    pub fn name(self) -> &'static str {
        match self {
            Convention::Nnunet => "nnunet",
            Convention::Brats => "brats",
            Convention::Ssl4mis => "ssl4mis",
        }
    }
}

impl std::fmt::Display for Convention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Which side of a case holds a class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Presence {
    /// Both prediction and truth.
    Both,
    /// The truth has it, the prediction misses it.
    Missed,
    /// The prediction has it, the truth does not.
    FalsePositive,
    /// Neither.
    Empty,
}

/// The grid a case was scored on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScoreGrid {
    /// The source volume's voxel grid (the literature's).
    Source,
    /// The shards' S×S slices (shards without source-grid labels, e.g. upgraded from v2).
    Shard,
}

/// Distances in millimetres or, for sources without a spacing, voxels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Units {
    /// Millimetres.
    Mm,
    /// Voxels (the source carries no spacing).
    Voxel,
}

impl Units {
    fn of(spacing_known: bool) -> Units {
        if spacing_known {
            Units::Mm
        } else {
            Units::Voxel
        }
    }
}

/// One foreground class of one case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassScore {
    /// Class index (≥ 1).
    pub class: usize,
    /// Which side holds the class.
    pub presence: Presence,
    /// Dice (`None`: NaN, excluded under `nnunet`).
    pub dice: Option<f64>,
    /// IoU / Jaccard (`None` as for Dice).
    pub iou: Option<f64>,
    /// HD95 in the report's units (`None`: NaN, or a single-slice case).
    pub hd95: Option<f64>,
    /// ASD (prediction → truth) in the report's units (`None` as for HD95).
    pub asd: Option<f64>,
    /// Voxels of the class in the prediction.
    pub predicted_voxels: u64,
    /// Voxels of the class in the truth.
    pub true_voxels: u64,
}

/// One case (one study's volume).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseScore {
    /// The patient key.
    pub case: String,
    /// The study's `source_path` in the shards (input-relative path, or a salted key in a
    /// shareable folder); for `dmnet-infer`, the input file's name.
    pub source: String,
    /// Slices scored.
    pub slices: usize,
    /// Whether the slices cover the whole source volume.
    pub complete: bool,
    /// Per foreground class.
    pub classes: Vec<ClassScore>,
    /// Dice per foreground class on the shards' S×S grid (secondary; `None` as for `dice`).
    #[serde(default)]
    pub shard_grid_dice: Vec<Option<f64>>,
}

/// Means over cases, per class and over classes, with the counts that say what they hide.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassSummary {
    /// Class index (≥ 1).
    pub class: usize,
    /// Class name.
    pub name: String,
    /// Mean Dice over the cases where it is defined.
    pub dice: Option<f64>,
    /// Mean IoU.
    pub iou: Option<f64>,
    /// Mean HD95.
    pub hd95: Option<f64>,
    /// Mean ASD.
    pub asd: Option<f64>,
    /// Mean shard-grid Dice.
    pub shard_grid_dice: Option<f64>,
    /// Cases where the truth has the class and the prediction misses it.
    pub missed: usize,
    /// Cases where the prediction has the class and the truth does not.
    pub false_positive: usize,
    /// Cases where neither has it (NaN under `nnunet`: excluded from the means).
    pub empty: usize,
}

/// What an evaluation of cases reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseReport {
    /// The convention for missing and empty structures.
    pub convention: Convention,
    /// The grid the cases were scored on (`shard` when any case lacked source-grid labels).
    pub grid: ScoreGrid,
    /// The units of HD95 and ASD.
    pub units: Units,
    /// Cases scored.
    pub cases: usize,
    /// Per foreground class.
    pub classes: Vec<ClassSummary>,
    /// Mean over classes of the per-class mean Dice.
    pub dice: Option<f64>,
    /// Mean over classes of the per-class mean IoU.
    pub iou: Option<f64>,
    /// Mean over classes of the per-class mean HD95.
    pub hd95: Option<f64>,
    /// Mean over classes of the per-class mean ASD.
    pub asd: Option<f64>,
    /// Mean over classes of the per-class mean shard-grid Dice.
    pub shard_grid_dice: Option<f64>,
    /// Case × class pairs missed / false positive / empty, over all classes.
    pub missed: usize,
    /// See [`CaseReport::missed`].
    pub false_positive: usize,
    /// See [`CaseReport::missed`].
    pub empty: usize,
    /// The HD95/ASD value a missed or false-positive structure takes under this convention,
    /// when all cases share one volume size (else `None`: per case, its diagonal).
    pub penalty: Option<f64>,
    /// Every case.
    pub per_case: Vec<CaseScore>,
}

/// Scores every foreground class `1..k` of two class-index volumes on `grid`. `distances`:
/// compute HD95/ASD (false for single-slice cases); `penalty`: their value for a one-sided
/// class under `nnunet` and `brats`.
pub fn score_classes(
    pred: &[u8],
    truth: &[u8],
    grid: &Grid,
    k: usize,
    convention: Convention,
    distances: bool,
    penalty: f64,
) -> Vec<ClassScore> {
    (1..k)
        .map(|c| {
            let a: Vec<bool> = pred.iter().map(|&v| v as usize == c).collect();
            let b: Vec<bool> = truth.iter().map(|&v| v as usize == c).collect();
            score_class(c, &a, &b, grid, convention, distances, penalty)
        })
        .collect()
}

fn score_class(
    class: usize,
    a: &[bool],
    b: &[bool],
    grid: &Grid,
    convention: Convention,
    distances: bool,
    penalty: f64,
) -> ClassScore {
    let np = a.iter().filter(|&&v| v).count() as u64;
    let nt = b.iter().filter(|&&v| v).count() as u64;
    let inter = a.iter().zip(b).filter(|(&x, &y)| x && y).count() as u64;
    let presence = match (np > 0, nt > 0) {
        (true, true) => Presence::Both,
        (false, true) => Presence::Missed,
        (true, false) => Presence::FalsePositive,
        (false, false) => Presence::Empty,
    };
    let overlap = |v: f64| Some(v);
    let (dice, iou) = match (presence, convention) {
        (Presence::Empty, Convention::Nnunet) => (None, None),
        (Presence::Empty, Convention::Brats) => (overlap(1.0), overlap(1.0)),
        (Presence::Empty, Convention::Ssl4mis) => (overlap(0.0), overlap(0.0)),
        _ => (
            overlap(2.0 * inter as f64 / (np + nt) as f64),
            overlap(inter as f64 / (np + nt - inter) as f64),
        ),
    };
    let (hd95, asd) = if !distances {
        (None, None)
    } else {
        match (presence, convention) {
            (Presence::Both, _) => surface_metrics(a, b, grid).unzip(),
            (Presence::Empty, Convention::Nnunet) => (None, None),
            (Presence::Empty, _) | (_, Convention::Ssl4mis) => (Some(0.0), Some(0.0)),
            _ => (Some(penalty), Some(penalty)),
        }
    };
    ClassScore {
        class,
        presence,
        dice,
        iou,
        hd95,
        asd,
        predicted_voxels: np,
        true_voxels: nt,
    }
}

/// Per pixel, the class with the highest probability (the first on ties, like `argmax`), of
/// `K` planes of `n` pixels stored one after the other.
pub fn argmax_planes(p: &[f32], k: usize, n: usize) -> Vec<u8> {
    (0..n)
        .map(|px| {
            let mut best = 0;
            for j in 1..k {
                if p[j * n + px] > p[best * n + px] {
                    best = j;
                }
            }
            best as u8
        })
        .collect()
}

/// The prediction on the source in-plane grid, as `dmnet-infer` writes masks: each class's
/// `sh × sw` probabilities resized bilinearly to `h × w`, then argmax.
pub fn source_labels(
    probs: &[f32],
    k: usize,
    (sh, sw): (usize, usize),
    (h, w): (usize, usize),
) -> Vec<u8> {
    let planes: Vec<f32> = probs
        .chunks_exact(sh * sw)
        .take(k)
        .flat_map(|plane| resize_bilinear(plane, sh, sw, h, w))
        .collect();
    argmax_planes(&planes, k, h * w)
}

/// One slice of a case being collected.
#[derive(Debug)]
struct SliceBuf {
    pred_source: Option<Vec<u8>>,
    truth_source: Option<Vec<u8>>,
    pred_shard: Vec<u8>,
    truth_shard: Vec<u8>,
}

/// What a case's rows say about its geometry.
#[derive(Debug, Clone)]
struct CaseGeometry {
    source: String,
    num_slices: usize,
    axis: usize,
    spacing: [f64; 3],
    pixel_spacing: [f64; 2],
    orig: (usize, usize),
    shard: (usize, usize),
    spacing_known: bool,
}

#[derive(Debug)]
struct CaseBuf {
    geometry: CaseGeometry,
    slices: BTreeMap<i32, SliceBuf>,
}

/// Collects the predicted class probabilities of shard rows case by case and scores each case
/// when its last row has arrived ([`CaseCollector::expect`]), so that only the cases in flight
/// are held in memory.
#[derive(Debug)]
pub struct CaseCollector {
    k: usize,
    convention: Convention,
    /// Compute HD95/ASD (default true; false for cheap overlap-only scoring).
    pub distances: bool,
    expected: HashMap<(String, String), usize>,
    open: HashMap<(String, String), CaseBuf>,
    done: Vec<CaseScore>,
    units: Vec<Units>,
    grids: Vec<ScoreGrid>,
    penalties: Vec<f64>,
}

impl CaseCollector {
    /// A collector for `k` classes under `convention`.
    pub fn new(k: usize, convention: Convention) -> CaseCollector {
        CaseCollector {
            k,
            convention,
            distances: true,
            expected: HashMap::new(),
            open: HashMap::new(),
            done: Vec::new(),
            units: Vec::new(),
            grids: Vec::new(),
            penalties: Vec::new(),
        }
    }

    /// Declares that the case of (`patient_key`, `source_path`) has `rows` rows to come.
    /// Cases not declared are scored at [`CaseCollector::finish`].
    pub fn expect(&mut self, patient_key: &str, source_path: &str, rows: usize) {
        *self
            .expected
            .entry((patient_key.to_string(), source_path.to_string()))
            .or_default() += rows;
    }

    /// Adds one labeled row and its class probabilities (`K × S × S`). Rows without a mask
    /// are ignored.
    pub fn add(&mut self, r: &SliceRecord, probs: &[f32]) {
        let Some(truth) = &r.mask else { return };
        let (s, k) = ((r.height.max(0) as usize, r.width.max(0) as usize), self.k);
        let id = (r.patient_key.clone(), r.source_path.clone());
        let orig = (r.orig_height.max(0) as usize, r.orig_width.max(0) as usize);
        let pred_source = r
            .source_mask
            .as_ref()
            .map(|_| source_labels(probs, k, s, orig));
        let buf = SliceBuf {
            pred_source,
            truth_source: r.source_mask.clone(),
            pred_shard: argmax_planes(probs, k, s.0 * s.1),
            truth_shard: truth.clone(),
        };
        let case = self.open.entry(id.clone()).or_insert_with(|| CaseBuf {
            geometry: CaseGeometry {
                source: r.source_path.clone(),
                num_slices: r.num_slices.max(0) as usize,
                axis: usize::try_from(r.slice_axis).unwrap_or(2).min(2),
                spacing: r.spacing,
                pixel_spacing: r.pixel_spacing,
                orig,
                shard: s,
                spacing_known: r.spacing_known,
            },
            slices: BTreeMap::new(),
        });
        case.slices.insert(r.slice_index, buf);
        if self.expected.get(&id) == Some(&case.slices.len()) {
            if let Some(c) = self.open.remove(&id) {
                self.score(&id.0, c);
            }
        }
    }

    fn score(&mut self, patient: &str, c: CaseBuf) {
        let g = &c.geometry;
        let source = c
            .slices
            .values()
            .all(|s| s.truth_source.is_some() && s.pred_source.is_some());
        let (p, q) = crate::preprocess::in_plane_axes(g.axis);
        let along: Vec<f64> = c
            .slices
            .keys()
            .map(|&i| i as f64 * g.spacing[g.axis])
            .collect();
        let n = along.len();
        let (h, w, sp) = if source {
            (g.orig.0, g.orig.1, [g.spacing[p], g.spacing[q]])
        } else {
            (g.shard.0, g.shard.1, g.pixel_spacing)
        };
        let grid = Grid {
            dims: [n, h, w],
            coords: [
                along,
                (0..h).map(|i| i as f64 * sp[0]).collect(),
                (0..w).map(|j| j as f64 * sp[1]).collect(),
            ],
        };
        let full = Grid::regular(
            [g.num_slices.max(n), h, w],
            [g.spacing[g.axis], sp[0], sp[1]],
        );
        let penalty = full.diagonal();
        let stack = |f: &dyn Fn(&SliceBuf) -> &[u8]| -> Vec<u8> {
            c.slices
                .values()
                .flat_map(|s| f(s).iter().copied())
                .collect()
        };
        let (pred, truth) = if source {
            (
                stack(&|s| s.pred_source.as_deref().unwrap_or_default()),
                stack(&|s| s.truth_source.as_deref().unwrap_or_default()),
            )
        } else {
            (stack(&|s| &s.pred_shard), stack(&|s| &s.truth_shard))
        };
        let classes = score_classes(
            &pred,
            &truth,
            &grid,
            self.k,
            self.convention,
            self.distances && n > 1,
            penalty,
        );
        let shard_grid = Grid::regular([n, g.shard.0, g.shard.1], [1.0; 3]);
        let shard_grid_dice = score_classes(
            &stack(&|s| &s.pred_shard),
            &stack(&|s| &s.truth_shard),
            &shard_grid,
            self.k,
            self.convention,
            false,
            0.0,
        )
        .into_iter()
        .map(|c| c.dice)
        .collect();
        self.units.push(Units::of(g.spacing_known));
        self.grids.push(if source {
            ScoreGrid::Source
        } else {
            ScoreGrid::Shard
        });
        self.penalties.push(penalty);
        self.done.push(CaseScore {
            case: patient.to_string(),
            source: g.source.clone(),
            slices: n,
            complete: n == g.num_slices,
            classes,
            shard_grid_dice,
        });
    }

    /// Scores the cases still open and returns the report (cases in name order).
    pub fn finish(mut self, class_names: &[String]) -> CaseReport {
        let mut open: Vec<_> = std::mem::take(&mut self.open).into_iter().collect();
        open.sort_by(|a, b| a.0.cmp(&b.0));
        for (id, c) in open {
            self.score(&id.0, c);
        }
        let grid = if self.grids.iter().all(|&g| g == ScoreGrid::Source) {
            ScoreGrid::Source
        } else {
            ScoreGrid::Shard
        };
        let units = if self.units.iter().all(|&u| u == Units::Mm) {
            Units::Mm
        } else {
            Units::Voxel
        };
        let penalty = match self.penalties.split_first() {
            Some((&first, rest)) if rest.iter().all(|&p| (p - first).abs() < 1e-9) => Some(first),
            _ => None,
        };
        let mut cases = self.done;
        cases.sort_by(|a, b| (&a.case, &a.source).cmp(&(&b.case, &b.source)));
        summarize(
            cases,
            self.k,
            self.convention,
            grid,
            units,
            penalty,
            class_names,
        )
    }
}

fn mean(v: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let xs: Vec<f64> = v.flatten().collect();
    (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64)
}

/// The report of scored cases: per-class means over cases, their mean over classes, counts.
pub fn summarize(
    cases: Vec<CaseScore>,
    k: usize,
    convention: Convention,
    grid: ScoreGrid,
    units: Units,
    penalty: Option<f64>,
    class_names: &[String],
) -> CaseReport {
    let classes: Vec<ClassSummary> = (1..k)
        .map(|c| {
            let rows: Vec<&ClassScore> = cases
                .iter()
                .filter_map(|cs| cs.classes.iter().find(|s| s.class == c))
                .collect();
            let count = |p: Presence| rows.iter().filter(|s| s.presence == p).count();
            ClassSummary {
                class: c,
                name: class_names
                    .get(c)
                    .cloned()
                    .unwrap_or_else(|| format!("class {c}")),
                dice: mean(rows.iter().map(|s| s.dice)),
                iou: mean(rows.iter().map(|s| s.iou)),
                hd95: mean(rows.iter().map(|s| s.hd95)),
                asd: mean(rows.iter().map(|s| s.asd)),
                shard_grid_dice: mean(
                    cases
                        .iter()
                        .map(|cs| cs.shard_grid_dice.get(c - 1).copied().flatten()),
                ),
                missed: count(Presence::Missed),
                false_positive: count(Presence::FalsePositive),
                empty: count(Presence::Empty),
            }
        })
        .collect();
    CaseReport {
        convention,
        grid,
        units,
        cases: cases.len(),
        dice: mean(classes.iter().map(|c| c.dice)),
        iou: mean(classes.iter().map(|c| c.iou)),
        hd95: mean(classes.iter().map(|c| c.hd95)),
        asd: mean(classes.iter().map(|c| c.asd)),
        shard_grid_dice: mean(classes.iter().map(|c| c.shard_grid_dice)),
        missed: classes.iter().map(|c| c.missed).sum(),
        false_positive: classes.iter().map(|c| c.false_positive).sum(),
        empty: classes.iter().map(|c| c.empty).sum(),
        penalty,
        classes,
        per_case: cases,
    }
}

impl CaseReport {
    /// One row per case and foreground class (`eval-…-cases.csv`, `dmnet-infer`'s
    /// `metrics.csv`), with the convention, grid and units in every row.
    pub fn csv(&self) -> String {
        let f = |v: Option<f64>| v.map_or("nan".to_string(), |x| format!("{x:.6}"));
        let units = match self.units {
            Units::Mm => "mm",
            Units::Voxel => "voxel",
        };
        let grid = match self.grid {
            ScoreGrid::Source => "source",
            ScoreGrid::Shard => "shard",
        };
        let mut out = String::from(
            "case,source,class,name,presence,dice,iou,hd95,asd,units,predicted_voxels,true_voxels,shard_grid_dice,slices,grid,convention\n",
        );
        for c in &self.per_case {
            for s in &c.classes {
                let name = self
                    .classes
                    .iter()
                    .find(|x| x.class == s.class)
                    .map_or("", |x| x.name.as_str());
                let presence = serde_json::to_value(s.presence)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default();
                out += &format!(
                    "{},{},{},{},{presence},{},{},{},{},{units},{},{},{},{},{grid},{}\n",
                    csv_field(&c.case),
                    csv_field(&c.source),
                    s.class,
                    csv_field(name),
                    f(s.dice),
                    f(s.iou),
                    f(s.hd95),
                    f(s.asd),
                    s.predicted_voxels,
                    s.true_voxels,
                    f(c.shard_grid_dice.get(s.class - 1).copied().flatten()),
                    c.slices,
                    self.convention
                );
            }
        }
        out
    }

    /// The lines printed under a table: the convention, grid, units and what the means hide.
    pub fn footnote(&self) -> String {
        let units = match self.units {
            Units::Mm => "mm",
            Units::Voxel => "voxels",
        };
        let grid = match self.grid {
            ScoreGrid::Source => "the source grid",
            ScoreGrid::Shard => "the shard grid (no source-grid labels in these shards)",
        };
        let penalty = self.penalty.map_or("the volume's diagonal".into(), |p| {
            format!("{p:.1} {units}")
        });
        format!(
            "{} cases scored on {grid}, convention {}; HD95/ASD in {units}. Missed structures: {}, \
             false positives: {}, absent from both: {} (case × class){}.",
            self.cases,
            self.convention,
            self.missed,
            self.false_positive,
            self.empty,
            match self.convention {
                Convention::Nnunet => format!(
                    "; a missed or false-positive structure has Dice 0 and HD95/ASD = {penalty} (dmnet's penalty); absent from both is excluded"
                ),
                Convention::Brats => format!(
                    "; a missed or false-positive structure has Dice 0 and HD95/ASD = {penalty}; absent from both scores Dice 1"
                ),
                Convention::Ssl4mis =>
                    "; a missed structure has Dice 0 and HD95/ASD 0, as SSL4MIS's and BCP's test scripts score it".into(),
            }
        )
    }
}

/// A CSV field, quoted when it holds a comma, quote or newline.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vol(n: usize, on: &[usize]) -> Vec<u8> {
        let mut v = vec![0u8; n];
        for &i in on {
            v[i] = 1;
        }
        v
    }

    #[test]
    fn conventions_score_missing_and_empty_structures_as_documented() {
        let g = Grid::regular([2, 3, 3], [2.0, 1.0, 1.0]);
        let pen = g.diagonal();
        let empty = vol(18, &[]);
        let some = vol(18, &[4, 13]);
        let case = |p: &[u8], t: &[u8], c| score_classes(p, t, &g, 2, c, true, pen)[0].clone();
        for c in [Convention::Nnunet, Convention::Brats, Convention::Ssl4mis] {
            let missed = case(&empty, &some, c);
            assert_eq!(missed.presence, Presence::Missed);
            assert_eq!(missed.dice, Some(0.0), "{c}");
            let want = if c == Convention::Ssl4mis { 0.0 } else { pen };
            assert_eq!((missed.hd95, missed.asd), (Some(want), Some(want)), "{c}");
            let fp = case(&some, &empty, c);
            assert_eq!(
                (fp.presence, fp.dice, fp.hd95),
                (Presence::FalsePositive, Some(0.0), Some(want))
            );
            let both = case(&some, &some, c);
            assert_eq!(
                (both.dice, both.hd95, both.asd),
                (Some(1.0), Some(0.0), Some(0.0))
            );
        }
        let e = |c| case(&empty, &empty, c);
        assert_eq!(
            (e(Convention::Nnunet).dice, e(Convention::Nnunet).hd95),
            (None, None)
        );
        assert_eq!(
            (e(Convention::Brats).dice, e(Convention::Brats).hd95),
            (Some(1.0), Some(0.0))
        );
        assert_eq!(
            (e(Convention::Ssl4mis).dice, e(Convention::Ssl4mis).hd95),
            (Some(0.0), Some(0.0))
        );
        // single-slice cases: overlap only
        let one = score_classes(&some, &some, &g, 2, Convention::Nnunet, false, pen);
        assert_eq!((one[0].dice, one[0].hd95), (Some(1.0), None));
    }

    #[test]
    fn summary_keeps_every_case_and_counts_what_it_excludes() {
        let g = Grid::regular([1, 2, 2], [1.0; 3]);
        let score = |p: &[u8], t: &[u8]| CaseScore {
            case: "p".into(),
            source: "s".into(),
            slices: 1,
            complete: true,
            classes: score_classes(p, t, &g, 2, Convention::Nnunet, true, 9.0),
            shard_grid_dice: vec![],
        };
        let cases = vec![
            score(&[1, 1, 0, 0], &[1, 1, 0, 0]), // perfect
            score(&[0, 0, 0, 0], &[1, 0, 0, 0]), // missed: Dice 0, HD95 9
            score(&[0, 0, 0, 0], &[0, 0, 0, 0]), // empty: excluded
        ];
        let names = vec!["bg".to_string(), "fg".to_string()];
        let r = summarize(
            cases,
            2,
            Convention::Nnunet,
            ScoreGrid::Source,
            Units::Mm,
            Some(9.0),
            &names,
        );
        assert_eq!((r.cases, r.missed, r.empty, r.false_positive), (3, 1, 1, 0));
        assert_eq!(r.dice, Some(0.5));
        assert_eq!(r.hd95, Some(4.5));
        assert!(
            r.footnote().contains("Missed structures: 1"),
            "{}",
            r.footnote()
        );
        assert_eq!(r.csv().lines().count(), 4);
    }

    #[test]
    fn source_labels_resize_probabilities_then_take_the_argmax() {
        // 2 classes on a 2×2 grid → 4×4: class 1 wins where its bilinear probability is larger
        let p1 = [0.9f32, 0.1, 0.1, 0.1];
        let p0: Vec<f32> = p1.iter().map(|v| 1.0 - v).collect();
        let probs: Vec<f32> = p0.iter().chain(&p1).copied().collect();
        let m = source_labels(&probs, 2, (2, 2), (4, 4));
        let want = resize_bilinear(&p1, 2, 2, 4, 4)
            .iter()
            .map(|&v| u8::from(v > 0.5))
            .collect::<Vec<_>>();
        assert_eq!(m, want);
    }
}
