//! Per-case metrics when the input has labels (MSD `labelsTr/`, KiTS `segmentation.nii.gz`):
//! one row per case and foreground class in `OUT/metrics.csv`, like nnU-Net's
//! `summary.json` "metric_per_case": voxel counts TP, FP, FN, the predicted and reference
//! volumes, Dice = 2TP / (2TP + FP + FN) and IoU = TP / (TP + FP + FN) over the whole volume
//! (NaN when the class is absent from both). The label map goes through the model's label map
//! (`preprocess::map_labels`) and must lie on the image's grid.
use crate::artifact::sidecar::ModelSidecar;
use crate::volume::Volume;
use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// One (case, class) row.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CaseClassMetrics {
    /// Case name.
    pub case: String,
    /// Class index (≥ 1).
    pub class: usize,
    /// Class name from the sidecar.
    pub name: String,
    /// Dice (NaN: class absent from both).
    pub dice: f64,
    /// IoU (NaN: class absent from both).
    pub iou: f64,
    /// True-positive voxels.
    pub tp: u64,
    /// False-positive voxels.
    pub fp: u64,
    /// False-negative voxels.
    pub fn_: u64,
    /// Predicted voxels of the class.
    pub n_pred: u64,
    /// Reference voxels of the class.
    pub n_ref: u64,
}

/// Reads `label` (on the grid of `image`), maps it like the training labels and compares
/// `mask` with it class by class.
pub fn case_metrics(
    case: &str,
    mask: &[u8],
    image: &Volume,
    label: &Path,
    sidecar: &ModelSidecar,
) -> Result<Vec<CaseClassMetrics>> {
    let lab = crate::volume::read_nifti_label(label)?;
    image.check_same_grid(&lab, case, 1e-2)?;
    let k = sidecar.model.num_classes;
    let truth = crate::preprocess::map_labels(&lab, &sidecar.preprocessing.config, k)?;
    if truth.len() != mask.len() {
        return Err(Error::Shape {
            path: label.to_path_buf(),
            case: case.into(),
            expected: vec![mask.len()],
            found: vec![truth.len()],
        });
    }
    Ok((1..k)
        .map(|c| {
            let (mut tp, mut fp, mut fn_) = (0u64, 0u64, 0u64);
            for (&p, &t) in mask.iter().zip(&truth) {
                let (p, t) = (p as usize == c, t as usize == c);
                tp += u64::from(p && t);
                fp += u64::from(p && !t);
                fn_ += u64::from(!p && t);
            }
            let denom = (tp + fp + fn_) as f64;
            let nan_if_empty = |v: f64| if denom == 0.0 { f64::NAN } else { v };
            CaseClassMetrics {
                case: case.into(),
                class: c,
                name: sidecar.class_names.get(c).cloned().unwrap_or_default(),
                dice: nan_if_empty(2.0 * tp as f64 / (denom + tp as f64)),
                iou: nan_if_empty(tp as f64 / denom),
                tp,
                fp,
                fn_,
                n_pred: tp + fp,
                n_ref: tp + fn_,
            }
        })
        .collect())
}

/// Writes the rows as CSV (`case,class,name,dice,iou,tp,fp,fn,n_pred,n_ref`).
pub(crate) fn write_csv(path: &Path, rows: &[CaseClassMetrics]) -> Result<PathBuf> {
    let err = |e: csv::Error| Error::invalid(path, format!("writing CSV: {e}"));
    let mut w = csv::Writer::from_path(path).map_err(err)?;
    w.write_record([
        "case", "class", "name", "dice", "iou", "tp", "fp", "fn", "n_pred", "n_ref",
    ])
    .map_err(err)?;
    for r in rows {
        w.write_record([
            r.case.clone(),
            r.class.to_string(),
            r.name.clone(),
            format!("{:.6}", r.dice),
            format!("{:.6}", r.iou),
            r.tp.to_string(),
            r.fp.to_string(),
            r.fn_.to_string(),
            r.n_pred.to_string(),
            r.n_ref.to_string(),
        ])
        .map_err(err)?;
    }
    w.flush().map_err(|e| Error::io(path, e))?;
    Ok(path.to_path_buf())
}
