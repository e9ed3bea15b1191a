//! Shard batches → tensors: images `[N, C, S, S]`, masks `[N, S, S]` (int64), pixel spacing
//! per slice, and the augmentations: the random horizontal flip (paper §4.2, p = 0.5) and
//! SSL4MIS's `RandomGenerator` (90° rotations and flips, or a small rotation). Slices come at
//! the model's input size: prep is the only resampler.
use crate::artifact::Augment;
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
fn random_flip(b: &mut TensorBatch, p: f64, rng: &mut impl Rng) {
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

/// Augments a training batch in place as `augment` says (image and mask together).
pub(crate) fn augment(b: &mut TensorBatch, augment: Augment, flip_prob: f64, rng: &mut impl Rng) {
    match augment {
        Augment::Flip => random_flip(b, flip_prob, rng),
        Augment::Ssl4mis => ssl4mis(b, rng),
    }
}

/// What SSL4MIS's `RandomGenerator` does to one slice.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Ssl4misDraw {
    /// `k` quarter turns, then a flip along `axis` (0: rows, 1: columns).
    RotFlip { k: i64, axis: i64 },
    /// A rotation by `degrees` about the centre.
    Rotate { degrees: f64 },
    /// Nothing.
    Keep,
}

/// The draws in the order SSL4MIS makes them: `random() > 0.5` → rot-flip (k, then axis),
/// else `random() > 0.5` → rotate by an integer angle in [−20, 20).
fn ssl4mis_draw(rng: &mut impl Rng) -> Ssl4misDraw {
    if rng.random::<f64>() > 0.5 {
        let k = rng.random_range(0..4i64);
        let axis = rng.random_range(0..2i64);
        Ssl4misDraw::RotFlip { k, axis }
    } else if rng.random::<f64>() > 0.5 {
        Ssl4misDraw::Rotate {
            degrees: rng.random_range(-20..20i64) as f64,
        }
    } else {
        Ssl4misDraw::Keep
    }
}

/// Rotates `[1, C, H, W]` float maps about the centre by `degrees` (counter-clockwise in the
/// displayed image, as `scipy.ndimage.rotate`), nearest neighbour, zero outside.
fn rotate_nearest(x: &Tensor, degrees: f64) -> Tensor {
    let (s, c) = degrees.to_radians().sin_cos();
    // The grid maps output → input coordinates (x right, y down), so the inverse rotation.
    let theta = Tensor::from_slice(&[c as f32, -s as f32, 0.0, s as f32, c as f32, 0.0])
        .reshape([1, 2, 3])
        .to_device(x.device());
    let grid = Tensor::affine_grid_generator(&theta, x.size(), false);
    x.grid_sampler(&grid, 1, 0, false)
}

/// SSL4MIS's `RandomGenerator`, slice by slice.
fn ssl4mis(b: &mut TensorBatch, rng: &mut impl Rng) {
    let _g = tch::no_grad_guard();
    let n = b.images.size()[0];
    for i in 0..n {
        let draw = ssl4mis_draw(rng);
        let apply = |t: &Tensor| -> Tensor {
            match draw {
                Ssl4misDraw::RotFlip { k, axis } => t.rot90(k, [2, 3]).flip([2 + axis]),
                Ssl4misDraw::Rotate { degrees } => rotate_nearest(t, degrees),
                Ssl4misDraw::Keep => t.shallow_clone(),
            }
        };
        if draw == Ssl4misDraw::Keep {
            continue;
        }
        let img = b.images.narrow(0, i, 1);
        let out = apply(&img.to_kind(tch::Kind::Float)).to_kind(img.kind());
        b.images.narrow(0, i, 1).copy_(&out);
        if let Some(m) = &mut b.masks {
            let mi = m.narrow(0, i, 1).unsqueeze(1).to_kind(tch::Kind::Float);
            let mo = apply(&mi).squeeze_dim(1).to_kind(m.kind());
            m.narrow(0, i, 1).copy_(&mo);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn batch(n: i64, s: i64) -> TensorBatch {
        let images =
            Tensor::arange(n * s * s, (tch::Kind::Float, Device::Cpu)).reshape([n, 1, s, s]);
        let masks = Some(
            Tensor::arange(n * s * s, (tch::Kind::Int64, Device::Cpu))
                .reshape([n, s, s])
                .remainder(4),
        );
        TensorBatch {
            images,
            masks,
            spacing: vec![[1.0, 1.0]; n as usize],
        }
    }

    #[test]
    fn ssl4mis_draws_follow_its_probabilities() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let (mut rf, mut rot, mut keep) = (0, 0, 0);
        for _ in 0..8000 {
            match ssl4mis_draw(&mut rng) {
                Ssl4misDraw::RotFlip { k, axis } => {
                    assert!((0..4).contains(&k) && (0..2).contains(&axis));
                    rf += 1
                }
                Ssl4misDraw::Rotate { degrees } => {
                    assert!((-20.0..20.0).contains(&degrees) && degrees.fract() == 0.0);
                    rot += 1
                }
                Ssl4misDraw::Keep => keep += 1,
            }
        }
        // 1/2, 1/4, 1/4 within 4 standard deviations
        assert!((rf as f64 - 4000.0).abs() < 180.0, "{rf}");
        assert!((rot as f64 - 2000.0).abs() < 160.0 && (keep as f64 - 2000.0).abs() < 160.0);
    }

    #[test]
    fn image_and_mask_move_together() {
        // mask = image mod 4 before; every augmentation keeps that pixel by pixel (nearest
        // neighbour never mixes pixels), and zero fill gives image 0, mask 0.
        let mut b = batch(16, 9);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        ssl4mis(&mut b, &mut rng);
        let m = b.masks.as_ref().unwrap();
        let expect = b
            .images
            .to_kind(tch::Kind::Int64)
            .remainder(4)
            .squeeze_dim(1);
        assert!(
            expect.equal(m),
            "{}",
            (&expect - m).abs().sum(tch::Kind::Int64)
        );
        assert!(!b.images.equal(&batch(16, 9).images), "something moved");
    }

    #[test]
    fn rotation_matches_scipy_on_a_quarter_turn_and_keeps_the_centre() {
        // ndimage.rotate(a, 90, order=0, reshape=False) on an odd square = np.rot90(a, 1)
        let x = Tensor::arange(49, (tch::Kind::Float, Device::Cpu)).reshape([1, 1, 7, 7]);
        let r = rotate_nearest(&x, 90.0);
        assert!(r.equal(&x.rot90(1, [2, 3])), "{r}");
        let small = rotate_nearest(&x, 10.0);
        assert_eq!(small.double_value(&[0, 0, 3, 3]), 24.0);
    }
}
