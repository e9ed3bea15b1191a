//! Per-case metrics when the input has labels (MSD `labelsTr/`, KiTS `segmentation.nii.gz`):
//! the label map goes through the model's label map (`preprocess::map_labels`), must lie on
//! the image's grid, and the written mask is scored against it by the evaluator of
//! `dmnet-train eval` ([`crate::metrics::evaluate`]: Dice, IoU, HD95, ASD per foreground
//! class on the source grid, under the convention given), so both report the same numbers for
//! the same model and case. `OUT/metrics.csv` has one row per case and class.
use crate::artifact::sidecar::ModelSidecar;
use crate::metrics::evaluate::{score_classes, CaseScore};
use crate::metrics::{Convention, Grid};
use crate::volume::Volume;
use crate::{Error, Result};
use std::path::Path;

/// Reads `label` (on the grid of `image`), maps it like the training labels and scores
/// `mask` against it. `case` is the output name; `source` the input file relative to `--input`.
pub fn case_metrics(
    (case, source): (&str, &str),
    mask: &[u8],
    image: &Volume,
    label: &Path,
    sidecar: &ModelSidecar,
    convention: Convention,
) -> Result<CaseScore> {
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
    // voxel order i0 + n0·(i1 + n1·i2) is row-major over [n2, n1, n0]
    let [n0, n1, n2] = image.dims;
    let [s0, s1, s2] = image.spacing;
    let grid = Grid::regular([n2, n1, n0], [s2, s1, s0]);
    let distances = image.dims.iter().filter(|&&d| d > 1).count() == 3;
    let classes = score_classes(
        mask,
        &truth,
        &grid,
        k,
        convention,
        distances,
        grid.diagonal(),
    );
    Ok(CaseScore {
        case: case.into(),
        source: source.into(),
        slices: image.dims[sidecar_axis(image, sidecar, case)?],
        complete: true,
        classes,
        shard_grid_dice: Vec::new(),
    })
}

/// The slicing axis the model uses for `image`.
fn sidecar_axis(image: &Volume, sidecar: &ModelSidecar, case: &str) -> Result<usize> {
    sidecar
        .preprocessing
        .config
        .slice_axis
        .voxel_axis(image, case)
}
