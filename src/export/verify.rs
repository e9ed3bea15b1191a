//! `dmnet-export --verify` (feature `torch`): run the exported model with ONNX Runtime and the
//! checkpoint with the tch DMNet on the same shard slices and report the largest absolute
//! difference of the probabilities (the command fails above [`TOLERANCE`]).
use crate::cli::DeviceChoice;
use crate::model::{DmNet, ModelConfig};
use crate::onnxrt::session::OnnxModel;
use crate::{Error, Result};
use std::path::Path;

/// The largest allowed |Δ| between ONNX Runtime and tch probabilities.
pub const TOLERANCE: f32 = 1e-4;

/// The verification result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VerifyReport {
    /// Slices compared.
    pub slices: usize,
    /// max |p_onnx − p_tch| over all slices, classes and pixels.
    pub max_abs_diff: f32,
    /// Whether it is within [`TOLERANCE`].
    pub ok: bool,
}

/// Compares `onnx` with the tch model of `cfg` loaded from `ckpt` on up to `max_slices` slices
/// of the shard folder `shards` (batches of 4, CPU).
pub fn verify(
    onnx: &Path,
    cfg: &ModelConfig,
    ckpt: &Path,
    shards: &Path,
    max_slices: usize,
) -> Result<VerifyReport> {
    let _guard = tch::no_grad_guard();
    let mut vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let net = DmNet::new(&vs.root(), cfg)?;
    let missing = vs.load_partial(ckpt)?;
    if !missing.is_empty() {
        return Err(Error::invalid(
            ckpt,
            format!(
                "checkpoint lacks {} model tensors, e.g. {}",
                missing.len(),
                missing[0]
            ),
        ));
    }
    let mut model = OnnxModel::open(onnx, DeviceChoice::Cpu, None)?;
    let (c, s) = (cfg.in_channels, cfg.input_size);
    let mut slices = 0;
    let mut max = 0f32;
    'outer: for group in crate::shard::schema::read_shards(shards)? {
        for chunk in group?.chunks(4) {
            let n = chunk.len().min(max_slices - slices);
            let mut x = Vec::with_capacity(n * c * s * s);
            for r in &chunk[..n] {
                if r.image.len() != c * s * s {
                    return Err(Error::Shape {
                        path: shards.to_path_buf(),
                        case: format!("{} slice {}", r.patient_key, r.slice_index),
                        expected: vec![c, s, s],
                        found: vec![r.channel_names.len(), r.height as usize, r.width as usize],
                    });
                }
                x.extend_from_slice(&r.image);
            }
            let t = tch::Tensor::from_slice(&x).view([n as i64, c as i64, s as i64, s as i64]);
            let want = net.forward_t(&t, false).probabilities();
            let want = Vec::<f32>::try_from(want.flatten(0, -1))?;
            let (_, got) = model.run_f32(x, [n, c, s, s], super::dmnet::PROBABILITIES)?;
            max = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(max, f32::max);
            slices += n;
            if slices >= max_slices {
                break 'outer;
            }
        }
    }
    if slices == 0 {
        return Err(Error::invalid(shards, "no slices to verify on"));
    }
    Ok(VerifyReport {
        slices,
        max_abs_diff: max,
        ok: max <= TOLERANCE,
    })
}
