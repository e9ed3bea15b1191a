//! The DMNet inference graph (paper §3.1; contract "DMNet architecture v1"): ResNet encoder,
//! U-Net decoder 1, DeepLab v3+ decoder 2, and as the output `probabilities` the average of the
//! two decoders' softmax maps [N, K, S, S], plus `labels` = argmax as uint8 [N, S, S].
//! Batch-norm stays as BatchNormalization nodes in inference form (running statistics), so
//! every initializer is a checkpoint variable under its own name. The batch is dynamic; H and
//! W are fixed to the training size S (every upsampling target is a constant, as in tch).
use super::graph::{ConvOpts, Dim, GraphBuilder, T};
use super::onnx::{tensor_proto::DataType, ModelProto};
use super::weights::Weights;
pub use crate::artifact::sidecar::{INPUT, LABELS, PROBABILITIES};
use crate::model::{weight_specs, ModelConfig, LOW_LEVEL_CHANNELS};
use crate::Result;

const BN_EPS: f32 = 1e-5;

struct Ctx<'a> {
    g: GraphBuilder,
    cfg: &'a ModelConfig,
}

impl Ctx<'_> {
    /// Bias-free (or biased) conv whose weight is the initializer `<p>.weight`.
    fn conv(&mut self, x: &T, p: &str, cout: usize, k: usize, o: ConvOpts, bias: bool) -> T {
        let w = format!("{p}.weight");
        let b = format!("{p}.bias");
        self.g.conv(x, &w, bias.then_some(b.as_str()), cout, k, o)
    }
    fn conv_bn(&mut self, x: &T, conv: &str, bn: &str, cout: usize, k: usize, o: ConvOpts) -> T {
        let y = self.conv(x, conv, cout, k, o, false);
        self.g.batch_norm(&y, bn, BN_EPS)
    }
    /// `<p>.conv` + `<p>.bn` + ReLU (DeepLab naming).
    fn conv_bn_relu(&mut self, x: &T, p: &str, cout: usize, k: usize, dil: usize) -> T {
        let pad = dil * (k / 2);
        let o = ConvOpts {
            stride: 1,
            pad,
            dilation: dil,
        };
        let y = self.conv_bn(x, &format!("{p}.conv"), &format!("{p}.bn"), cout, k, o);
        self.g.relu(&y)
    }
    fn resize(&mut self, x: &T, h: usize, w: usize) -> T {
        if x.h == h && x.w == w {
            return x.clone();
        }
        self.g.resize_to(x, h, w)
    }

    fn block(&mut self, x: &T, q: &str, planes: usize, stride: usize) -> T {
        let bottleneck = self.cfg.encoder.bottleneck();
        let e = self.cfg.encoder.expansion();
        let cout = planes * e;
        let convs: Vec<(usize, usize, usize)> = if bottleneck {
            vec![(planes, 1, 1), (planes, 3, stride), (cout, 1, 1)]
        } else {
            vec![(planes, 3, stride), (planes, 3, 1)]
        };
        let mut y = x.clone();
        for (i, &(c, k, s)) in convs.iter().enumerate() {
            let o = ConvOpts::new(s, k / 2);
            y = self.conv_bn(
                &y,
                &format!("{q}.conv{}", i + 1),
                &format!("{q}.bn{}", i + 1),
                c,
                k,
                o,
            );
            if i + 1 < convs.len() {
                y = self.g.relu(&y);
            }
        }
        let id = if stride != 1 || x.c != cout {
            let d = format!("{q}.downsample");
            self.conv_bn(
                x,
                &format!("{d}.0"),
                &format!("{d}.1"),
                cout,
                1,
                ConvOpts::new(stride, 0),
            )
        } else {
            x.clone()
        };
        let sum = self.g.add(&y, &id);
        self.g.relu(&sum)
    }

    /// f1..f5 of the encoder under prefix `p`.
    fn encoder(&mut self, x: &T, p: &str) -> Vec<T> {
        let c64 = self.cfg.c(64);
        let y = self.conv_bn(
            x,
            &format!("{p}.conv1"),
            &format!("{p}.bn1"),
            c64,
            7,
            ConvOpts::new(2, 3),
        );
        let f1 = self.g.relu(&y);
        let mut x = self.g.max_pool(&f1, 3, 2, 1);
        let mut feats = vec![f1];
        for (li, (&nominal, &n)) in [64, 128, 256, 512]
            .iter()
            .zip(self.cfg.encoder.blocks().iter())
            .enumerate()
        {
            let planes = self.cfg.c(nominal);
            for b in 0..n {
                let stride = if b == 0 && li > 0 { 2 } else { 1 };
                x = self.block(&x, &format!("{p}.layer{}.{b}", li + 1), planes, stride);
            }
            feats.push(x.clone());
        }
        feats
    }

    fn decoder1(&mut self, f: &[T], size: usize) -> T {
        let outs = crate::model::decoder1_channels(self.cfg);
        let mut x = f[4].clone();
        for (i, &c) in outs.iter().enumerate() {
            x = if i < 4 {
                let skip = &f[3 - i];
                let up = self.resize(&x, skip.h, skip.w);
                self.g.concat(&[&up, skip])
            } else {
                self.resize(&x, size, size)
            };
            let p = format!("decoder1.blocks.{i}");
            for j in 1..=2 {
                let y = self.conv_bn(
                    &x,
                    &format!("{p}.conv{j}"),
                    &format!("{p}.bn{j}"),
                    c,
                    3,
                    ConvOpts::new(1, 1),
                );
                x = self.g.relu(&y);
            }
        }
        let k = self.cfg.num_classes;
        self.conv(&x, "decoder1.head", k, 1, ConvOpts::new(1, 0), true)
    }

    fn decoder2(&mut self, f: &[T], size: usize) -> T {
        let a = crate::model::aspp_channels(self.cfg);
        let x = self.resize(&f[4], f[3].h, f[3].w);
        let mut branches = Vec::new();
        for (i, (k, d)) in [(1, 1), (3, 6), (3, 12), (3, 18)].into_iter().enumerate() {
            branches.push(self.conv_bn_relu(&x, &format!("decoder2.aspp.b{i}"), a, k, d));
        }
        let pooled = self.g.global_avg_pool(&x);
        let pooled = self.conv(
            &pooled,
            "decoder2.aspp.pool.conv",
            a,
            1,
            ConvOpts::new(1, 0),
            true,
        );
        let pooled = self.g.relu(&pooled);
        branches.push(self.resize(&pooled, x.h, x.w));
        let refs: Vec<&T> = branches.iter().collect();
        let cat = self.g.concat(&refs);
        let x = self.conv_bn_relu(&cat, "decoder2.aspp.project", a, 1, 1);
        let x = self.resize(&x, f[1].h, f[1].w);
        let low = self.conv_bn_relu(&f[1], "decoder2.low", LOW_LEVEL_CHANNELS, 1, 1);
        let x = self.g.concat(&[&x, &low]);
        let x = self.conv_bn_relu(&x, "decoder2.conv1", a, 3, 1);
        let x = self.conv_bn_relu(&x, "decoder2.conv2", a, 3, 1);
        let k = self.cfg.num_classes;
        let logits = self.conv(&x, "decoder2.head", k, 1, ConvOpts::new(1, 0), true);
        self.resize(&logits, size, size)
    }
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
    let mut ctx = Ctx { g, cfg };
    let x = ctx.g.input_nchw(INPUT, cfg.in_channels, s, s);
    let f = ctx.encoder(&x, "encoder");
    let logits1 = ctx.decoder1(&f, s);
    let f2 = if cfg.variant.separate_encoders() {
        ctx.encoder(&x, "encoder2")
    } else {
        f
    };
    let logits2 = ctx.decoder2(&f2, s);
    let p1 = ctx.g.softmax(&logits1);
    let p2 = ctx.g.softmax(&logits2);
    let probs = ctx.g.average(&p1, &p2, PROBABILITIES);
    ctx.g.argmax_u8(&probs, LABELS);
    let k = cfg.num_classes;
    let n = || Dim::Param("N".into());
    ctx.g.output(
        PROBABILITIES,
        DataType::Float,
        &[n(), Dim::Fixed(k), Dim::Fixed(s), Dim::Fixed(s)],
    );
    ctx.g.output(
        LABELS,
        DataType::Uint8,
        &[n(), Dim::Fixed(s), Dim::Fixed(s)],
    );
    let doc = format!(
        "DMNet (Fang & Li, MICCAI 2020), encoder {}, width {}, variant {}: probabilities = \
         (softmax(U-Net logits) + softmax(DeepLab v3+ logits)) / 2",
        cfg.encoder.name(),
        cfg.width,
        cfg.variant.name()
    );
    Ok(ctx.g.finish(metadata, &doc))
}
