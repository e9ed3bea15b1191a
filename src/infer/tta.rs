//! Test-time augmentation by mirroring (nnU-Net's "mirroring"): the batch is run as given and
//! mirrored, each output mirrored back, and the class probabilities averaged. `flip` mirrors
//! the width axis only — the horizontal flip DMNet trains with (paper §4.2, `flip_prob`) — so
//! 2 runs; `flip-all` mirrors both in-plane axes (none, W, H, H+W: 4 runs), nnU-Net's 2-D
//! default. The same maths in tch: `mean_f(flip_f(net(flip_f(x))))` over the flip sets.
use super::engine::SliceRunner;
use crate::{Error, Result};

/// Which mirrored copies are averaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tta {
    /// One run, no augmentation.
    #[default]
    None,
    /// Average with the width-mirrored input (the flip used in training): 2 runs.
    Flip,
    /// Average over mirroring of both in-plane axes: 4 runs.
    FlipAll,
}

/// A mirroring: (flip rows = H axis, flip columns = W axis).
type Mirror = (bool, bool);

impl Tta {
    /// The mirrorings averaged, the identity first.
    pub(crate) fn mirrors(self) -> &'static [Mirror] {
        match self {
            Tta::None => &[(false, false)],
            Tta::Flip => &[(false, false), (false, true)],
            Tta::FlipAll => &[(false, false), (false, true), (true, false), (true, true)],
        }
    }
}

/// Mirrors every `h × w` plane of `x` (planes stored one after the other, row-major).
pub(crate) fn mirror(x: &[f32], h: usize, w: usize, (rows, cols): Mirror) -> Vec<f32> {
    if !rows && !cols {
        return x.to_vec();
    }
    let mut out = Vec::with_capacity(x.len());
    for plane in x.chunks_exact(h * w) {
        for r in 0..h {
            let src = if rows { h - 1 - r } else { r };
            let row = &plane[src * w..(src + 1) * w];
            if cols {
                out.extend(row.iter().rev());
            } else {
                out.extend_from_slice(row);
            }
        }
    }
    out
}

/// Class probabilities `[N, K, S, S]` of the batch `x` (`[N, C, S, S]`), averaged over the
/// mirrorings of `tta`. The model's output shape is checked against `[N, K, S, S]`.
pub fn predict(
    model: &mut dyn SliceRunner,
    x: Vec<f32>,
    shape: [usize; 4],
    k: usize,
    tta: Tta,
) -> Result<Vec<f32>> {
    let [n, _, s, s2] = shape;
    let want = [n, k, s, s2];
    let mut acc: Option<Vec<f32>> = None;
    for &m in tta.mirrors() {
        let input = mirror(&x, s, s2, m);
        let (dims, p) = model.run(input, shape)?;
        if dims != want {
            return Err(Error::invalid(
                model.path(),
                format!(
                    "output `probabilities` is {dims:?}, the sidecar promises {want:?} \
                     (K = {k} classes): the sidecar does not describe this model"
                ),
            ));
        }
        let p = mirror(&p, s, s2, m);
        match acc.as_mut() {
            None => acc = Some(p),
            Some(a) => a.iter_mut().zip(&p).for_each(|(a, b)| *a += b),
        }
    }
    let mut acc = acc.unwrap_or_default();
    let runs = tta.mirrors().len() as f32;
    if runs > 1.0 {
        acc.iter_mut().for_each(|v| *v /= runs);
    }
    Ok(acc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirroring_twice_is_the_identity_and_flips_the_right_axis() {
        // two 2×3 planes
        let x: Vec<f32> = (0..12).map(|v| v as f32).collect();
        assert_eq!(
            mirror(&x, 2, 3, (false, true))[..6],
            [2.0, 1.0, 0.0, 5.0, 4.0, 3.0]
        );
        assert_eq!(
            mirror(&x, 2, 3, (true, false))[6..],
            [9.0, 10.0, 11.0, 6.0, 7.0, 8.0]
        );
        for &m in Tta::FlipAll.mirrors() {
            assert_eq!(mirror(&mirror(&x, 2, 3, m), 2, 3, m), x);
        }
    }
}
