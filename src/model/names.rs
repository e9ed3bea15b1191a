//! The weight names and shapes of a configuration, without libtorch: the exporter maps them to
//! ONNX initialisers and checkpoints are keyed by them. Names follow the module fields with
//! PyTorch leaf names (`encoder.layer2.0.downsample.1.running_var`); the layout is fixed in
//! `docs/contracts.md` (DMNet architecture v1).
use super::ModelConfig;

/// One tensor of the model: its name and shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightSpec {
    /// Dotted name, e.g. `decoder2.aspp.b1.conv.weight`.
    pub name: String,
    /// Shape (PyTorch layout: conv `[out, in, kh, kw]`, transposed conv `[in, out, kh, kw]`).
    pub shape: Vec<usize>,
}

struct Specs(Vec<WeightSpec>);

impl Specs {
    fn push(&mut self, name: String, shape: Vec<usize>) {
        self.0.push(WeightSpec { name, shape });
    }
    fn conv(&mut self, p: &str, cin: usize, cout: usize, k: usize, bias: bool) {
        self.push(format!("{p}.weight"), vec![cout, cin, k, k]);
        if bias {
            self.push(format!("{p}.bias"), vec![cout]);
        }
    }
    fn bn(&mut self, p: &str, c: usize) {
        for leaf in ["weight", "bias", "running_mean", "running_var"] {
            self.push(format!("{p}.{leaf}"), vec![c]);
        }
    }
    fn conv_bn(&mut self, p: &str, cin: usize, cout: usize, k: usize) {
        self.conv(&format!("{p}.conv"), cin, cout, k, false);
        self.bn(&format!("{p}.bn"), cout);
    }
}

/// Output channels of the encoder stages f1..f5.
pub fn encoder_channels(cfg: &ModelConfig) -> [usize; 5] {
    let e = cfg.encoder.expansion();
    [
        cfg.c(64),
        cfg.c(64) * e,
        cfg.c(128) * e,
        cfg.c(256) * e,
        cfg.c(512) * e,
    ]
}

fn encoder(s: &mut Specs, cfg: &ModelConfig, p: &str) {
    s.conv(&format!("{p}.conv1"), cfg.in_channels, cfg.c(64), 7, false);
    s.bn(&format!("{p}.bn1"), cfg.c(64));
    let e = cfg.encoder.expansion();
    let mut cin = cfg.c(64);
    for (li, (&nominal, &n)) in [64, 128, 256, 512]
        .iter()
        .zip(cfg.encoder.blocks().iter())
        .enumerate()
    {
        let planes = cfg.c(nominal);
        for b in 0..n {
            let q = format!("{p}.layer{}.{b}", li + 1);
            let stride = if b == 0 && li > 0 { 2 } else { 1 };
            if cfg.encoder.bottleneck() {
                s.conv(&format!("{q}.conv1"), cin, planes, 1, false);
                s.bn(&format!("{q}.bn1"), planes);
                s.conv(&format!("{q}.conv2"), planes, planes, 3, false);
                s.bn(&format!("{q}.bn2"), planes);
                s.conv(&format!("{q}.conv3"), planes, planes * e, 1, false);
                s.bn(&format!("{q}.bn3"), planes * e);
            } else {
                s.conv(&format!("{q}.conv1"), cin, planes, 3, false);
                s.bn(&format!("{q}.bn1"), planes);
                s.conv(&format!("{q}.conv2"), planes, planes, 3, false);
                s.bn(&format!("{q}.bn2"), planes);
            }
            if stride != 1 || cin != planes * e {
                s.conv(&format!("{q}.downsample.0"), cin, planes * e, 1, false);
                s.bn(&format!("{q}.downsample.1"), planes * e);
            }
            cin = planes * e;
        }
    }
}

/// Output channels of the U-Net decoder blocks 0..4.
pub fn decoder1_channels(cfg: &ModelConfig) -> [usize; 5] {
    [cfg.c(256), cfg.c(128), cfg.c(64), cfg.c(32), cfg.c(16)]
}

fn decoder1(s: &mut Specs, cfg: &ModelConfig) {
    let f = encoder_channels(cfg);
    let out = decoder1_channels(cfg);
    let skips = [f[3], f[2], f[1], f[0], 0];
    let mut cin = f[4];
    for i in 0..5 {
        let p = format!("decoder1.blocks.{i}");
        s.conv(&format!("{p}.conv1"), cin + skips[i], out[i], 3, false);
        s.bn(&format!("{p}.bn1"), out[i]);
        s.conv(&format!("{p}.conv2"), out[i], out[i], 3, false);
        s.bn(&format!("{p}.bn2"), out[i]);
        cin = out[i];
    }
    s.conv("decoder1.head", cin, cfg.num_classes, 1, true);
}

/// Channels of the DeepLab v3+ decoder (ASPP and decoder convs): A = c(256).
pub fn aspp_channels(cfg: &ModelConfig) -> usize {
    cfg.c(256)
}

/// Channels of the projected stride-4 feature in DeepLab v3+ (fixed).
pub const LOW_LEVEL_CHANNELS: usize = 48;

fn decoder2(s: &mut Specs, cfg: &ModelConfig) {
    let f = encoder_channels(cfg);
    let a = aspp_channels(cfg);
    s.conv_bn("decoder2.aspp.b0", f[4], a, 1);
    for b in 1..4 {
        s.conv_bn(&format!("decoder2.aspp.b{b}"), f[4], a, 3);
    }
    s.conv("decoder2.aspp.pool.conv", f[4], a, 1, true);
    s.conv_bn("decoder2.aspp.project", 5 * a, a, 1);
    s.conv_bn("decoder2.low", f[1], LOW_LEVEL_CHANNELS, 1);
    s.conv_bn("decoder2.conv1", a + LOW_LEVEL_CHANNELS, a, 3);
    s.conv_bn("decoder2.conv2", a, a, 3);
    s.conv("decoder2.head", a, cfg.num_classes, 1, true);
}

/// Channels of the discriminator's three stride-2 convolutions: 64, 128, 256 scaled by the
/// width multiplier like every other layer (the paper's network at width 1). Unscaled, the
/// discriminator dominated the step time of the small CPU configurations.
pub fn discriminator_channels(cfg: &ModelConfig) -> [usize; 3] {
    [cfg.c(64), cfg.c(128), cfg.c(256)]
}

/// The segmentation network's tensors (what the exporter exports), in module order:
/// `encoder`, `decoder1`, `decoder2`, and `encoder2` for `separate-encoders`.
pub fn weight_specs(cfg: &ModelConfig) -> Vec<WeightSpec> {
    let mut s = Specs(Vec::new());
    encoder(&mut s, cfg, "encoder");
    decoder1(&mut s, cfg);
    decoder2(&mut s, cfg);
    if cfg.variant.separate_encoders() {
        encoder(&mut s, cfg, "encoder2");
    }
    s.0
}

/// The discriminator's tensors (training only, never exported). Empty when the variant has no
/// adversarial loss.
pub fn discriminator_specs(cfg: &ModelConfig) -> Vec<WeightSpec> {
    let mut s = Specs(Vec::new());
    if !cfg.variant.uses_adversarial() {
        return s.0;
    }
    let [c1, c2, c3] = discriminator_channels(cfg);
    s.conv("discriminator.conv1", cfg.num_classes, c1, 4, false);
    s.conv("discriminator.conv2", c1, c2, 4, false);
    s.conv("discriminator.conv3", c2, c3, 4, false);
    // ConvTranspose weights are [in, out, k, k].
    s.push("discriminator.up1.weight".into(), vec![c3, c2, 4, 4]);
    s.push("discriminator.up2.weight".into(), vec![c2, c1, 4, 4]);
    // up3 produces the per-pixel logit: a head, so it has a bias.
    s.push("discriminator.up3.weight".into(), vec![c1, 1, 4, 4]);
    s.push("discriminator.up3.bias".into(), vec![1]);
    s.0
}

/// The names of [`weight_specs`].
pub fn weight_names(cfg: &ModelConfig) -> Vec<String> {
    weight_specs(cfg).into_iter().map(|w| w.name).collect()
}
