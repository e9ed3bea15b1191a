//! Conformance of a read against a reference converter (dcm2niix): two volumes of the same
//! scan, possibly stored with another voxel order (dcm2niix writes DICOM rows bottom-up and may
//! reverse the slice order), are matched through their affines, then voxels, spacing and world
//! coordinates are compared. Used by `scripts/dcm2niix_conformance.sh` and the tests.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::Volume;
use crate::{Error, Result};

/// How a volume agrees with a reference volume of the same scan.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// For each of our voxel axes: (reference axis, flipped).
    pub axis_map: [(usize, bool); 3],
    /// Largest distance (mm) between the world coordinates both affines give one voxel
    /// (checked at the 8 corners).
    pub world_mm: f64,
    /// Largest difference of the voxel spacings (mm).
    pub spacing_mm: f64,
    /// Largest absolute difference of corresponding voxel values.
    pub max_abs_diff: f64,
    /// Voxels whose values differ by more than the tolerance.
    pub differing: usize,
    /// Number of voxels compared.
    pub voxels: usize,
}

impl Comparison {
    /// Identical voxels and world coordinates within `mm`.
    pub fn identical(&self, mm: f64) -> bool {
        self.differing == 0 && self.world_mm <= mm && self.spacing_mm <= mm
    }
}

/// The inverse of an affine `[R | t]` (row-major 4×4), or `None` when singular.
fn invert(a: &[[f64; 4]; 4]) -> Option<[[f64; 4]; 4]> {
    let m = |r: usize, c: usize| a[r][c];
    let det = m(0, 0) * (m(1, 1) * m(2, 2) - m(1, 2) * m(2, 1))
        - m(0, 1) * (m(1, 0) * m(2, 2) - m(1, 2) * m(2, 0))
        + m(0, 2) * (m(1, 0) * m(2, 1) - m(1, 1) * m(2, 0));
    if !det.is_finite() || det.abs() < 1e-12 {
        return None;
    }
    let mut inv = [[0.0; 4]; 4];
    for (r, row) in inv.iter_mut().enumerate().take(3) {
        for (c, v) in row.iter_mut().enumerate().take(3) {
            // cofactor transpose
            let (r1, r2) = ((c + 1) % 3, (c + 2) % 3);
            let (c1, c2) = ((r + 1) % 3, (r + 2) % 3);
            *v = (m(r1, c1) * m(r2, c2) - m(r1, c2) * m(r2, c1)) / det;
        }
    }
    for row in inv.iter_mut().take(3) {
        row[3] = -(0..3).map(|c| row[c] * a[c][3]).sum::<f64>();
    }
    inv[3][3] = 1.0;
    Some(inv)
}

fn apply(a: &[[f64; 4]; 4], p: [f64; 3]) -> [f64; 3] {
    std::array::from_fn(|r| a[r][0] * p[0] + a[r][1] * p[1] + a[r][2] * p[2] + a[r][3])
}

/// Compares `ours` with `reference` (values within `tol` count as equal). Errors when the two
/// grids are not the same up to an axis permutation and flips (naming both sources).
pub fn compare_volumes(ours: &Volume, reference: &Volume, tol: f64) -> Result<Comparison> {
    let mismatch = |why: String| {
        Error::invalid(
            &ours.source,
            format!("grid differs from {}: {why}", reference.source.display()),
        )
    };
    let inv = invert(&reference.affine).ok_or_else(|| mismatch("singular affine".into()))?;
    // m = inv(ref) · ours: our voxel index → reference voxel index
    let mut m = [[0.0; 4]; 4];
    for (r, row) in m.iter_mut().enumerate() {
        for (c, v) in row.iter_mut().enumerate() {
            *v = (0..4).map(|k| inv[r][k] * ours.affine[k][c]).sum();
        }
    }
    let mut axis_map = [(0usize, false); 3];
    for (a, slot) in axis_map.iter_mut().enumerate() {
        let b = (0..3)
            .max_by(|&i, &j| m[i][a].abs().total_cmp(&m[j][a].abs()))
            .unwrap_or(a);
        if (m[b][a].abs() - 1.0).abs() > 1e-2 || reference.dims[b] != ours.dims[a] {
            return Err(mismatch(format!(
                "our axis {a} ({} voxels) maps to reference axis {b} ({} voxels) with scale {:.4}",
                ours.dims[a], reference.dims[b], m[b][a]
            )));
        }
        *slot = (b, m[b][a] < 0.0);
    }
    let map = |i: [usize; 3]| -> [usize; 3] {
        let mut out = [0usize; 3];
        for (a, &(b, flip)) in axis_map.iter().enumerate() {
            out[b] = if flip { ours.dims[a] - 1 - i[a] } else { i[a] };
        }
        out
    };
    let mut world_mm = 0f64;
    for corner in 0..8 {
        let i: [usize; 3] = std::array::from_fn(|a| {
            if corner >> a & 1 == 1 {
                ours.dims[a] - 1
            } else {
                0
            }
        });
        let j = map(i);
        let w0 = apply(&ours.affine, i.map(|v| v as f64));
        let w1 = apply(&reference.affine, j.map(|v| v as f64));
        world_mm = world_mm.max(super::norm([w0[0] - w1[0], w0[1] - w1[1], w0[2] - w1[2]]));
    }
    let spacing_mm = (0..3)
        .map(|a| (ours.spacing[a] - reference.spacing[axis_map[a].0]).abs())
        .fold(0.0, f64::max);
    let (mut max_abs_diff, mut differing) = (0f64, 0usize);
    let [n0, n1, n2] = ours.dims;
    for k in 0..n2 {
        for j in 0..n1 {
            for i in 0..n0 {
                let [a, b, c] = map([i, j, k]);
                let (x, y) = (
                    ours.data[ours.index(i, j, k)] as f64,
                    reference.data[reference.index(a, b, c)] as f64,
                );
                let d = (x - y).abs();
                max_abs_diff = max_abs_diff.max(d);
                differing += (d > tol) as usize;
            }
        }
    }
    Ok(Comparison {
        axis_map,
        world_mm,
        spacing_mm,
        max_abs_diff,
        differing,
        voxels: ours.len(),
    })
}

/// Runs Debian's `dcm2niix` on one folder (`-x i`: no crop or rotation, `-p n`: the Rescale
/// values, as dmnet reads them; `-z n`; files named by SeriesInstanceUID) into `out`, and
/// returns the NIfTI files it wrote per SeriesInstanceUID.
pub fn run_dcm2niix(
    dcm2niix: &Path,
    dir: &Path,
    out: &Path,
) -> Result<BTreeMap<String, Vec<PathBuf>>> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let o = std::process::Command::new(dcm2niix)
        .args(["-x", "i", "-p", "n", "-z", "n", "-b", "n", "-f", "%j", "-o"])
        .arg(out)
        .arg(dir)
        .output()
        .map_err(|e| Error::io(dcm2niix, e))?;
    if !o.status.success() {
        return Err(Error::invalid(
            dir,
            format!(
                "dcm2niix failed ({}): {}",
                o.status,
                String::from_utf8_lossy(&o.stderr)
            ),
        ));
    }
    let mut by_uid: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for e in std::fs::read_dir(out).map_err(|e| Error::io(out, e))? {
        let p = e.map_err(|e| Error::io(out, e))?.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if let Some(stem) = name.strip_suffix(".nii") {
            let uid = stem.split('_').next().unwrap_or(stem).to_string();
            by_uid.entry(uid).or_default().push(p);
        }
    }
    by_uid.values_mut().for_each(|v| v.sort());
    Ok(by_uid)
}
