//! Segmentation metrics on u8 class masks (pure Rust, no libtorch):
//! - [`MetricsAccumulator`]: per-class IoU and Dice pooled over all evaluated slices on the
//!   shards' grid, and mIoU = mean IoU over all K classes *including* background (the
//!   segmentation literature's definition, as in the paper's tables; also what validation
//!   selects checkpoints on);
//! - [`evaluate`]: the one per-case evaluator (source grid, conventions for missing
//!   structures, HD95/ASD from [`case`]) of `dmnet-train eval`, the grid and `dmnet-infer`.
//!
//! Slice-level HD95 is gone (it left out every slice where one side was empty): boundary
//! metrics are per case, where the convention says how a missed structure counts.
use serde::{Deserialize, Serialize};

/// Per-class pixel counts accumulated over slices.
#[derive(Debug, Clone, Default)]
pub struct MetricsAccumulator {
    k: usize,
    inter: Vec<u64>,
    pred: Vec<u64>,
    gt: Vec<u64>,
    slices: u64,
}

/// The slice-pooled metrics of one evaluation (shard grid).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegMetrics {
    /// IoU per class (index = class; 0 = background), from pixel counts pooled over every
    /// slice. A class absent from both prediction and truth in every slice scores 1.
    pub iou: Vec<f64>,
    /// Mean IoU over all classes including background.
    pub miou: f64,
    /// Dice per class (pooled like `iou`).
    pub dice: Vec<f64>,
    /// Mean Dice over the foreground classes (1..K).
    pub mean_dice: f64,
    /// Slices evaluated.
    pub slices: u64,
}

impl MetricsAccumulator {
    /// An empty accumulator for K classes.
    pub fn new(num_classes: usize) -> Self {
        let z = vec![0u64; num_classes];
        MetricsAccumulator {
            k: num_classes,
            inter: z.clone(),
            pred: z.clone(),
            gt: z,
            slices: 0,
        }
    }

    /// Adds one slice: predicted and true class masks of the same length. Values ≥ K are
    /// ignored.
    pub fn add(&mut self, pred: &[u8], gt: &[u8]) {
        assert_eq!(pred.len(), gt.len(), "prediction and truth differ in size");
        for (&p, &g) in pred.iter().zip(gt) {
            let (p, g) = (p as usize, g as usize);
            if p < self.k {
                self.pred[p] += 1;
            }
            if g < self.k {
                self.gt[g] += 1;
            }
            if p == g && p < self.k {
                self.inter[p] += 1;
            }
        }
        self.slices += 1;
    }

    /// The metrics so far.
    pub fn finish(&self) -> SegMetrics {
        let mut iou = Vec::with_capacity(self.k);
        let mut dice = Vec::with_capacity(self.k);
        for c in 0..self.k {
            let (i, p, g) = (self.inter[c] as f64, self.pred[c] as f64, self.gt[c] as f64);
            let union = p + g - i;
            iou.push(if union == 0.0 { 1.0 } else { i / union });
            dice.push(if p + g == 0.0 { 1.0 } else { 2.0 * i / (p + g) });
        }
        SegMetrics {
            miou: iou.iter().sum::<f64>() / self.k as f64,
            mean_dice: dice[1..].iter().sum::<f64>() / (self.k - 1).max(1) as f64,
            iou,
            dice,
            slices: self.slices,
        }
    }
}

/// NumPy's default (linear) percentile of unsorted values.
pub(crate) fn percentile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    let pos = q / 100.0 * (values.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    values[lo] + (values[hi] - values[lo]) * (pos - lo as f64)
}

pub mod case;
pub mod evaluate;
pub use case::{surface_metrics, Grid};
pub use evaluate::{CaseCollector, CaseReport, CaseScore, Convention};

/// What an evaluation says beyond the metrics, to see a collapse coming: the predicted and
/// the true foreground fractions (any class > 0) and the Dice between the two decoders'
/// foreground predictions (how much they agree).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Diagnostics {
    /// Share of pixels predicted as foreground.
    pub predicted_foreground: f64,
    /// Share of pixels that are foreground in the truth.
    pub true_foreground: f64,
    /// Dice between decoder 1's and decoder 2's foreground (1 when both predict none).
    pub decoder_dice: f64,
}

/// Accumulates [`Diagnostics`] over slices.
#[derive(Debug, Clone, Default)]
pub(crate) struct DiagnosticsAccumulator {
    pixels: u64,
    pred_fg: u64,
    true_fg: u64,
    dec_inter: u64,
    dec_sum: u64,
}

impl DiagnosticsAccumulator {
    /// Adds one slice: the averaged prediction, the truth and each decoder's own prediction.
    pub fn add(&mut self, pred: &[u8], gt: &[u8], dec1: &[u8], dec2: &[u8]) {
        let fg = |v: &[u8]| v.iter().filter(|&&c| c > 0).count() as u64;
        self.pixels += pred.len() as u64;
        self.pred_fg += fg(pred);
        self.true_fg += fg(gt);
        self.dec_sum += fg(dec1) + fg(dec2);
        self.dec_inter += dec1
            .iter()
            .zip(dec2)
            .filter(|(&a, &b)| a > 0 && b > 0)
            .count() as u64;
    }
    /// The diagnostics so far.
    pub fn finish(&self) -> Diagnostics {
        let px = self.pixels.max(1) as f64;
        Diagnostics {
            predicted_foreground: self.pred_fg as f64 / px,
            true_foreground: self.true_fg as f64 / px,
            decoder_dice: if self.dec_sum == 0 {
                1.0
            } else {
                2.0 * self.dec_inter as f64 / self.dec_sum as f64
            },
        }
    }
}
