//! Shard batches → tensors: images `[N, C, S, S]`, masks `[N, S, S]` (int64), pixel spacing
//! per slice, and the random horizontal flip (paper §4.2, p = 0.5). Slices come at the model's
//! input size: prep is the only resampler.
use crate::shard::schema::SliceRecord;
use crate::{Error, Result};
use rand::Rng;
use tch::{Device, Tensor};

/// A batch on the device.
pub(crate) struct TensorBatch {
    /// Images `[N, C, S, S]`, float.
    pub images: Tensor,
    /// Class masks `[N, S, S]`, int64 (None for unlabeled batches).
    pub masks: Option<Tensor>,
    /// mm per pixel (rows, cols), per slice.
    pub spacing: Vec<[f64; 2]>,
}

/// Converts records (all `size`×`size`, `channels` channels) to tensors on `device`.
pub(crate) fn to_tensors(
    records: &[SliceRecord],
    size: usize,
    channels: usize,
    device: Device,
) -> Result<TensorBatch> {
    let first = records
        .first()
        .ok_or_else(|| Error::Torch("empty batch".into()))?;
    let (h, w) = (first.height as usize, first.width as usize);
    let mut img = Vec::with_capacity(records.len() * channels * h * w);
    let mut masks = Vec::with_capacity(records.len() * h * w);
    let all_masked = records.iter().all(|r| r.mask.is_some());
    for r in records {
        let mask_ok = r.mask.as_ref().is_none_or(|m| m.len() == h * w);
        if r.height as usize != size
            || r.width as usize != size
            || r.image.len() != channels * h * w
            || !mask_ok
        {
            return Err(Error::Shape {
                path: r.source_path.clone().into(),
                case: format!("{} slice {}", r.patient_key, r.slice_index),
                expected: vec![channels, size, size],
                found: vec![r.channel_names.len(), r.height as usize, r.width as usize],
            });
        }
        img.extend_from_slice(&r.image);
        if let (true, Some(m)) = (all_masked, &r.mask) {
            masks.extend(m.iter().map(|&v| v as i64));
        }
    }
    let n = records.len() as i64;
    let images = Tensor::from_slice(&img).reshape([n, channels as i64, h as i64, w as i64]);
    let mask_t = all_masked.then(|| Tensor::from_slice(&masks).reshape([n, h as i64, w as i64]));
    let spacing = records.iter().map(|r| r.pixel_spacing).collect();
    Ok(TensorBatch {
        images: images.to_device(device),
        masks: mask_t.map(|m| m.to_device(device)),
        spacing,
    })
}

/// Flips each slice horizontally (last axis) with probability `p`, image and mask together.
pub(crate) fn random_flip(b: &mut TensorBatch, p: f64, rng: &mut impl Rng) {
    let n = b.images.size()[0];
    let flips: Vec<i64> = (0..n).filter(|_| rng.random::<f64>() < p).collect();
    if flips.is_empty() {
        return;
    }
    let idx = Tensor::from_slice(&flips).to_device(b.images.device());
    let _g = tch::no_grad_guard();
    let flipped = b.images.index_select(0, &idx).flip([3]);
    let _ = b.images.index_copy_(0, &idx, &flipped);
    if let Some(m) = &mut b.masks {
        let fm = m.index_select(0, &idx).flip([2]);
        let _ = m.index_copy_(0, &idx, &fm);
    }
}
