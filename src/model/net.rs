//! The DMNet network in tch (paper §3.1, Fig. 1): a ResNet encoder returning its five stage
//! features, the U-Net decoder (decoder 1), the DeepLab v3+ decoder (decoder 2) and the FCN
//! discriminator (§3.4). The layout and weight names are fixed by the architecture contract in
//! `docs/contracts.md`; [`super::weight_specs`] lists them without libtorch.
use super::names::{
    aspp_channels, decoder1_channels, discriminator_channels, encoder_channels, LOW_LEVEL_CHANNELS,
};
use super::ModelConfig;
use crate::Result;
use tch::nn;
use tch::Tensor;

/// A k×k convolution with padding (k−1)/2 (7→3, 3→1, 1→0, 4→1).
fn conv(p: nn::Path, cin: usize, cout: usize, k: usize, stride: i64, bias: bool) -> nn::Conv2D {
    conv_dilated(p, cin, cout, k, stride, 1, bias)
}

/// A k×k convolution with dilation d and padding d·(k−1)/2.
fn conv_dilated(
    p: nn::Path,
    cin: usize,
    cout: usize,
    k: usize,
    stride: i64,
    dil: i64,
    bias: bool,
) -> nn::Conv2D {
    let cfg = nn::ConvConfig {
        stride,
        padding: dil * ((k as i64 - 1) / 2),
        dilation: dil,
        bias,
        ..Default::default()
    };
    nn::conv2d(p, cin as i64, cout as i64, k as i64, cfg)
}

fn bn(p: nn::Path, c: usize) -> nn::BatchNorm {
    let cfg = nn::BatchNormConfig {
        eps: 1e-5,
        momentum: 0.1,
        ..Default::default()
    };
    nn::batch_norm2d(p, c as i64, cfg)
}

/// Bilinear upsampling (align_corners = false) to an explicit size.
pub fn resize(x: &Tensor, h: i64, w: i64) -> Tensor {
    let s = x.size();
    if s[2] == h && s[3] == w {
        return x.shallow_clone();
    }
    x.upsample_bilinear2d([h, w], false, None, None)
}

fn resize_like(x: &Tensor, like: &Tensor) -> Tensor {
    let s = like.size();
    resize(x, s[2], s[3])
}

/// A conv + BN pair (`conv`, `bn`) followed by ReLU.
#[derive(Debug)]
struct ConvBn {
    conv: nn::Conv2D,
    bn: nn::BatchNorm,
}

impl ConvBn {
    fn new(p: &nn::Path, cin: usize, cout: usize, k: usize, dil: i64) -> Self {
        ConvBn {
            conv: conv_dilated(p / "conv", cin, cout, k, 1, dil, false),
            bn: bn(p / "bn", cout),
        }
    }
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        x.apply(&self.conv).apply_t(&self.bn, train).relu()
    }
}

/// A ResNet block (BasicBlock or Bottleneck) with optional `downsample.{0,1}`.
#[derive(Debug)]
struct Block {
    convs: Vec<(nn::Conv2D, nn::BatchNorm)>,
    downsample: Option<(nn::Conv2D, nn::BatchNorm)>,
}

impl Block {
    fn new(p: &nn::Path, cin: usize, planes: usize, stride: i64, bottleneck: bool) -> Self {
        let (convs, cout) = if bottleneck {
            let out = planes * 4;
            let v = vec![
                (
                    conv(p / "conv1", cin, planes, 1, 1, false),
                    bn(p / "bn1", planes),
                ),
                (
                    conv(p / "conv2", planes, planes, 3, stride, false),
                    bn(p / "bn2", planes),
                ),
                (
                    conv(p / "conv3", planes, out, 1, 1, false),
                    bn(p / "bn3", out),
                ),
            ];
            (v, out)
        } else {
            let v = vec![
                (
                    conv(p / "conv1", cin, planes, 3, stride, false),
                    bn(p / "bn1", planes),
                ),
                (
                    conv(p / "conv2", planes, planes, 3, 1, false),
                    bn(p / "bn2", planes),
                ),
            ];
            (v, planes)
        };
        let downsample = (stride != 1 || cin != cout).then(|| {
            let d = p / "downsample";
            (
                conv(&d / "0", cin, cout, 1, stride, false),
                bn(&d / "1", cout),
            )
        });
        Block { convs, downsample }
    }
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let n = self.convs.len();
        let mut y = x.shallow_clone();
        for (i, (c, b)) in self.convs.iter().enumerate() {
            y = y.apply(c).apply_t(b, train);
            if i + 1 < n {
                y = y.relu();
            }
        }
        let id = match &self.downsample {
            Some((c, b)) => x.apply(c).apply_t(b, train),
            None => x.shallow_clone(),
        };
        (y + id).relu()
    }
}

/// The ResNet encoder (torchvision v1.5 layout, no fc); `forward_t` returns f1..f5.
#[derive(Debug)]
pub struct ResNetEncoder {
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    layers: Vec<Vec<Block>>,
}

impl ResNetEncoder {
    /// Builds the encoder under `p` (`encoder` or `encoder2`).
    pub fn new(p: &nn::Path, cfg: &ModelConfig) -> Self {
        let c64 = cfg.c(64);
        let conv1 = conv(p / "conv1", cfg.in_channels, c64, 7, 2, false);
        let bn1 = bn(p / "bn1", c64);
        let e = cfg.encoder.expansion();
        let mut cin = c64;
        let mut layers = Vec::new();
        for (li, (&nominal, &n)) in [64, 128, 256, 512]
            .iter()
            .zip(cfg.encoder.blocks().iter())
            .enumerate()
        {
            let lp = p / format!("layer{}", li + 1);
            let planes = cfg.c(nominal);
            let blocks = (0..n)
                .map(|b| {
                    let stride = if b == 0 && li > 0 { 2 } else { 1 };
                    let blk = Block::new(
                        &(&lp / b.to_string()),
                        cin,
                        planes,
                        stride,
                        cfg.encoder.bottleneck(),
                    );
                    cin = planes * e;
                    blk
                })
                .collect();
            layers.push(blocks);
        }
        ResNetEncoder { conv1, bn1, layers }
    }

    /// The stage features f1 (stride 2) … f5 (stride 32).
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Vec<Tensor> {
        let f1 = x.apply(&self.conv1).apply_t(&self.bn1, train).relu();
        let mut y = f1.max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false);
        let mut feats = vec![f1];
        for layer in &self.layers {
            for blk in layer {
                y = blk.forward_t(&y, train);
            }
            feats.push(y.shallow_clone());
        }
        feats
    }
}

/// Decoder 1: U-Net style (`decoder1.blocks.{0..4}`, `decoder1.head`).
#[derive(Debug)]
pub struct UNetDecoder {
    blocks: Vec<[(nn::Conv2D, nn::BatchNorm); 2]>,
    head: nn::Conv2D,
}

impl UNetDecoder {
    /// Builds decoder 1 under `p` (`decoder1`).
    pub fn new(p: &nn::Path, cfg: &ModelConfig) -> Self {
        let f = encoder_channels(cfg);
        let out = decoder1_channels(cfg);
        let skips = [f[3], f[2], f[1], f[0], 0];
        let mut cin = f[4];
        let bp = p / "blocks";
        let blocks = (0..5)
            .map(|i| {
                let q = &bp / i.to_string();
                let b = [
                    (
                        conv(&q / "conv1", cin + skips[i], out[i], 3, 1, false),
                        bn(&q / "bn1", out[i]),
                    ),
                    (
                        conv(&q / "conv2", out[i], out[i], 3, 1, false),
                        bn(&q / "bn2", out[i]),
                    ),
                ];
                cin = out[i];
                b
            })
            .collect();
        let head = conv(p / "head", cin, cfg.num_classes, 1, 1, true);
        UNetDecoder { blocks, head }
    }

    /// K logits at S×S from the encoder features.
    pub fn forward_t(&self, f: &[Tensor], size: i64, train: bool) -> Tensor {
        let mut x = f[4].shallow_clone();
        for (i, blk) in self.blocks.iter().enumerate() {
            x = if i < 4 {
                let skip = &f[3 - i];
                Tensor::cat(&[resize_like(&x, skip), skip.shallow_clone()], 1)
            } else {
                resize(&x, size, size)
            };
            for (c, b) in blk {
                x = x.apply(c).apply_t(b, train).relu();
            }
        }
        x.apply(&self.head)
    }
}

/// Decoder 2: DeepLab v3+ (`decoder2.aspp.*`, `low`, `conv1`, `conv2`, `head`).
#[derive(Debug)]
pub struct DeepLabDecoder {
    aspp: Vec<ConvBn>,
    pool_conv: nn::Conv2D,
    project: ConvBn,
    low: ConvBn,
    conv1: ConvBn,
    conv2: ConvBn,
    head: nn::Conv2D,
}

impl DeepLabDecoder {
    /// Builds decoder 2 under `p` (`decoder2`).
    pub fn new(p: &nn::Path, cfg: &ModelConfig) -> Self {
        let f = encoder_channels(cfg);
        let a = aspp_channels(cfg);
        let ap = p / "aspp";
        let aspp = [(1usize, 1i64), (3, 6), (3, 12), (3, 18)]
            .iter()
            .enumerate()
            .map(|(i, &(k, d))| ConvBn::new(&(&ap / format!("b{i}")), f[4], a, k, d))
            .collect();
        DeepLabDecoder {
            aspp,
            pool_conv: conv(&ap / "pool" / "conv", f[4], a, 1, 1, true),
            project: ConvBn::new(&(&ap / "project"), 5 * a, a, 1, 1),
            low: ConvBn::new(&(p / "low"), f[1], LOW_LEVEL_CHANNELS, 1, 1),
            conv1: ConvBn::new(&(p / "conv1"), a + LOW_LEVEL_CHANNELS, a, 3, 1),
            conv2: ConvBn::new(&(p / "conv2"), a, a, 3, 1),
            head: conv(p / "head", a, cfg.num_classes, 1, 1, true),
        }
    }

    /// K logits at S×S from the encoder features.
    pub fn forward_t(&self, f: &[Tensor], size: i64, train: bool) -> Tensor {
        let x = resize_like(&f[4], &f[3]);
        let (h, w) = (f[3].size()[2], f[3].size()[3]);
        let mut branches: Vec<Tensor> = self.aspp.iter().map(|b| b.forward_t(&x, train)).collect();
        let pooled = x.adaptive_avg_pool2d([1, 1]).apply(&self.pool_conv).relu();
        branches.push(resize(&pooled, h, w));
        let x = self.project.forward_t(&Tensor::cat(&branches, 1), train);
        let x = resize_like(&x, &f[1]);
        let low = self.low.forward_t(&f[1], train);
        let x = Tensor::cat(&[x, low], 1);
        let x = self
            .conv2
            .forward_t(&self.conv1.forward_t(&x, train), train);
        resize(&x.apply(&self.head), size, size)
    }
}

/// The FCN discriminator (`discriminator.conv1..3`, `up1..3`): one logit per pixel from a
/// K-channel probability map or one-hot label.
#[derive(Debug)]
pub struct Discriminator {
    convs: Vec<nn::Conv2D>,
    ups: Vec<nn::ConvTranspose2D>,
}

impl Discriminator {
    /// Builds the discriminator under `p` (`discriminator`).
    pub fn new(p: &nn::Path, cfg: &ModelConfig) -> Self {
        let [c1, c2, c3] = discriminator_channels(cfg);
        let chans = [cfg.num_classes, c1, c2, c3];
        let convs = (0..3)
            .map(|i| {
                conv(
                    p / format!("conv{}", i + 1),
                    chans[i],
                    chans[i + 1],
                    4,
                    2,
                    false,
                )
            })
            .collect();
        let up_chans = [c3, c2, c1, 1];
        let ups = (0..3)
            .map(|i| {
                let cfg = nn::ConvTransposeConfig {
                    stride: 2,
                    padding: 1,
                    bias: i == 2,
                    ..Default::default()
                };
                nn::conv_transpose2d(
                    p / format!("up{}", i + 1),
                    up_chans[i] as i64,
                    up_chans[i + 1] as i64,
                    4,
                    cfg,
                )
            })
            .collect();
        Discriminator { convs, ups }
    }

    /// Logits `[N, 1, H, W]` at the input's size.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let s = x.size();
        let mut y = x.shallow_clone();
        for c in &self.convs {
            y = y.apply(c).relu();
        }
        for (i, u) in self.ups.iter().enumerate() {
            y = y.apply(u);
            if i < 2 {
                y = y.relu();
            }
        }
        resize(&y, s[2], s[3])
    }
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
    /// The inference output: the average of the two decoders' softmax probabilities.
    pub fn probabilities(&self) -> Tensor {
        (self.logits1.softmax(1, tch::Kind::Float) + self.logits2.softmax(1, tch::Kind::Float))
            / 2.0
    }
}

/// The segmentation network: encoder (+ `encoder2` for separate encoders) and two decoders.
#[derive(Debug)]
pub struct DmNet {
    cfg: ModelConfig,
    encoder: ResNetEncoder,
    encoder2: Option<ResNetEncoder>,
    decoder1: UNetDecoder,
    decoder2: DeepLabDecoder,
}

impl DmNet {
    /// Builds the network under `p` (normally the var store's root). Validates the config.
    pub fn new(p: &nn::Path, cfg: &ModelConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(DmNet {
            cfg: cfg.clone(),
            encoder: ResNetEncoder::new(&(p / "encoder"), cfg),
            decoder1: UNetDecoder::new(&(p / "decoder1"), cfg),
            decoder2: DeepLabDecoder::new(&(p / "decoder2"), cfg),
            encoder2: cfg
                .variant
                .separate_encoders()
                .then(|| ResNetEncoder::new(&(p / "encoder2"), cfg)),
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

    /// Both decoders' logits at the input size.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> DmNetOutput {
        let size = x.size()[2];
        let f = self.encoder.forward_t(x, train);
        let logits1 = self.decoder1.forward_t(&f, size, train);
        let logits2 = match &self.encoder2 {
            Some(e2) => self
                .decoder2
                .forward_t(&e2.forward_t(x, train), size, train),
            None => self.decoder2.forward_t(&f, size, train),
        };
        DmNetOutput { logits1, logits2 }
    }
}
