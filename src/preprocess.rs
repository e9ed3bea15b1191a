//! Preprocessing shared by `dmnet-prep` (shards) and `dmnet-infer` (whole volumes), torch-free:
//! intensity normalisation (CT window then z-score; MRI z-score over non-zero voxels; domain
//! notes §3), label mapping (e.g. BraTS 1/2/3/4 → tumour = 1, paper §3), the slicing axis, slice
//! extraction with the shard slice convention (`docs/contracts.md`), and the exact in-plane
//! resize (bilinear for images, nearest for masks) plus its inverse for probability maps.
//!
//! # Resize formula (half-pixel centres, like PyTorch `align_corners=false`)
//! For a source extent `n` and target extent `m`, output index `o` samples the source coordinate
//! `x = (o + 0.5) · n / m − 0.5`, clamped to `[0, n − 1]`. Bilinear: `x0 = ⌊x⌋`,
//! `x1 = min(x0 + 1, n − 1)`, weight `x − x0` on `x1`, separably in rows then columns.
//! Nearest (masks): source index `min(⌊(o + 0.5) · n / m⌋, n − 1)` (PyTorch `nearest-exact`).
//! Inference resizes the S×S probability maps back to the original H×W with the same bilinear
//! formula ([`resize_bilinear`] with the sizes swapped) and takes the argmax there.
//!
//! # Slicing axis ([`SliceAxis`], one per dataset)
//! `slice_axis = "axial" | "coronal" | "sagittal"` slices every volume perpendicular to that
//! world axis (S–I, A–P, L–R): through the voxel axis whose direction is closest to it, which
//! must be within 41° (|cos| ≥ 0.75), else the volume is refused by name. `"auto"` is resolved
//! once for a whole dataset by `dmnet-prep ingest` (the orientation most volumes' own
//! through-plane axis has, logged) and saved resolved, so prep and inference slice alike.
//! A volume's own through-plane axis ([`through_plane_axis`]): if the largest voxel spacing
//! exceeds the smallest by more than 10 %, the axis with the largest spacing (ties → the axis
//! closer to world S–I); otherwise (near-isotropic) the axis closest to S–I. An unresolved
//! `"auto"` (old configs) slices each volume through its own through-plane axis; a number
//! `0 | 1 | 2` (old configs) forces a voxel axis.
use serde::{Deserialize, Serialize};

use crate::volume::Volume;
use crate::{Error, Result};

/// Intensity normalisation of one channel.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Normalization {
    /// Decided once per dataset by `dmnet-prep ingest` from the studies' modality (DICOM
    /// Modality, the MSD/nnU-Net `dataset.json` channel names, KiTS = CT): `ct` when every
    /// study is CT, else `mri`; logged and saved resolved, so inference repeats it.
    #[default]
    Auto,
    /// CT: clip to `ct_window` (HU), then z-score with the clipped volume's mean and std.
    Ct,
    /// MRI: z-score with mean/std of the non-zero voxels; zero voxels (background) stay 0.
    Mri,
    /// z-score over all voxels.
    Zscore,
    /// No change.
    None,
}

/// The preprocessing part of the prep config (`[prep.preprocess]` in a pipeline file); saved
/// with the shards and with the model so inference repeats it exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PreprocessConfig {
    /// Channel names in `image` order. For `brats` they are file suffixes (`t1`, `t1ce`, `t2`,
    /// `flair`); for `msd` / `manifest` / `kits19` / `dicom` the names of the input channels.
    /// Empty = every channel the layout provides, in its order.
    pub channels: Vec<String>,
    /// Intensity normalisation.
    pub normalization: Normalization,
    /// HU window `[lo, hi]` for `normalization = "ct"`.
    pub ct_window: [f32; 2],
    /// Source label value → class index (as strings in TOML: `{ "4" = 1 }`). Empty = identity.
    /// With a map, every non-zero source value must be listed.
    pub label_map: std::collections::BTreeMap<String, u8>,
    /// Class names, index = class (0 = background). Empty = taken from the dataset.
    pub label_names: Vec<String>,
    /// In-plane output size S (slices are S×S).
    pub size: usize,
    /// Slicing orientation for the whole dataset (see module docs).
    pub slice_axis: SliceAxis,
}

impl Default for PreprocessConfig {
    fn default() -> Self {
        PreprocessConfig {
            channels: Vec::new(),
            normalization: Normalization::Auto,
            ct_window: [-79.0, 304.0],
            label_map: Default::default(),
            label_names: Vec::new(),
            size: 224,
            slice_axis: SliceAxis::Auto,
        }
    }
}

/// The slicing orientation of a dataset (`slice_axis` in `[prep.preprocess]`). Serialised as
/// `"auto"`, `"axial"`, `"coronal"`, `"sagittal"`, or a voxel axis number (older configs;
/// `null` reads as `"auto"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "Option<SliceAxisRepr>", into = "SliceAxisRepr")]
pub enum SliceAxis {
    /// Decided for the whole dataset at prep time (see module docs).
    #[default]
    Auto,
    /// Perpendicular to world S–I.
    Axial,
    /// Perpendicular to world A–P.
    Coronal,
    /// Perpendicular to world L–R.
    Sagittal,
    /// A fixed voxel axis 0, 1 or 2 (older configs).
    Voxel(usize),
}

/// How a [`SliceAxis`] is written in TOML / JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum SliceAxisRepr {
    Name(String),
    Index(usize),
}

impl TryFrom<Option<SliceAxisRepr>> for SliceAxis {
    type Error = String;
    fn try_from(v: Option<SliceAxisRepr>) -> std::result::Result<Self, String> {
        Ok(match v {
            None => SliceAxis::Auto,
            Some(SliceAxisRepr::Index(i)) if i < 3 => SliceAxis::Voxel(i),
            Some(SliceAxisRepr::Index(i)) => {
                return Err(format!("slice_axis {i} is not 0, 1 or 2"))
            }
            Some(SliceAxisRepr::Name(n)) => match n.to_ascii_lowercase().as_str() {
                "auto" => SliceAxis::Auto,
                "axial" => SliceAxis::Axial,
                "coronal" => SliceAxis::Coronal,
                "sagittal" => SliceAxis::Sagittal,
                _ => {
                    return Err(format!(
                        "slice_axis {n:?} is not \"axial\", \"sagittal\", \"coronal\" or \"auto\""
                    ))
                }
            },
        })
    }
}

impl From<SliceAxis> for SliceAxisRepr {
    fn from(a: SliceAxis) -> Self {
        match a {
            SliceAxis::Voxel(i) => SliceAxisRepr::Index(i),
            named => SliceAxisRepr::Name(named.to_string()),
        }
    }
}

impl std::fmt::Display for SliceAxis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SliceAxis::Auto => f.write_str("auto"),
            SliceAxis::Axial => f.write_str("axial"),
            SliceAxis::Coronal => f.write_str("coronal"),
            SliceAxis::Sagittal => f.write_str("sagittal"),
            SliceAxis::Voxel(i) => write!(f, "voxel axis {i}"),
        }
    }
}

impl SliceAxis {
    /// The world axis (0 = L–R, 1 = A–P, 2 = S–I) a named orientation is perpendicular to.
    pub(crate) fn world_axis(self) -> Option<usize> {
        match self {
            SliceAxis::Sagittal => Some(0),
            SliceAxis::Coronal => Some(1),
            SliceAxis::Axial => Some(2),
            _ => None,
        }
    }

    /// The orientation perpendicular to world axis `w` (0 = L–R, 1 = A–P, else S–I).
    pub(crate) fn from_world_axis(w: usize) -> SliceAxis {
        match w {
            0 => SliceAxis::Sagittal,
            1 => SliceAxis::Coronal,
            _ => SliceAxis::Axial,
        }
    }

    /// The orientation of slices through voxel axis `axis` of `vol`: the world axis its
    /// direction is closest to.
    pub(crate) fn of_voxel_axis(vol: &Volume, axis: usize) -> SliceAxis {
        let d = vol.axis_direction(axis);
        let w = (0..3)
            .max_by(|&a, &b| d[a].abs().total_cmp(&d[b].abs()))
            .unwrap_or(2);
        SliceAxis::from_world_axis(w)
    }

    /// The voxel axis of `vol` to slice through; `case` names the volume in errors.
    pub(crate) fn voxel_axis(self, vol: &Volume, case: &str) -> Result<usize> {
        match self {
            SliceAxis::Auto => Ok(through_plane_axis(vol)),
            SliceAxis::Voxel(a) if a < 3 => Ok(a),
            SliceAxis::Voxel(a) => Err(Error::Config {
                path: "<pipeline>".into(),
                msg: format!("slice_axis {a} is not 0, 1 or 2"),
            }),
            named => {
                let w = named.world_axis().unwrap_or(2);
                let cos = |a: usize| vol.axis_direction(a)[w].abs();
                let best = (0..3)
                    .max_by(|&a, &b| cos(a).total_cmp(&cos(b)))
                    .unwrap_or(2);
                if cos(best) >= 0.75 {
                    Ok(best)
                } else {
                    Err(Error::invalid(
                        &vol.source,
                        format!(
                            "case {case}: cannot slice {named}: no voxel axis is within 41° of the {} axis (closest: axis {best}, {:.0}° off); set slice_axis to another orientation",
                            ["L-R", "A-P", "S-I"][w],
                            cos(best).clamp(0.0, 1.0).acos().to_degrees()
                        ),
                    ))
                }
            }
        }
    }
}

/// Normalises one channel in place per `norm` (see [`Normalization`]).
pub(crate) fn normalize(data: &mut [f32], norm: Normalization, ct_window: [f32; 2]) {
    match norm {
        Normalization::None => {}
        Normalization::Ct => {
            let [lo, hi] = ct_window;
            data.iter_mut().for_each(|v| *v = v.clamp(lo, hi));
            let (m, s) = mean_std(data.iter().copied());
            data.iter_mut()
                .for_each(|v| *v = ((*v as f64 - m) / s) as f32);
        }
        Normalization::Zscore => {
            let (m, s) = mean_std(data.iter().copied());
            data.iter_mut()
                .for_each(|v| *v = ((*v as f64 - m) / s) as f32);
        }
        // an unresolved `auto` (a config written by hand for inference) is MRI's, the old default
        Normalization::Mri | Normalization::Auto => {
            let (m, s) = mean_std(data.iter().copied().filter(|&v| v != 0.0));
            data.iter_mut()
                .filter(|v| **v != 0.0)
                .for_each(|v| *v = ((*v as f64 - m) / s) as f32);
        }
    }
}

/// Mean and standard deviation (population; std < 1e-8 → 1) in f64.
fn mean_std(it: impl Iterator<Item = f32>) -> (f64, f64) {
    let (mut n, mut s, mut ss) = (0f64, 0f64, 0f64);
    for v in it {
        let v = v as f64;
        n += 1.0;
        s += v;
        ss += v * v;
    }
    if n == 0.0 {
        return (0.0, 1.0);
    }
    let m = s / n;
    let var = (ss / n - m * m).max(0.0);
    let sd = var.sqrt();
    (m, if sd < 1e-8 { 1.0 } else { sd })
}

/// Maps a label volume's values to class indices with `cfg.label_map` (identity when empty).
/// Errors (naming `labels.source`) for an unmapped non-zero value or a class ≥ `num_classes`.
pub(crate) fn map_labels(
    labels: &Volume,
    cfg: &PreprocessConfig,
    num_classes: usize,
) -> Result<Vec<u8>> {
    let mut lut = vec![None; 65536];
    lut[0] = Some(0u8);
    if cfg.label_map.is_empty() {
        for (c, slot) in lut.iter_mut().enumerate().take(num_classes.min(256)) {
            *slot = Some(c as u8);
        }
    } else {
        for (k, &v) in &cfg.label_map {
            let k: usize = k.trim().parse().map_err(|_| Error::Config {
                path: "<pipeline>".into(),
                msg: format!("label_map key {k:?} is not a whole number"),
            })?;
            if k < lut.len() {
                lut[k] = Some(v);
            }
        }
    }
    let mut out = Vec::with_capacity(labels.len());
    for &x in &labels.data {
        match lut[x as usize] {
            Some(c) if (c as usize) < num_classes => out.push(c),
            _ => {
                return Err(Error::invalid(
                    &labels.source,
                    format!(
                        "label value {x} is not mapped to a class 0..{num_classes} (set label_map / label_names in the pipeline)"
                    ),
                ))
            }
        }
    }
    Ok(out)
}

/// The through-plane (slicing) axis of a volume; see the module docs for the rule.
pub(crate) fn through_plane_axis(vol: &Volume) -> usize {
    let sp = vol.spacing;
    let (smin, smax) = (
        sp.iter().cloned().fold(f64::INFINITY, f64::min),
        sp.iter().cloned().fold(0.0, f64::max),
    );
    let si = |a: usize| vol.axis_direction(a)[2].abs();
    let anisotropic = smax > 1.1 * smin;
    (0..3)
        .filter(|&a| !anisotropic || sp[a] > smax / 1.1)
        .max_by(|&a, &b| si(a).total_cmp(&si(b)).then(b.cmp(&a)))
        .unwrap_or(2)
}

/// The two in-plane axes `(p, q)`, `p < q`, for slicing axis `axis`.
pub(crate) fn in_plane_axes(axis: usize) -> (usize, usize) {
    match axis {
        0 => (1, 2),
        1 => (0, 2),
        _ => (0, 1),
    }
}

/// Slice `k` through `axis` of a volume with `dims` (index `i0 + n0·(i1 + n1·i2)`), as a
/// row-major `n_p × n_q` array: pixel (r, c) = voxel with index r on axis p, c on axis q.
pub fn extract_slice<T: Copy>(data: &[T], dims: [usize; 3], axis: usize, k: usize) -> Vec<T> {
    let (p, q) = in_plane_axes(axis);
    let (h, w) = (dims[p], dims[q]);
    let stride = [1, dims[0], dims[0] * dims[1]];
    let base = k * stride[axis];
    let mut out = Vec::with_capacity(h * w);
    for r in 0..h {
        for c in 0..w {
            out.push(data[base + r * stride[p] + c * stride[q]]);
        }
    }
    out
}

/// Writes a row-major `n_p × n_q` slice back into slice `k` through `axis` (inverse of
/// [`extract_slice`]); used by inference to assemble a mask volume.
pub(crate) fn insert_slice<T: Copy>(
    data: &mut [T],
    dims: [usize; 3],
    axis: usize,
    k: usize,
    s: &[T],
) {
    let (p, q) = in_plane_axes(axis);
    let (h, w) = (dims[p], dims[q]);
    let stride = [1, dims[0], dims[0] * dims[1]];
    let base = k * stride[axis];
    for r in 0..h {
        for c in 0..w {
            data[base + r * stride[p] + c * stride[q]] = s[r * w + c];
        }
    }
}

/// Source sample of output index `o` (half-pixel centres), clamped: `(x0, x1, weight of x1)`.
fn linear_tap(o: usize, n: usize, m: usize) -> (usize, usize, f32) {
    let x = ((o as f64 + 0.5) * n as f64 / m as f64 - 0.5).clamp(0.0, (n - 1) as f64);
    let x0 = x.floor() as usize;
    let x1 = (x0 + 1).min(n - 1);
    (x0, x1, (x - x0 as f64) as f32)
}

/// Bilinear resize of a row-major `h × w` plane to `oh × ow` (formula in the module docs).
/// Also the inverse for probability maps: `resize_bilinear(prob, S, S, H, W)`.
pub(crate) fn resize_bilinear(src: &[f32], h: usize, w: usize, oh: usize, ow: usize) -> Vec<f32> {
    assert_eq!(src.len(), h * w, "resize_bilinear: {h}x{w} plane expected");
    if (h, w) == (oh, ow) {
        return src.to_vec();
    }
    let cols: Vec<_> = (0..ow).map(|o| linear_tap(o, w, ow)).collect();
    let mut out = Vec::with_capacity(oh * ow);
    for o in 0..oh {
        let (y0, y1, wy) = linear_tap(o, h, oh);
        let (r0, r1) = (&src[y0 * w..(y0 + 1) * w], &src[y1 * w..(y1 + 1) * w]);
        for &(x0, x1, wx) in &cols {
            let top = r0[x0] * (1.0 - wx) + r0[x1] * wx;
            let bot = r1[x0] * (1.0 - wx) + r1[x1] * wx;
            out.push(top * (1.0 - wy) + bot * wy);
        }
    }
    out
}

/// Nearest resize (masks) of a row-major `h × w` plane to `oh × ow`: source index
/// `min(⌊(o + 0.5)·n/m⌋, n − 1)`.
pub(crate) fn resize_nearest<T: Copy>(
    src: &[T],
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
) -> Vec<T> {
    assert_eq!(src.len(), h * w, "resize_nearest: {h}x{w} plane expected");
    let idx = |o: usize, n: usize, m: usize| {
        (((o as f64 + 0.5) * n as f64 / m as f64).floor() as usize).min(n - 1)
    };
    let cols: Vec<usize> = (0..ow).map(|o| idx(o, w, ow)).collect();
    let mut out = Vec::with_capacity(oh * ow);
    for o in 0..oh {
        let row = &src[idx(o, h, oh) * w..];
        out.extend(cols.iter().map(|&c| row[c]));
    }
    out
}

/// A normalised multi-channel volume ready to be sliced.
#[derive(Debug, Clone)]
pub struct PreparedVolume {
    /// Normalised channels, each in the volume's voxel order.
    pub channels: Vec<Vec<f32>>,
    /// Channel names (order of `channels`).
    pub channel_names: Vec<String>,
    /// Geometry of the first channel (all channels share the grid).
    pub geometry: Volume,
    /// The slicing axis.
    pub axis: usize,
}

/// Checks the channels share one grid (dims; affine within 0.01 mm), rejects NaN/Inf, and
/// normalises them; `case` names the study in errors. The first channel's [`Volume`] (with
/// its data emptied) is kept as geometry.
pub fn prepare_volume(
    mut channels: Vec<Volume>,
    names: Vec<String>,
    cfg: &PreprocessConfig,
    case: &str,
) -> Result<PreparedVolume> {
    let first = channels
        .first()
        .ok_or_else(|| Error::invalid(case, "no image channel"))?
        .clone();
    let mut data = Vec::with_capacity(channels.len());
    for v in channels.iter_mut() {
        first.check_same_grid(v, case, 0.01)?;
        v.check_finite()?;
        let mut d = std::mem::take(&mut v.data);
        normalize(&mut d, cfg.normalization, cfg.ct_window);
        data.push(d);
    }
    let mut geometry = first;
    geometry.data = Vec::new();
    if geometry.is_empty() {
        return Err(Error::invalid(
            &geometry.source,
            format!("case {case}: volume dims {:?} hold no voxel", geometry.dims),
        ));
    }
    let axis = cfg.slice_axis.voxel_axis(&geometry, case)?;
    Ok(PreparedVolume {
        channels: data,
        channel_names: names,
        geometry,
        axis,
    })
}

impl PreparedVolume {
    /// Number of slices along the slicing axis.
    pub fn num_slices(&self) -> usize {
        self.geometry.dims[self.axis]
    }
    /// In-plane size `(n_p, n_q)` before resizing.
    pub fn plane(&self) -> (usize, usize) {
        let (p, q) = in_plane_axes(self.axis);
        (self.geometry.dims[p], self.geometry.dims[q])
    }
    /// Slice `k` of every channel, bilinearly resized to `s × s`, stacked `C × s × s`.
    pub fn slice_image(&self, k: usize, s: usize) -> Vec<f32> {
        let (h, w) = self.plane();
        let mut out = Vec::with_capacity(self.channels.len() * s * s);
        for ch in &self.channels {
            let plane = extract_slice(ch, self.geometry.dims, self.axis, k);
            out.extend(resize_bilinear(&plane, h, w, s, s));
        }
        out
    }
    /// Slice `k` of a class-index mask on this grid, nearest-resized to `s × s`.
    pub fn slice_mask(&self, mask: &[u8], k: usize, s: usize) -> Vec<u8> {
        let (h, w) = self.plane();
        let plane = extract_slice(mask, self.geometry.dims, self.axis, k);
        resize_nearest(&plane, h, w, s, s)
    }
    /// World position (mm) of slice `k`'s centre along the unit slice normal
    /// `n = col_p × col_q` (oriented so that it points along increasing `k`).
    pub fn slice_position(&self, k: usize) -> f64 {
        let a = &self.geometry.affine;
        let (p, q) = in_plane_axes(self.axis);
        let col = |j: usize| [a[0][j], a[1][j], a[2][j]];
        let (cp, cq, ca) = (col(p), col(q), col(self.axis));
        let mut n = [
            cp[1] * cq[2] - cp[2] * cq[1],
            cp[2] * cq[0] - cp[0] * cq[2],
            cp[0] * cq[1] - cp[1] * cq[0],
        ];
        let len = crate::volume::norm(n).max(1e-12);
        let sign = if n[0] * ca[0] + n[1] * ca[1] + n[2] * ca[2] < 0.0 {
            -1.0
        } else {
            1.0
        };
        n = n.map(|v| sign * v / len);
        let mut idx = [0.0; 3];
        idx[p] = (self.geometry.dims[p] as f64 - 1.0) / 2.0;
        idx[q] = (self.geometry.dims[q] as f64 - 1.0) / 2.0;
        idx[self.axis] = k as f64;
        (0..3)
            .map(|r| {
                let w = a[r][0] * idx[0] + a[r][1] * idx[1] + a[r][2] * idx[2] + a[r][3];
                w * n[r]
            })
            .sum()
    }
    /// Pixel spacing (mm) of a slice resized to `s × s`: `[sp_p·n_p/s, sp_q·n_q/s]`.
    pub fn pixel_spacing(&self, s: usize) -> [f64; 2] {
        let (p, q) = in_plane_axes(self.axis);
        let sp = self.geometry.spacing;
        let (h, w) = self.plane();
        [sp[p] * h as f64 / s as f64, sp[q] * w as f64 / s as f64]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bilinear_matches_half_pixel_formula() {
        // 2x2 → 4x4, align_corners=false: PyTorch gives [1, 1.25, 1.75, 2] along a row 1..2.
        let src = [1.0, 2.0, 3.0, 4.0];
        let out = resize_bilinear(&src, 2, 2, 4, 4);
        let row0: Vec<f32> = out[..4].to_vec();
        assert_eq!(row0, vec![1.0, 1.25, 1.75, 2.0]);
        assert_eq!(out[12..].to_vec(), vec![3.0, 3.25, 3.75, 4.0]);
        let back = resize_bilinear(&out, 4, 4, 2, 2);
        assert_eq!(back, vec![1.375, 2.125, 2.875, 3.625]);
    }

    #[test]
    fn nearest_and_slices_round_trip() {
        let m: Vec<u8> = (0..6).collect();
        assert_eq!(resize_nearest(&m, 2, 3, 2, 3), m);
        assert_eq!(resize_nearest(&m, 2, 3, 4, 6)[..6], [0, 0, 1, 1, 2, 2]);
        let dims = [2, 3, 4];
        let vol: Vec<u32> = (0..24).collect();
        for axis in 0..3 {
            let mut back = vec![0u32; 24];
            for k in 0..dims[axis] {
                let s = extract_slice(&vol, dims, axis, k);
                insert_slice(&mut back, dims, axis, k, &s);
            }
            assert_eq!(back, vol);
        }
        // axis 2, k = 1: pixel (r, c) = voxel (r, c, 1) = r + 2c + 6
        assert_eq!(extract_slice(&vol, dims, 2, 1), vec![6, 8, 10, 7, 9, 11]);
    }

    #[test]
    fn slice_axis_reads_names_numbers_and_null() {
        let read = |j: &str| serde_json::from_str::<SliceAxis>(j);
        assert_eq!(read("\"axial\"").unwrap(), SliceAxis::Axial);
        assert_eq!(read("\"Sagittal\"").unwrap(), SliceAxis::Sagittal);
        assert_eq!(read("null").unwrap(), SliceAxis::Auto);
        assert_eq!(read("2").unwrap(), SliceAxis::Voxel(2));
        assert!(read("3").unwrap_err().to_string().contains("not 0, 1 or 2"));
        assert!(read("\"oblique\"")
            .unwrap_err()
            .to_string()
            .contains("axial"));
        for a in [SliceAxis::Auto, SliceAxis::Coronal, SliceAxis::Voxel(1)] {
            let j = serde_json::to_string(&a).unwrap();
            assert_eq!(read(&j).unwrap(), a, "{j}");
        }
    }

    #[test]
    fn mri_zscore_keeps_background_zero() {
        let mut d = vec![0.0, 1.0, 3.0, 0.0];
        normalize(&mut d, Normalization::Mri, [0.0, 0.0]);
        assert_eq!(d, vec![0.0, -1.0, 1.0, 0.0]);
        let mut c = vec![-1000.0, 0.0, 400.0, 100.0];
        normalize(&mut c, Normalization::Ct, [-100.0, 300.0]);
        let m: f32 = c.iter().sum::<f32>() / 4.0;
        assert!(m.abs() < 1e-6);
    }
}
