//! The DMNet network in tch (paper §3.1, Fig. 1; §3.4 for the discriminator): each part is a
//! [`Stage`] built from its torch-free description ([`super::arch`]) at `p / "<field>"`, with
//! one tch layer per conv/BN node under the node's dotted name, so the variables are exactly
//! [`super::weight_specs`].
use super::arch::{self, Module, Op, Segmenter, BN_EPS, BN_MOMENTUM};
use super::ModelConfig;
use crate::Result;
use tch::nn;
use tch::Tensor;

/// Bilinear upsampling (align_corners = false) to an explicit size.
pub fn resize(x: &Tensor, h: i64, w: i64) -> Tensor {
    let s = x.size();
    if s[2] == h && s[3] == w {
        return x.shallow_clone();
    }
    x.upsample_bilinear2d([h, w], false, None, None)
}

/// The path of a dotted name (`layer1.0.conv1`) under `p`.
fn path<'a>(p: &nn::Path<'a>, dotted: &str) -> nn::Path<'a> {
    let mut parts = dotted.split('.');
    let first = p / parts.next().unwrap_or_default();
    parts.fold(first, |q, s| q / s)
}

/// The tch layer of one node (none for parameter-free operations).
#[derive(Debug)]
enum Layer {
    None,
    Conv(nn::Conv2D),
    ConvTranspose(nn::ConvTranspose2D),
    BatchNorm(nn::BatchNorm),
}

impl Layer {
    fn new(p: &nn::Path, op: &Op) -> Layer {
        let i = |v: usize| v as i64;
        match op {
            Op::Conv(c) => {
                let cfg = nn::ConvConfig {
                    stride: i(c.stride),
                    padding: i(c.pad),
                    dilation: i(c.dilation),
                    bias: c.bias,
                    ..Default::default()
                };
                Layer::Conv(nn::conv2d(
                    path(p, &c.name),
                    i(c.cin),
                    i(c.cout),
                    i(c.k),
                    cfg,
                ))
            }
            Op::ConvTranspose(c) => {
                let cfg = nn::ConvTransposeConfig {
                    stride: i(c.stride),
                    padding: i(c.pad),
                    dilation: i(c.dilation),
                    bias: c.bias,
                    ..Default::default()
                };
                let (cin, cout, k) = (i(c.cin), i(c.cout), i(c.k));
                Layer::ConvTranspose(nn::conv_transpose2d(path(p, &c.name), cin, cout, k, cfg))
            }
            Op::BatchNorm { name, c } => {
                let cfg = nn::BatchNormConfig {
                    eps: BN_EPS,
                    momentum: BN_MOMENTUM,
                    ..Default::default()
                };
                Layer::BatchNorm(nn::batch_norm2d(path(p, name), i(*c), cfg))
            }
            _ => Layer::None,
        }
    }
}

/// One part of the network (encoder, decoder, discriminator) as tch layers.
#[derive(Debug)]
pub(crate) struct Stage {
    module: Module,
    layers: Vec<Layer>,
}

impl Stage {
    /// Creates the variables of `module` under `p` (the module's own path, e.g. `root / "decoder1"`).
    pub(crate) fn new(p: &nn::Path, module: Module) -> Self {
        let layers = module.nodes.iter().map(|n| Layer::new(p, &n.op)).collect();
        Stage { module, layers }
    }

    /// The module's outputs for its inputs (see [`Segmenter`] for what each part takes).
    pub(crate) fn forward_t(&self, inputs: &[&Tensor], train: bool) -> Vec<Tensor> {
        let mut layers = self.layers.iter();
        self.module.eval(inputs, |node, x| {
            let layer = layers.next().expect("one layer per node");
            match (&node.op, layer) {
                (_, Layer::Conv(c)) => x[0].apply(c),
                (_, Layer::ConvTranspose(c)) => x[0].apply(c),
                (_, Layer::BatchNorm(b)) => x[0].apply_t(b, train),
                (Op::Relu, _) => x[0].relu(),
                (&Op::MaxPool { k, stride, pad }, _) => {
                    let (k, s, p) = (k as i64, stride as i64, pad as i64);
                    x[0].max_pool2d([k, k], [s, s], [p, p], [1, 1], false)
                }
                (Op::Add, _) => x[0] + x[1],
                (Op::Concat, _) => Tensor::cat(x, 1),
                (Op::Resize, _) => {
                    let s = x[1].size();
                    resize(x[0], s[2], s[3])
                }
                (Op::GlobalAvgPool, _) => x[0].adaptive_avg_pool2d([1, 1]),
                (Op::Conv(_) | Op::ConvTranspose(_) | Op::BatchNorm { .. }, Layer::None) => {
                    unreachable!("Layer::new makes a layer for every parametrised op")
                }
            }
        })
    }
}

/// The FCN discriminator (`discriminator.conv1..3`, `up1..3`): one logit per pixel from a
/// K-channel probability map or one-hot label.
#[derive(Debug)]
pub struct Discriminator {
    stage: Stage,
}

impl Discriminator {
    /// Builds the discriminator under `p` (`discriminator`).
    pub fn new(p: &nn::Path, cfg: &ModelConfig) -> Self {
        Discriminator {
            stage: Stage::new(p, arch::discriminator(cfg)),
        }
    }

    /// Logits `[N, 1, H, W]` at the input's size.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        single(self.stage.forward_t(&[x], false))
    }
}

fn single(mut v: Vec<Tensor>) -> Tensor {
    assert_eq!(v.len(), 1, "a single-output module");
    v.remove(0)
}

/// Both decoders' logits `[N, K, S, S]`.
#[derive(Debug)]
pub struct DmNetOutput {
    /// Decoder 1 (U-Net) logits.
    pub logits1: Tensor,
    /// Decoder 2 (DeepLab v3+) logits.
    pub logits2: Tensor,
}

impl DmNetOutput {
    /// The inference output: the average of the two decoders' softmax probabilities (a
    /// one-decoder network's softmax: both outputs are its logits).
    pub fn probabilities(&self) -> Tensor {
        (self.logits1.softmax(1, tch::Kind::Float) + self.logits2.softmax(1, tch::Kind::Float))
            / 2.0
    }
}

/// The segmentation network: encoder (+ `encoder2` for separate encoders) and two decoders,
/// or the U-Net decoder alone (`decoders = "unet"`; then both outputs are its logits, and the
/// averaged probabilities are its softmax).
#[derive(Debug)]
pub struct DmNet {
    cfg: ModelConfig,
    encoder: Stage,
    encoder2: Option<Stage>,
    decoder1: Stage,
    decoder2: Option<Stage>,
}

impl DmNet {
    /// Builds the network under `p` (normally the var store's root). Validates the config.
    pub fn new(p: &nn::Path, cfg: &ModelConfig) -> Result<Self> {
        cfg.validate()?;
        let net = Segmenter::new(cfg);
        Ok(DmNet {
            cfg: cfg.clone(),
            encoder: Stage::new(&(p / "encoder"), net.encoder),
            decoder1: Stage::new(&(p / "decoder1"), net.decoder1),
            decoder2: net.decoder2.map(|m| Stage::new(&(p / "decoder2"), m)),
            encoder2: net.encoder2.map(|m| Stage::new(&(p / "encoder2"), m)),
        })
    }

    /// The configuration the network was built from.
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// Checks an input batch `[N, C, S, S]` against the config (channels, square size, multiple of 16).
    pub fn check_input(&self, x: &Tensor) -> Result<()> {
        let s = x.size();
        if s.len() != 4 || s[1] as usize != self.cfg.in_channels || s[2] != s[3] {
            return Err(crate::Error::Shape {
                path: "<input>".into(),
                case: "batch".into(),
                expected: vec![
                    0,
                    self.cfg.in_channels,
                    self.cfg.input_size,
                    self.cfg.input_size,
                ],
                found: s.iter().map(|&v| v as usize).collect(),
            });
        }
        super::validate_input_size(s[2] as usize)
    }

    /// Both decoders' logits at the input size (wiring: [`Segmenter`]).
    pub fn forward_t(&self, x: &Tensor, train: bool) -> DmNetOutput {
        let decode = |d: &Stage, f: &[Tensor]| {
            let inputs: Vec<&Tensor> = std::iter::once(x).chain(f).collect();
            single(d.forward_t(&inputs, train))
        };
        let f = self.encoder.forward_t(&[x], train);
        let logits1 = decode(&self.decoder1, &f);
        let Some(d2) = &self.decoder2 else {
            let logits2 = logits1.shallow_clone();
            return DmNetOutput { logits1, logits2 };
        };
        let f2 = match &self.encoder2 {
            Some(e2) => e2.forward_t(&[x], train),
            None => f,
        };
        let logits2 = decode(d2, &f2);
        DmNetOutput { logits1, logits2 }
    }

    /// Whether the network has the second (DeepLab v3+) decoder.
    pub fn has_second_decoder(&self) -> bool {
        self.decoder2.is_some()
    }
}
