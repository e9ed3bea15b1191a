//! Shard batches → tensors: images `[N, C, S, S]`, masks `[N, S, S]` (int64), pixel spacing
//! per slice; resizing when the model's input size differs from the shards' slice size
//! (bilinear for images, nearest for masks, spacing rescaled), and the random horizontal flip
//! (paper §4.2, p = 0.5).
use crate::shard::schema::SliceRecord;
use crate::{Error, Result};
use rand::Rng;
use tch::{Device, Kind, Tensor};

/// A batch on the device.
pub struct TensorBatch {
    /// Images `[N, C, S, S]`, float.
    pub images: Tensor,
    /// Class masks `[N, S, S]`, int64 (None for unlabeled batches).
    pub masks: Option<Tensor>,
    /// mm per pixel (rows, cols) at size S, per slice.
    pub spacing: Vec<[f64; 2]>,
}

/// Converts records (all the same shape) to tensors at `size`×`size` on `device`.
pub fn to_tensors(
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
        if r.height as usize != h || r.width as usize != w || r.image.len() != channels * h * w {
            return Err(Error::Shape {
                path: r.source_path.clone().into(),
                case: format!("{} slice {}", r.patient_key, r.slice_index),
                expected: vec![channels, h, w],
                found: vec![r.channel_names.len(), r.height as usize, r.width as usize],
            });
        }
        img.extend_from_slice(&r.image);
        if all_masked {
            masks.extend(r.mask.as_ref().expect("checked").iter().map(|&v| v as i64));
        }
    }
    let n = records.len() as i64;
    let mut images = Tensor::from_slice(&img).reshape([n, channels as i64, h as i64, w as i64]);
    let mut mask_t =
        all_masked.then(|| Tensor::from_slice(&masks).reshape([n, h as i64, w as i64]));
    let s = size as i64;
    if h != size || w != size {
        images = images.upsample_bilinear2d([s, s], false, None, None);
        mask_t = mask_t.map(|m| {
            m.unsqueeze(1)
                .to_kind(Kind::Float)
                .upsample_nearest2d([s, s], None, None)
                .squeeze_dim(1)
                .to_kind(Kind::Int64)
        });
    }
    let spacing = records
        .iter()
        .map(|r| {
            [
                r.pixel_spacing[0] * h as f64 / size as f64,
                r.pixel_spacing[1] * w as f64 / size as f64,
            ]
        })
        .collect();
    Ok(TensorBatch {
        images: images.to_device(device),
        masks: mask_t.map(|m| m.to_device(device)),
        spacing,
    })
}

/// Flips each slice horizontally (last axis) with probability `p`, image and mask together.
pub fn random_flip(b: &mut TensorBatch, p: f64, rng: &mut impl Rng) {
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
