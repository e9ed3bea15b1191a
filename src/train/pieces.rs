//! The pieces the training methods share, written once (design notes, "Methods"): the EMA
//! update of a teacher network, BCP's copy-paste box mask and its largest-connected-component
//! filter of pseudo-labels, the seeded noise of Mean Teacher's teacher input. (The losses,
//! the sigmoid ramp-up and hard pseudo-labels are in [`super::losses`].)
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{nn::VarStore, Device, Kind, Tensor};

/// `teacher ← α·teacher + (1 − α)·student` over the named variable pairs (SSL4MIS's
/// `update_ema_variables`: parameters only; α = min(1 − 1/(step + 1), `alpha`)).
pub(crate) fn ema_update(vs: &VarStore, pairs: &[(String, String)], alpha: f64, step: usize) {
    let a = alpha.min(1.0 - 1.0 / (step as f64 + 1.0));
    let vars = vs.variables();
    let _g = tch::no_grad_guard();
    for (teacher, student) in pairs {
        if let (Some(t), Some(s)) = (vars.get(teacher), vars.get(student)) {
            let mut t = t.shallow_clone();
            let _ = t.g_mul_scalar_(a).g_add_(&(s * (1.0 - a)));
        }
    }
}

/// Copies every student variable into its teacher (weights and batch-norm statistics).
pub(crate) fn copy_into(vs: &VarStore, pairs: &[(String, String)]) {
    let vars = vs.variables();
    let _g = tch::no_grad_guard();
    for (teacher, student) in pairs {
        if let (Some(t), Some(s)) = (vars.get(teacher), vars.get(student)) {
            t.shallow_clone().copy_(s);
        }
    }
}

/// BCP's `generate_mask`: an `h × w` map of ones with a zero box of `fraction · h` by
/// `fraction · w` at a seeded random position (one box per step, for the whole batch).
pub(crate) fn copy_paste_mask(h: usize, w: usize, fraction: f64, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let (ph, pw) = (
        (h as f64 * fraction) as usize,
        (w as f64 * fraction) as usize,
    );
    let y0 = if h > ph {
        rng.random_range(0..h - ph)
    } else {
        0
    };
    let x0 = if w > pw {
        rng.random_range(0..w - pw)
    } else {
        0
    };
    let mut m = vec![1f32; h * w];
    for y in y0..(y0 + ph).min(h) {
        for x in x0..(x0 + pw).min(w) {
            m[y * w + x] = 0.0;
        }
    }
    m
}

/// BCP's pseudo-label filter (`get_ACDC_2DLargestCC`): per slice and foreground class, only
/// the largest 8-connected component of the class is kept; other pixels of the class become
/// background. `labels` is `[N, H, W]` row-major.
pub(crate) fn largest_components(
    labels: &[u8],
    (n, h, w): (usize, usize, usize),
    k: usize,
) -> Vec<u8> {
    let mut out = vec![0u8; labels.len()];
    for s in 0..n {
        let slice = &labels[s * h * w..(s + 1) * h * w];
        for c in 1..k as u8 {
            if let Some(comp) = largest_component(slice, h, w, c) {
                for (o, keep) in out[s * h * w..(s + 1) * h * w].iter_mut().zip(comp) {
                    if keep {
                        *o = c;
                    }
                }
            }
        }
    }
    out
}

/// The largest 8-connected component of the pixels equal to `c` (`None` when there is none);
/// ties go to the component found first in row-major order.
fn largest_component(slice: &[u8], h: usize, w: usize, c: u8) -> Option<Vec<bool>> {
    let mut comp = vec![0u32; h * w];
    let (mut best, mut best_size, mut next) = (0u32, 0usize, 0u32);
    let mut stack = Vec::new();
    for start in 0..h * w {
        if slice[start] != c || comp[start] != 0 {
            continue;
        }
        next += 1;
        let mut size = 0usize;
        comp[start] = next;
        stack.push(start);
        while let Some(p) = stack.pop() {
            size += 1;
            let (y, x) = ((p / w) as isize, (p % w) as isize);
            for dy in -1..=1isize {
                for dx in -1..=1isize {
                    let (yy, xx) = (y + dy, x + dx);
                    if yy < 0 || xx < 0 || yy >= h as isize || xx >= w as isize {
                        continue;
                    }
                    let q = yy as usize * w + xx as usize;
                    if slice[q] == c && comp[q] == 0 {
                        comp[q] = next;
                        stack.push(q);
                    }
                }
            }
        }
        if size > best_size {
            (best, best_size) = (next, size);
        }
    }
    (best_size > 0).then(|| comp.iter().map(|&v| v == best).collect())
}

/// Mean Teacher's input noise: N(0, std²) clipped to ±2·std, drawn from a seeded generator
/// (training draws nothing from libtorch, so a resume repeats it exactly).
pub(crate) fn clipped_noise(shape: &[i64], std: f64, seed: u64, device: Device) -> Tensor {
    let n: i64 = shape.iter().product();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut v = Vec::with_capacity(n as usize);
    while (v.len() as i64) < n {
        // Box–Muller: two independent standard normals per pair of uniforms
        let (u1, u2): (f64, f64) = (rng.random::<f64>().max(1e-300), rng.random::<f64>());
        let r = (-2.0 * u1.ln()).sqrt();
        let t = 2.0 * std::f64::consts::PI * u2;
        for z in [r * t.cos(), r * t.sin()] {
            if (v.len() as i64) < n {
                v.push((z * std).clamp(-2.0 * std, 2.0 * std) as f32);
            }
        }
    }
    Tensor::from_slice(&v)
        .reshape(shape)
        .to_kind(Kind::Float)
        .to_device(device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_component_of_each_class_is_kept_per_slice() {
        // class 1: a 3-pixel blob and a 1-pixel speck; class 2: two 2-pixel blobs (first kept)
        #[rustfmt::skip]
        let s: Vec<u8> = vec![
            1, 1, 0, 0, 1,
            0, 1, 0, 0, 0,
            2, 0, 0, 2, 2,
            2, 0, 0, 0, 0,
        ];
        let out = largest_components(&s, (1, 4, 5), 3);
        #[rustfmt::skip]
        let want: Vec<u8> = vec![
            1, 1, 0, 0, 0,
            0, 1, 0, 0, 0,
            2, 0, 0, 0, 0,
            2, 0, 0, 0, 0,
        ];
        assert_eq!(out, want);
        // diagonal neighbours connect (8-connectivity)
        let d: Vec<u8> = vec![1, 0, 0, 1];
        assert_eq!(largest_components(&d, (1, 2, 2), 2), d);
    }

    #[test]
    fn the_box_covers_two_thirds_of_each_side() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let m = copy_paste_mask(30, 12, 2.0 / 3.0, &mut rng);
        assert_eq!(m.iter().filter(|&&v| v == 0.0).count(), 20 * 8);
    }
}
