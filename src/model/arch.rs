//! The DMNet network written once (paper §3.1, Fig. 1; §3.4 for the discriminator), torch-free:
//! each part (ResNet encoder, U-Net decoder 1, DeepLab v3+ decoder 2, FCN discriminator) is a
//! [`Module`], a list of [`Node`]s (conv, BN, ReLU, pooling, add, concat, resize) with their
//! weight names, channels and wiring, computed from a [`ModelConfig`]. Three consumers read it:
//! the tch modules (`net.rs`), the ONNX graph builder (`export/dmnet.rs`) and the weight-name
//! list (`names.rs`). Changing a decoder means editing this file only. Layout and names are
//! the contract "DMNet architecture v1" in `docs/contracts.md`.
use super::ModelConfig;

/// BatchNorm ε (PyTorch default; the ONNX graph uses the same).
pub(crate) const BN_EPS: f64 = 1e-5;
/// BatchNorm momentum of the running statistics (PyTorch default; training only, so only the
/// tch modules read it).
#[cfg_attr(not(feature = "torch"), allow(dead_code))]
pub(crate) const BN_MOMENTUM: f64 = 0.1;
/// Channels of the projected stride-4 feature in DeepLab v3+ (fixed, as in the paper).
const LOW_LEVEL_CHANNELS: usize = 48;

/// A value of a module: one of its inputs (`0..inputs.len()`) or the output of a node
/// (`inputs.len() + node index`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Value(pub(crate) usize);

/// A square convolution (or transposed convolution) with weights under `name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConvSpec {
    /// Dotted name inside the module (`layer2.0.conv1`); `<name>.weight`, `<name>.bias`.
    pub name: String,
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
    /// Kernel size k (k×k).
    pub k: usize,
    /// Stride.
    pub stride: usize,
    /// Zero padding on every side.
    pub pad: usize,
    /// Dilation.
    pub dilation: usize,
    /// Whether there is a bias (heads and the ASPP pooling conv only).
    pub bias: bool,
}

/// One operation. Spatial sizes are not stored: every resize names the value whose size it
/// takes, so the tch model follows its input and the ONNX builder tracks constants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    /// Convolution, weight `[cout, cin, k, k]`.
    Conv(ConvSpec),
    /// Transposed convolution, weight `[cin, cout, k, k]` (discriminator only).
    ConvTranspose(ConvSpec),
    /// BatchNorm over `c` channels (`<name>.weight`, `.bias`, `.running_mean`, `.running_var`).
    BatchNorm {
        /// Dotted name inside the module.
        name: String,
        /// Channels.
        c: usize,
    },
    /// ReLU.
    Relu,
    /// Max pooling, k×k, symmetric padding, floor mode.
    MaxPool {
        /// Kernel size.
        k: usize,
        /// Stride.
        stride: usize,
        /// Padding.
        pad: usize,
    },
    /// Elementwise sum of the two inputs.
    Add,
    /// Concatenation of the inputs along channels.
    Concat,
    /// Bilinear resize (align_corners = false) of input 0 to the height and width of input 1.
    Resize,
    /// Global average pooling to 1×1.
    GlobalAvgPool,
}

/// One operation with its inputs and its output's channel count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Node {
    /// The operation.
    pub op: Op,
    /// Its inputs.
    pub inputs: Vec<Value>,
    /// Channels of its output.
    pub channels: usize,
}

/// One part of the network: the module field name, its inputs' channels, its nodes in
/// evaluation order and its outputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Module {
    /// Field name and weight-name prefix (`encoder`, `decoder1`, …).
    pub name: String,
    /// Channels of each input.
    pub inputs: Vec<usize>,
    /// Nodes in evaluation order.
    pub nodes: Vec<Node>,
    /// The module's outputs.
    pub outputs: Vec<Value>,
}

impl Module {
    /// Channels of a value.
    pub(crate) fn channels(&self, v: Value) -> usize {
        match v.0.checked_sub(self.inputs.len()) {
            None => self.inputs[v.0],
            Some(i) => self.nodes[i].channels,
        }
    }

    /// Channels of each output.
    pub(crate) fn output_channels(&self) -> Vec<usize> {
        self.outputs.iter().map(|&v| self.channels(v)).collect()
    }

    /// Evaluates the module: `f(node, its input values)` gives each node's value, in order.
    /// A node value is dropped after its last use (so a tch forward holds no more tensors than
    /// a hand-written one). Returns the outputs.
    pub(crate) fn eval<V>(&self, inputs: &[&V], mut f: impl FnMut(&Node, &[&V]) -> V) -> Vec<V> {
        let n_in = self.inputs.len();
        assert_eq!(inputs.len(), n_in, "module {} inputs", self.name);
        let mut last_use = vec![0; self.nodes.len()];
        for (i, node) in self.nodes.iter().enumerate() {
            for v in &node.inputs {
                if let Some(j) = v.0.checked_sub(n_in) {
                    last_use[j] = i;
                }
            }
        }
        for v in &self.outputs {
            last_use[v.0 - n_in] = usize::MAX;
        }
        let mut vals: Vec<Option<V>> = Vec::with_capacity(self.nodes.len());
        for (i, node) in self.nodes.iter().enumerate() {
            let out = {
                let args: Vec<&V> = node
                    .inputs
                    .iter()
                    .map(|v| match v.0.checked_sub(n_in) {
                        None => inputs[v.0],
                        Some(j) => vals[j]
                            .as_ref()
                            .expect("a value is used after its last use"),
                    })
                    .collect();
                f(node, &args)
            };
            for v in &node.inputs {
                if let Some(j) = v.0.checked_sub(n_in) {
                    if last_use[j] == i {
                        vals[j] = None;
                    }
                }
            }
            vals.push(Some(out));
        }
        self.outputs
            .iter()
            .map(|v| {
                vals[v.0 - n_in]
                    .take()
                    .expect("module outputs are distinct")
            })
            .collect()
    }
}

/// Builds a [`Module`], tracking channels so every weight shape follows from the wiring.
struct Builder(Module);

impl Builder {
    fn new(name: &str, inputs: Vec<usize>) -> (Self, Vec<Value>) {
        let values = (0..inputs.len()).map(Value).collect();
        let m = Module {
            name: name.into(),
            inputs,
            nodes: Vec::new(),
            outputs: Vec::new(),
        };
        (Builder(m), values)
    }
    fn c(&self, v: Value) -> usize {
        self.0.channels(v)
    }
    fn push(&mut self, op: Op, inputs: Vec<Value>, channels: usize) -> Value {
        self.0.nodes.push(Node {
            op,
            inputs,
            channels,
        });
        Value(self.0.inputs.len() + self.0.nodes.len() - 1)
    }
    fn conv_spec(&self, x: Value, name: &str, cout: usize, k: usize, stride: usize) -> ConvSpec {
        ConvSpec {
            name: name.into(),
            cin: self.c(x),
            cout,
            k,
            stride,
            pad: (k - 1) / 2,
            dilation: 1,
            bias: false,
        }
    }
    /// A k×k convolution with padding (k−1)/2 (7→3, 3→1, 1→0, 4→1), no bias.
    fn conv(&mut self, x: Value, name: &str, cout: usize, k: usize, stride: usize) -> Value {
        let spec = self.conv_spec(x, name, cout, k, stride);
        self.push(Op::Conv(spec), vec![x], cout)
    }
    /// A 1×1 or k×k head with bias.
    fn head(&mut self, x: Value, name: &str, cout: usize, k: usize) -> Value {
        let spec = ConvSpec {
            bias: true,
            ..self.conv_spec(x, name, cout, k, 1)
        };
        self.push(Op::Conv(spec), vec![x], cout)
    }
    fn bn(&mut self, x: Value, name: &str) -> Value {
        let c = self.c(x);
        let op = Op::BatchNorm {
            name: name.into(),
            c,
        };
        self.push(op, vec![x], c)
    }
    fn relu(&mut self, x: Value) -> Value {
        let c = self.c(x);
        self.push(Op::Relu, vec![x], c)
    }
    /// Conv `conv` (no bias) then BN `bn`.
    fn conv_bn(
        &mut self,
        x: Value,
        conv: &str,
        bn: &str,
        cout: usize,
        k: usize,
        s: usize,
    ) -> Value {
        let y = self.conv(x, conv, cout, k, s);
        self.bn(y, bn)
    }
    /// `<p>.conv` (k×k, dilation = padding multiplier `dil`) + `<p>.bn` + ReLU (DeepLab naming).
    fn conv_bn_relu(&mut self, x: Value, p: &str, cout: usize, k: usize, dil: usize) -> Value {
        let spec = ConvSpec {
            pad: dil * (k - 1) / 2,
            dilation: dil,
            ..self.conv_spec(x, &format!("{p}.conv"), cout, k, 1)
        };
        let y = self.push(Op::Conv(spec), vec![x], cout);
        let y = self.bn(y, &format!("{p}.bn"));
        self.relu(y)
    }
    fn max_pool(&mut self, x: Value, k: usize, stride: usize, pad: usize) -> Value {
        let c = self.c(x);
        self.push(Op::MaxPool { k, stride, pad }, vec![x], c)
    }
    fn add(&mut self, a: Value, b: Value) -> Value {
        let c = self.c(a);
        self.push(Op::Add, vec![a, b], c)
    }
    fn concat(&mut self, xs: &[Value]) -> Value {
        let c = xs.iter().map(|&v| self.c(v)).sum();
        self.push(Op::Concat, xs.to_vec(), c)
    }
    /// Resize `x` to the spatial size of `like`.
    fn resize(&mut self, x: Value, like: Value) -> Value {
        let c = self.c(x);
        self.push(Op::Resize, vec![x, like], c)
    }
    fn global_avg_pool(&mut self, x: Value) -> Value {
        let c = self.c(x);
        self.push(Op::GlobalAvgPool, vec![x], c)
    }
    fn finish(mut self, outputs: Vec<Value>) -> Module {
        self.0.outputs = outputs;
        self.0
    }
}

/// The segmentation network: the encoder (`encoder2` too for `separate-encoders`) and the two
/// decoders. The encoders take `[image]` and return the stage features `[f1, …, f5]` (strides
/// 2, 4, 8, 16, 32); each decoder takes `[image, f1, …, f5]` (the image for its size only) and
/// returns its K logits at the image size. Decoder 1 reads `encoder`, decoder 2 reads
/// `encoder2` when present, else `encoder`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Segmenter {
    /// The shared encoder.
    pub encoder: Module,
    /// Decoder 2's own encoder (`separate-encoders` only).
    pub encoder2: Option<Module>,
    /// The U-Net decoder.
    pub decoder1: Module,
    /// The DeepLab v3+ decoder (absent for `decoders = "unet"`).
    pub decoder2: Option<Module>,
}

impl Segmenter {
    /// The network of `cfg` (not validated here: the consumers validate the config).
    pub(crate) fn new(cfg: &ModelConfig) -> Self {
        let encoder = encoder(cfg, "encoder");
        let feats = encoder.output_channels();
        Segmenter {
            decoder1: unet_decoder(cfg, &feats),
            decoder2: (cfg.decoders == super::Decoders::Both).then(|| deeplab_decoder(cfg, &feats)),
            encoder2: cfg
                .variant
                .separate_encoders()
                .then(|| self::encoder(cfg, "encoder2")),
            encoder,
        }
    }

    /// The modules in weight-list order: `encoder`, `decoder1`, `decoder2`, `encoder2`.
    pub(crate) fn modules(&self) -> impl Iterator<Item = &Module> {
        [&self.encoder, &self.decoder1]
            .into_iter()
            .chain(self.decoder2.as_ref())
            .chain(self.encoder2.as_ref())
    }
}

/// The ResNet encoder under `name` (torchvision v1.5 layout, no fc).
fn encoder(cfg: &ModelConfig, name: &str) -> Module {
    let (mut b, ins) = Builder::new(name, vec![cfg.in_channels]);
    let y = b.conv_bn(ins[0], "conv1", "bn1", cfg.c(64), 7, 2);
    let f1 = b.relu(y);
    let mut x = b.max_pool(f1, 3, 2, 1);
    let mut feats = vec![f1];
    for (li, (&nominal, &n)) in [64, 128, 256, 512]
        .iter()
        .zip(cfg.encoder.blocks().iter())
        .enumerate()
    {
        let planes = cfg.c(nominal);
        for blk in 0..n {
            let stride = if blk == 0 && li > 0 { 2 } else { 1 };
            let q = format!("layer{}.{blk}", li + 1);
            x = res_block(&mut b, cfg, x, &q, planes, stride);
        }
        feats.push(x);
    }
    b.finish(feats)
}

/// BasicBlock (18/34: `conv1` 3×3 stride s, `conv2` 3×3) or Bottleneck (50/101: `conv1` 1×1,
/// `conv2` 3×3 stride s, `conv3` 1×1 to planes·4), each conv with its BN, ReLU between, plus
/// the identity or `downsample.{0,1}` (1×1 conv stride s + BN), then ReLU.
fn res_block(
    b: &mut Builder,
    cfg: &ModelConfig,
    x: Value,
    q: &str,
    planes: usize,
    s: usize,
) -> Value {
    let cout = planes * cfg.encoder.expansion();
    let convs: &[(usize, usize, usize)] = if cfg.encoder.bottleneck() {
        &[(planes, 1, 1), (planes, 3, s), (cout, 1, 1)]
    } else {
        &[(planes, 3, s), (planes, 3, 1)]
    };
    let mut y = x;
    for (i, &(c, k, stride)) in convs.iter().enumerate() {
        let (conv, bn) = (format!("{q}.conv{}", i + 1), format!("{q}.bn{}", i + 1));
        y = b.conv_bn(y, &conv, &bn, c, k, stride);
        if i + 1 < convs.len() {
            y = b.relu(y);
        }
    }
    let id = if s != 1 || b.c(x) != cout {
        let (conv, bn) = (format!("{q}.downsample.0"), format!("{q}.downsample.1"));
        b.conv_bn(x, &conv, &bn, cout, 1, s)
    } else {
        x
    };
    let sum = b.add(y, id);
    b.relu(sum)
}

fn decoder_inputs(cfg: &ModelConfig, feats: &[usize]) -> Vec<usize> {
    std::iter::once(cfg.in_channels)
        .chain(feats.iter().copied())
        .collect()
}

/// Decoder 1, U-Net: `blocks.{i}` for skips f4, f3, f2, f1 then the image size, each
/// upsample → (cat skip) → 2 × (3×3 conv + BN + ReLU), channels c(256), c(128), c(64), c(32),
/// c(16); `head` 1×1 with bias → K.
fn unet_decoder(cfg: &ModelConfig, feats: &[usize]) -> Module {
    let (mut b, ins) = Builder::new("decoder1", decoder_inputs(cfg, feats));
    let (image, f) = (ins[0], &ins[1..]);
    let outs = [cfg.c(256), cfg.c(128), cfg.c(64), cfg.c(32), cfg.c(16)];
    let skips = [Some(f[3]), Some(f[2]), Some(f[1]), Some(f[0]), None];
    let mut x = f[4];
    for (i, (&c, skip)) in outs.iter().zip(skips).enumerate() {
        x = match skip {
            Some(s) => {
                let up = b.resize(x, s);
                b.concat(&[up, s])
            }
            None => b.resize(x, image),
        };
        for j in 1..=2 {
            let (conv, bn) = (format!("blocks.{i}.conv{j}"), format!("blocks.{i}.bn{j}"));
            let y = b.conv_bn(x, &conv, &bn, c, 3, 1);
            x = b.relu(y);
        }
    }
    let logits = b.head(x, "head", cfg.num_classes, 1);
    b.finish(vec![logits])
}

/// Decoder 2, DeepLab v3+: f5 upsampled to f4's size (output stride 16); ASPP `aspp.b0` 1×1
/// and `aspp.b1..b3` 3×3 at the config's rates, `aspp.pool` (GAP → 1×1 conv with bias → ReLU,
/// no BN), `aspp.project` 1×1; upsample to f2's size; cat with `low` (1×1 on f2 → 48);
/// `conv1`, `conv2` 3×3; `head` 1×1 with bias → K; upsample to the image size. All
/// conv+BN+ReLU with A = c(256) channels.
fn deeplab_decoder(cfg: &ModelConfig, feats: &[usize]) -> Module {
    let (mut b, ins) = Builder::new("decoder2", decoder_inputs(cfg, feats));
    let (image, f) = (ins[0], &ins[1..]);
    let a = cfg.c(256);
    let x = b.resize(f[4], f[3]);
    let mut branches = vec![b.conv_bn_relu(x, "aspp.b0", a, 1, 1)];
    for (i, rate) in cfg
        .aspp_rates
        .resolve(cfg.input_size)
        .into_iter()
        .enumerate()
    {
        branches.push(b.conv_bn_relu(x, &format!("aspp.b{}", i + 1), a, 3, rate));
    }
    let pooled = b.global_avg_pool(x);
    let pooled = b.head(pooled, "aspp.pool.conv", a, 1);
    let pooled = b.relu(pooled);
    branches.push(b.resize(pooled, x));
    let cat = b.concat(&branches);
    let x = b.conv_bn_relu(cat, "aspp.project", a, 1, 1);
    let x = b.resize(x, f[1]);
    let low = b.conv_bn_relu(f[1], "low", LOW_LEVEL_CHANNELS, 1, 1);
    let x = b.concat(&[x, low]);
    let x = b.conv_bn_relu(x, "conv1", a, 3, 1);
    let x = b.conv_bn_relu(x, "conv2", a, 3, 1);
    let logits = b.head(x, "head", cfg.num_classes, 1);
    let logits = b.resize(logits, image);
    b.finish(vec![logits])
}

/// The FCN discriminator (`discriminator`): input a K-channel probability map or one-hot
/// label; `conv1..3` 4×4 stride 2 padding 1 (c(64), c(128), c(256): scaled by the width like
/// every layer; unscaled it dominated the step time of the small CPU configurations) each +
/// ReLU; `up1..3` ConvTranspose 4×4 stride 2 padding 1 (c(128), c(64), 1; ReLU after up1 and
/// up2; up3 is the per-pixel logit head, with bias); resized to the input size.
pub(crate) fn discriminator(cfg: &ModelConfig) -> Module {
    let (mut b, ins) = Builder::new("discriminator", vec![cfg.num_classes]);
    let chans = [cfg.c(64), cfg.c(128), cfg.c(256)];
    let mut y = ins[0];
    for (i, &c) in chans.iter().enumerate() {
        let spec = ConvSpec {
            pad: 1,
            ..b.conv_spec(y, &format!("conv{}", i + 1), c, 4, 2)
        };
        y = b.push(Op::Conv(spec), vec![y], c);
        y = b.relu(y);
    }
    for (i, c) in [chans[1], chans[0], 1].into_iter().enumerate() {
        let spec = ConvSpec {
            pad: 1,
            bias: i == 2,
            ..b.conv_spec(y, &format!("up{}", i + 1), c, 4, 2)
        };
        y = b.push(Op::ConvTranspose(spec), vec![y], c);
        if i < 2 {
            y = b.relu(y);
        }
    }
    let y = b.resize(y, ins[0]);
    b.finish(vec![y])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AsppRates, Encoder};

    #[test]
    fn eval_frees_values_after_their_last_use_and_returns_the_outputs() {
        let cfg = ModelConfig::default();
        let m = encoder(&cfg, "encoder");
        let mut live = 0usize;
        let mut peak = 0usize;
        struct Counted<'a>(&'a std::cell::Cell<usize>);
        impl Drop for Counted<'_> {
            fn drop(&mut self) {
                self.0.set(self.0.get() - 1);
            }
        }
        let alive = std::cell::Cell::new(1);
        let input = Counted(&alive);
        let outs = m.eval(&[&input], |_, _| {
            alive.set(alive.get() + 1);
            live += 1;
            peak = peak.max(alive.get());
            Counted(&alive)
        });
        assert_eq!(outs.len(), 5);
        assert_eq!(live, m.nodes.len());
        // The five features stay alive; the ~70 intermediate values do not pile up.
        assert!(peak <= 10, "peak live values {peak}");
        drop(outs);
        assert_eq!(alive.get(), 1);
    }

    #[test]
    fn aspp_rates_come_from_the_config() {
        let rates = |m: &Module| -> Vec<usize> {
            m.nodes
                .iter()
                .filter_map(|n| match &n.op {
                    Op::Conv(c) if c.name.starts_with("aspp.b") && c.k == 3 => {
                        assert_eq!(c.pad, c.dilation);
                        Some(c.dilation)
                    }
                    _ => None,
                })
                .collect()
        };
        let mut cfg = ModelConfig {
            input_size: 64,
            encoder: Encoder::Resnet50,
            ..Default::default()
        };
        let d2 = |cfg: &ModelConfig| Segmenter::new(cfg).decoder2.unwrap();
        assert_eq!(rates(&d2(&cfg)), [6, 12, 18]);
        cfg.aspp_rates = AsppRates::Auto;
        assert_eq!(rates(&d2(&cfg)), [1, 2, 3]);
        cfg.aspp_rates = AsppRates::Fixed([2, 4, 7]);
        assert_eq!(rates(&d2(&cfg)), [2, 4, 7]);
    }
}
