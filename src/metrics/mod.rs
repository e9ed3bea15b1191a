//! Segmentation metrics on u8 class masks (pure Rust, no libtorch): per-class IoU and Dice
//! accumulated over all evaluated slices, mIoU = mean IoU over all K classes *including*
//! background (the segmentation literature's definition, as in the paper's tables), and HD95
//! in millimetres from the pixel spacing (95th percentile of the pooled symmetric boundary
//! distances, MedPy's `hd95`; boundaries = mask minus its 4-neighbour erosion, image border
//! counting as outside).
use serde::{Deserialize, Serialize};

/// Per-class pixel counts accumulated over slices.
#[derive(Debug, Clone, Default)]
pub struct MetricsAccumulator {
    k: usize,
    inter: Vec<u64>,
    pred: Vec<u64>,
    gt: Vec<u64>,
    hd95_sum: Vec<f64>,
    hd95_n: Vec<u64>,
    hd95_missing: Vec<u64>,
    slices: u64,
}

/// The metrics of one evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegMetrics {
    /// IoU per class (index = class; 0 = background). A class absent from both prediction and
    /// ground truth everywhere scores 1.
    pub iou: Vec<f64>,
    /// Mean IoU over all classes including background.
    pub miou: f64,
    /// Dice per class.
    pub dice: Vec<f64>,
    /// Mean Dice over the foreground classes (1..K).
    pub mean_dice: f64,
    /// Mean HD95 (mm) per foreground class over slices where both masks contain the class;
    /// `None` when no such slice exists. Index 0 (background) is always `None`.
    pub hd95_mm: Vec<Option<f64>>,
    /// Mean of the per-class HD95 values that exist.
    pub mean_hd95_mm: Option<f64>,
    /// Slices (per foreground class) where exactly one of prediction and truth has the class:
    /// HD95 is undefined there and they are left out of the mean.
    pub hd95_undefined: Vec<u64>,
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
            gt: z.clone(),
            hd95_sum: vec![0.0; num_classes],
            hd95_n: z.clone(),
            hd95_missing: z,
            slices: 0,
        }
    }

    /// Adds one slice: predicted and true class masks (`h×w`, row-major) and the pixel spacing
    /// (mm per row, mm per column). Values ≥ K are ignored.
    pub fn add(&mut self, pred: &[u8], gt: &[u8], h: usize, w: usize, spacing: [f64; 2]) {
        assert_eq!(pred.len(), h * w, "prediction is not {h}×{w}");
        assert_eq!(gt.len(), h * w, "ground truth is not {h}×{w}");
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
        for c in 1..self.k {
            let a: Vec<bool> = pred.iter().map(|&v| v as usize == c).collect();
            let b: Vec<bool> = gt.iter().map(|&v| v as usize == c).collect();
            match hd95(&a, &b, h, w, spacing) {
                Some(d) => {
                    self.hd95_sum[c] += d;
                    self.hd95_n[c] += 1;
                }
                None if a.iter().any(|&x| x) != b.iter().any(|&x| x) => self.hd95_missing[c] += 1,
                None => {}
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
        let hd95_mm: Vec<Option<f64>> = (0..self.k)
            .map(|c| {
                (c > 0 && self.hd95_n[c] > 0).then(|| self.hd95_sum[c] / self.hd95_n[c] as f64)
            })
            .collect();
        let present: Vec<f64> = hd95_mm.iter().flatten().copied().collect();
        SegMetrics {
            miou: iou.iter().sum::<f64>() / self.k as f64,
            mean_dice: dice[1..].iter().sum::<f64>() / (self.k - 1).max(1) as f64,
            iou,
            dice,
            mean_hd95_mm: (!present.is_empty())
                .then(|| present.iter().sum::<f64>() / present.len() as f64),
            hd95_mm,
            hd95_undefined: self.hd95_missing.clone(),
            slices: self.slices,
        }
    }
}

/// Boundary pixels: inside the mask with at least one 4-neighbour outside (or off the image).
pub fn boundary(mask: &[bool], h: usize, w: usize) -> Vec<(usize, usize)> {
    let at = |r: isize, c: isize| -> bool {
        r >= 0
            && c >= 0
            && (r as usize) < h
            && (c as usize) < w
            && mask[r as usize * w + c as usize]
    };
    let mut out = Vec::new();
    for r in 0..h {
        for c in 0..w {
            if !mask[r * w + c] {
                continue;
            }
            let (ri, ci) = (r as isize, c as isize);
            if !(at(ri - 1, ci) && at(ri + 1, ci) && at(ri, ci - 1) && at(ri, ci + 1)) {
                out.push((r, c));
            }
        }
    }
    out
}

fn directed(from: &[(usize, usize)], to: &[(usize, usize)], spacing: [f64; 2]) -> Vec<f64> {
    from.iter()
        .map(|&(r, c)| {
            to.iter()
                .map(|&(r2, c2)| {
                    let dr = (r as f64 - r2 as f64) * spacing[0];
                    let dc = (c as f64 - c2 as f64) * spacing[1];
                    dr * dr + dc * dc
                })
                .fold(f64::INFINITY, f64::min)
                .sqrt()
        })
        .collect()
}

/// NumPy's default (linear) percentile of unsorted values.
pub(crate) fn percentile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).expect("no NaN distances"));
    let pos = q / 100.0 * (values.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    values[lo] + (values[hi] - values[lo]) * (pos - lo as f64)
}

/// HD95 (mm) between two binary masks; `None` when either is empty.
pub fn hd95(a: &[bool], b: &[bool], h: usize, w: usize, spacing: [f64; 2]) -> Option<f64> {
    let (ba, bb) = (boundary(a, h, w), boundary(b, h, w));
    if ba.is_empty() || bb.is_empty() {
        return None;
    }
    let mut d = directed(&ba, &bb, spacing);
    d.extend(directed(&bb, &ba, spacing));
    Some(percentile(&mut d, 95.0))
}

mod case;
#[cfg_attr(not(feature = "torch"), allow(unused_imports))]
pub(crate) use case::CaseMetrics;
pub use case::{CaseAccumulator, CaseSummary};

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
