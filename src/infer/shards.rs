//! Shard inference: every slice of a shard folder (`schemas/shard-v3`) through the model; the
//! `labels` output (argmax at S×S, the shards' own grid) goes to `predictions.parquet`
//! (written by [`crate::shard::predictions`]: patient_key, source_path, split, slice_index,
//! height, width, mask) and, where the shards carry masks, `metrics.json` holds what
//! `dmnet-train eval` reports: the slice-pooled metrics (IoU/mIoU, Dice) and the per-case
//! metrics of the same evaluator (`metrics::evaluate`, source grid, convention).
use super::engine::SliceRunner;
use crate::artifact::sidecar::ModelSidecar;
use crate::metrics::{MetricsAccumulator, SegMetrics};
use crate::preprocess::resize_bilinear;
use crate::shard::schema::SliceRecord;
use crate::shard::Split;
use crate::{Error, Result};
use std::path::{Path, PathBuf};

pub(crate) use crate::shard::predictions::{write_predictions, Prediction};

/// Argmax over classes of `K × S × S` probabilities (first maximum wins, like `argmax`).
pub fn argmax(p: &[f32], k: usize, n: usize) -> Vec<u8> {
    crate::metrics::evaluate::argmax_planes(p, k, n)
}

/// A shard row's image at the model size S (bilinear, half-pixel, as `dmnet-train` resizes).
fn image_at(r: &SliceRecord, c: usize, s: usize) -> Vec<f32> {
    let (h, w) = (r.height as usize, r.width as usize);
    if (h, w) == (s, s) {
        return r.image.clone();
    }
    (0..c)
        .flat_map(|k| resize_bilinear(&r.image[k * h * w..(k + 1) * h * w], h, w, s, s))
        .collect()
}

/// Runs a batch of shard rows (with test-time augmentation `tta`); checks channels against the
/// model (naming `dir`) and resizes slices whose size differs from the model's S. Returns the
/// predictions and the class probabilities (`K × S × S` per row, one after the other).
pub(crate) fn predict_rows(
    model: &mut dyn SliceRunner,
    sidecar: &ModelSidecar,
    rows: &[SliceRecord],
    dir: &Path,
    tta: super::tta::Tta,
) -> Result<(Vec<Prediction>, Vec<f32>)> {
    let (c, s, k) = (
        sidecar.model.in_channels,
        sidecar.size(),
        sidecar.model.num_classes,
    );
    let mut x = Vec::with_capacity(rows.len() * c * s * s);
    for r in rows {
        if r.image.len() != c * r.height as usize * r.width as usize {
            return Err(Error::Shape {
                path: dir.to_path_buf(),
                case: format!(
                    "{} slice {} (model channels: {})",
                    r.patient_key,
                    r.slice_index,
                    sidecar.channel_names.join(", ")
                ),
                expected: vec![c, s, s],
                found: vec![r.channel_names.len(), r.height as usize, r.width as usize],
            });
        }
        x.extend(image_at(r, c, s));
    }
    model.check_input(&[rows.len(), c, s, s], dir)?;
    let p = super::tta::predict(model, x, [rows.len(), c, s, s], k, tta)?;
    let preds = rows
        .iter()
        .zip(p.chunks_exact(k * s * s))
        .map(|(r, p)| Prediction {
            patient_key: r.patient_key.clone(),
            source_path: r.source_path.clone(),
            split: r.split,
            slice_index: r.slice_index,
            height: s as i32,
            width: s as i32,
            mask: argmax(p, k, s * s),
        })
        .collect();
    Ok((preds, p))
}

/// Accumulates metrics for the rows that carry a mask.
pub(crate) fn add_metrics(
    acc: &mut MetricsAccumulator,
    rows: &[SliceRecord],
    preds: &[Prediction],
) {
    for (r, p) in rows.iter().zip(preds) {
        if let Some(gt) = &r.mask {
            acc.add(&p.mask, gt);
        }
    }
}

/// The metrics file of a shard run.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct ShardMetrics {
    /// The shard folder.
    pub shards: PathBuf,
    /// The model.
    pub model: PathBuf,
    /// Split filter applied (`None` = all rows).
    pub split: Option<Split>,
    /// The slice-pooled metrics over every row with a mask (shard grid).
    #[serde(flatten)]
    pub metrics: SegMetrics,
    /// The per-case metrics (`dmnet-train eval`'s evaluator).
    pub cases: crate::metrics::CaseReport,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_takes_the_first_maximum_per_pixel() {
        // K = 3 classes, 2 pixels: pixel 0 → class 2, pixel 1 tie between 0 and 1 → 0.
        let p = [0.1, 0.4, 0.2, 0.4, 0.7, 0.2];
        assert_eq!(argmax(&p, 3, 2), [2, 0]);
    }
}
