//! The DMNet inference graph (paper §3.1; contract "DMNet architecture v1"): ResNet encoder,
//! U-Net decoder 1, DeepLab v3+ decoder 2, and as the output `probabilities` the average of the
//! two decoders' softmax maps [N, K, S, S], plus `labels` = argmax as uint8 [N, S, S]. The
//! nodes are read off the network description ([`crate::model::arch`]), like the tch model.
//! Batch-norm stays as BatchNormalization nodes in inference form (running statistics), so
//! every initializer is a checkpoint variable under its own name. The batch is dynamic; H and
//! W are fixed to the training size S (every upsampling target is a constant, as in tch).
use super::graph::{ConvOpts, Dim, GraphBuilder, T};
use super::onnx::{tensor_proto::DataType, ModelProto};
use super::weights::Weights;
pub use crate::artifact::sidecar::PROBABILITIES;
pub(crate) use crate::artifact::sidecar::{INPUT, LABELS};
use crate::model::arch::{ConvSpec, Module, Op, Segmenter, BN_EPS};
use crate::model::{weight_specs, ModelConfig};
use crate::Result;

/// Writes the nodes of `module` (from the network description) into `g`; returns its outputs.
fn module(g: &mut GraphBuilder, m: &Module, inputs: &[&T]) -> Vec<T> {
    let full = |name: &str, leaf: &str| format!("{}.{name}.{leaf}", m.name);
    m.eval(inputs, |node, x| match &node.op {
        Op::Conv(c) | Op::ConvTranspose(c) => {
            let ConvSpec {
                name,
                cout,
                k,
                stride,
                pad,
                dilation,
                bias,
                ..
            } = c;
            let (w, b) = (full(name, "weight"), full(name, "bias"));
            let b = bias.then_some(b.as_str());
            let o = ConvOpts {
                stride: *stride,
                pad: *pad,
                dilation: *dilation,
            };
            match node.op {
                Op::Conv(_) => g.conv(x[0], &w, b, *cout, *k, o),
                _ => g.conv_transpose(x[0], &w, b, *cout, *k, o),
            }
        }
        Op::BatchNorm { name, .. } => {
            g.batch_norm(x[0], &format!("{}.{name}", m.name), BN_EPS as f32)
        }
        Op::Relu => g.relu(x[0]),
        &Op::MaxPool { k, stride, pad } => g.max_pool(x[0], k, stride, pad),
        Op::Add => g.add(x[0], x[1]),
        Op::Concat => g.concat(x),
        Op::Resize if (x[0].h, x[0].w) == (x[1].h, x[1].w) => x[0].clone(),
        Op::Resize => g.resize_to(x[0], x[1].h, x[1].w),
        Op::GlobalAvgPool => g.global_avg_pool(x[0]),
    })
}

/// Decoder `d` on the image and features `f` (see [`Segmenter`] for the wiring).
fn decode(g: &mut GraphBuilder, d: &Module, x: &T, f: &[T]) -> T {
    let inputs: Vec<&T> = std::iter::once(x).chain(f).collect();
    module(g, d, &inputs).remove(0)
}

/// Builds the DMNet inference model for `cfg` from the checkpoint `weights` (every tensor of
/// [`weight_specs`] becomes an initializer of that name, shape-checked). `metadata` goes into
/// `metadata_props`.
pub fn build_model(
    cfg: &ModelConfig,
    weights: &Weights,
    opset: i64,
    metadata: &[(String, String)],
) -> Result<ModelProto> {
    cfg.validate()?;
    let mut g = GraphBuilder::new("dmnet", opset)?;
    for spec in weight_specs(cfg) {
        let (shape, data) = weights.get(&spec.name, Some(&spec.shape))?;
        g.initializer(&spec.name, shape, data);
    }
    let s = cfg.input_size;
    let net = Segmenter::new(cfg);
    let x = g.input_nchw(INPUT, cfg.in_channels, s, s);
    let f = module(&mut g, &net.encoder, &[&x]);
    let logits1 = decode(&mut g, &net.decoder1, &x, &f);
    let probs = match &net.decoder2 {
        Some(d2) => {
            let f2 = match &net.encoder2 {
                Some(e2) => module(&mut g, e2, &[&x]),
                None => f,
            };
            let logits2 = decode(&mut g, d2, &x, &f2);
            let p1 = g.softmax(&logits1);
            let p2 = g.softmax(&logits2);
            g.average(&p1, &p2, PROBABILITIES)
        }
        None => g.softmax_named(&logits1, PROBABILITIES),
    };
    g.argmax_u8(&probs, LABELS);
    let k = cfg.num_classes;
    let n = || Dim::Param("N".into());
    g.output(
        PROBABILITIES,
        DataType::Float,
        &[n(), Dim::Fixed(k), Dim::Fixed(s), Dim::Fixed(s)],
    );
    g.output(
        LABELS,
        DataType::Uint8,
        &[n(), Dim::Fixed(s), Dim::Fixed(s)],
    );
    let doc = match net.decoder2 {
        Some(_) => format!(
            "DMNet (Fang & Li, MICCAI 2020), encoder {}, width {}, variant {}, ASPP rates {:?}: \
             probabilities = (softmax(U-Net logits) + softmax(DeepLab v3+ logits)) / 2",
            cfg.encoder.name(),
            cfg.width,
            cfg.variant.name(),
            cfg.aspp_rates.resolve(s)
        ),
        None => format!(
            "ResNet encoder {} (width {}) + U-Net decoder: probabilities = softmax(logits)",
            cfg.encoder.name(),
            cfg.width
        ),
    };
    Ok(g.finish(metadata, &doc))
}
