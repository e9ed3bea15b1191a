//! Volume inference: a NIfTI file or a DICOM series (read with `volume`), preprocessed exactly as
//! `dmnet-prep` did for training (`prep::preprocess`, config from the model sidecar), sliced
//! along the same axis, run in batches, the S×S probabilities resized bilinearly back to the
//! source in-plane size, argmax, and written as a uint8 NIfTI mask with the input's dims,
//! affine, qform/sform codes and pixdim (DICOM: the affine derived from the series). With
//! `--tta` the probabilities are averaged over mirrored copies ([`super::tta`]). Probability
//! maps are a 5-D float32 NIfTI with intent `NIFTI_INTENT_VECTOR` (1007): dims
//! `[X, Y, Z, 1, K]`, the NIfTI-1 convention for a vector (here: K class probabilities) per
//! voxel, so viewers do not take the classes for time points.
use super::engine::SliceRunner;
use super::tta::Tta;
use crate::artifact::sidecar::ModelSidecar;
use crate::metrics::evaluate::argmax_planes;
use crate::preprocess::{insert_slice, prepare_volume, resize_bilinear, PreparedVolume};
use crate::volume::{NiftiGeometry, Volume};
use crate::{Error, Result};
use std::io::Write;
use std::path::Path;

/// A segmented volume.
#[derive(Debug, Clone)]
pub(crate) struct Segmentation {
    /// Class indices in the voxel order of the input.
    pub mask: Vec<u8>,
    /// When asked for: K probability maps at source resolution, each in voxel order.
    pub probabilities: Option<Vec<Vec<f32>>>,
    /// Slices run through the model.
    pub slices: usize,
}

/// How to run a volume.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SegmentOptions {
    /// Slices per model run.
    pub batch: usize,
    /// Keep the class probabilities at source resolution.
    pub keep_probabilities: bool,
    /// Test-time augmentation.
    pub tta: Tta,
}

/// Segments one volume (see the module docs).
pub(crate) fn segment_volume(
    model: &mut dyn SliceRunner,
    sidecar: &ModelSidecar,
    vols: Vec<Volume>,
    opts: SegmentOptions,
    mut on_slices: impl FnMut(usize),
) -> Result<Segmentation> {
    let (batch, keep_probabilities) = (opts.batch.max(1), opts.keep_probabilities);
    let source = vols
        .first()
        .map(|v| v.source.clone())
        .ok_or_else(|| Error::invalid("<input>", "a case without images"))?;
    let c = sidecar.model.in_channels;
    if c != vols.len() {
        return Err(Error::Shape {
            path: source,
            case: format!(
                "the model expects {c} channels ({}); the input gives {}",
                sidecar.channel_names.join(", "),
                vols.len()
            ),
            expected: vec![c],
            found: vec![vols.len()],
        });
    }
    let names = sidecar.channel_names.clone();
    let case = source.display().to_string();
    let prepared: PreparedVolume =
        prepare_volume(vols, names, &sidecar.preprocessing.config, &case)?;
    let (s, k) = (sidecar.size(), sidecar.model.num_classes);
    let dims = prepared.geometry.dims;
    let n = prepared.num_slices();
    let (h, w) = prepared.plane();
    let nvox = dims[0] * dims[1] * dims[2];
    let mut mask = vec![0u8; nvox];
    let mut probs = keep_probabilities.then(|| vec![vec![0f32; nvox]; k]);
    let mut start = 0;
    while start < n {
        let m = batch.min(n - start);
        let mut x = Vec::with_capacity(m * c * s * s);
        for kk in start..start + m {
            x.extend(prepared.slice_image(kk, s));
        }
        model.check_input(&[m, c, s, s], &source)?;
        let p = super::tta::predict(model, x, [m, c, s, s], k, opts.tta)?;
        for (i, slab) in p.chunks_exact(k * s * s).enumerate() {
            // the evaluator's own function: a mask scored by `metrics::evaluate` is this mask
            let planes: Vec<f32> = slab
                .chunks_exact(s * s)
                .flat_map(|plane| resize_bilinear(plane, s, s, h, w))
                .collect();
            let labels = argmax_planes(&planes, k, h * w);
            insert_slice(&mut mask, dims, prepared.axis, start + i, &labels);
            if let Some(pr) = probs.as_mut() {
                for (j, plane) in planes.chunks_exact(h * w).enumerate() {
                    insert_slice(&mut pr[j], dims, prepared.axis, start + i, plane);
                }
            }
        }
        on_slices(m);
        start += m;
    }
    Ok(Segmentation {
        mask,
        probabilities: probs,
        slices: n,
    })
}

fn put_i16(b: &mut [u8], off: usize, v: i16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}
fn put_f32(b: &mut [u8], off: usize, v: f32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

/// `NIFTI_INTENT_VECTOR`: a vector per voxel, stored along dim 5.
pub(crate) const NIFTI_INTENT_VECTOR: i16 = 1007;

/// Writes `K` probability maps as one 5-D float32 NIfTI-1 (dims `[X, Y, Z, 1, K]`, intent
/// [`NIFTI_INTENT_VECTOR`], intent name `probabilities`) with the geometry of `reference`
/// (same dims, pixdim, qform/sform as the mask).
pub(crate) fn write_probabilities(
    path: &Path,
    probs: &[Vec<f32>],
    reference: &Volume,
) -> Result<()> {
    let g: &NiftiGeometry = &reference.header;
    let mut h = vec![0u8; 352];
    h[0..4].copy_from_slice(&348i32.to_le_bytes());
    let dims = [
        5i16,
        reference.dims[0] as i16,
        reference.dims[1] as i16,
        reference.dims[2] as i16,
        1,
        probs.len() as i16,
        1,
        1,
    ];
    for (i, d) in dims.iter().enumerate() {
        put_i16(&mut h, 40 + 2 * i, *d);
    }
    put_i16(&mut h, 68, NIFTI_INTENT_VECTOR);
    put_i16(&mut h, 70, 16); // NIFTI_TYPE_FLOAT32
    put_i16(&mut h, 72, 32);
    for (i, p) in g.pixdim.iter().enumerate() {
        put_f32(&mut h, 76 + 4 * i, if i >= 4 { 1.0 } else { *p });
    }
    put_f32(&mut h, 108, 352.0);
    put_f32(&mut h, 112, 1.0);
    h[123] = g.xyzt_units;
    h[148..148 + 27].copy_from_slice(b"dmnet class probabilities\0\0");
    put_i16(&mut h, 252, g.qform_code);
    put_i16(&mut h, 254, g.sform_code);
    for (i, q) in g.quatern.iter().enumerate() {
        put_f32(&mut h, 256 + 4 * i, *q);
    }
    for (r, row) in g.srow.iter().enumerate() {
        for (c, v) in row.iter().enumerate() {
            put_f32(&mut h, 280 + 16 * r + 4 * c, *v);
        }
    }
    h[328..341].copy_from_slice(b"probabilities");
    h[344..348].copy_from_slice(b"n+1\0");
    for p in probs {
        h.extend(p.iter().flat_map(|v| v.to_le_bytes()));
    }
    let write = || -> std::io::Result<()> {
        let f = std::fs::File::create(path)?;
        let mut enc = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
        enc.write_all(&h)?;
        enc.finish()?;
        Ok(())
    };
    write().map_err(|e| Error::io(path, e))
}
