//! The model configuration (torch-free: the exporter and dmnet-infer read it): encoder depth and
//! width, classes, input size and the ablation variant (paper §4.3, Table 1). The loss weights
//! live in the training config (`artifact::LossConfig`).
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// ResNet encoder depth (torchvision v1.5 layout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Encoder {
    /// ResNet-18 (BasicBlock, [2, 2, 2, 2]).
    #[default]
    Resnet18,
    /// ResNet-34 (BasicBlock, [3, 4, 6, 3]).
    Resnet34,
    /// ResNet-50 (Bottleneck, [3, 4, 6, 3]).
    Resnet50,
    /// ResNet-101 (Bottleneck, [3, 4, 23, 3]), the paper's encoder.
    Resnet101,
}

impl Encoder {
    /// All depths, smallest first.
    pub const ALL: [Encoder; 4] = [
        Encoder::Resnet18,
        Encoder::Resnet34,
        Encoder::Resnet50,
        Encoder::Resnet101,
    ];
    /// Blocks per layer.
    pub(crate) fn blocks(self) -> [usize; 4] {
        match self {
            Encoder::Resnet18 => [2, 2, 2, 2],
            Encoder::Resnet34 | Encoder::Resnet50 => [3, 4, 6, 3],
            Encoder::Resnet101 => [3, 4, 23, 3],
        }
    }
    /// Whether the blocks are bottlenecks (expansion 4).
    pub(crate) fn bottleneck(self) -> bool {
        matches!(self, Encoder::Resnet50 | Encoder::Resnet101)
    }
    /// Channel expansion of a block (1 or 4).
    pub(crate) fn expansion(self) -> usize {
        if self.bottleneck() {
            4
        } else {
            1
        }
    }
    /// `resnet18`, … as used on the command line and in config files.
    pub fn name(self) -> &'static str {
        match self {
            Encoder::Resnet18 => "resnet18",
            Encoder::Resnet34 => "resnet34",
            Encoder::Resnet50 => "resnet50",
            Encoder::Resnet101 => "resnet101",
        }
    }
}

/// The training variant; the paper's ablations are configurations, not code copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Variant {
    /// Full DMNet: shared encoder, L_dice + λ1·L_adv + λ2·L_semi with sharpening.
    #[default]
    Dmnet,
    /// Labeled slices only, Dice loss only (no unlabeled data, no discriminator).
    Supervised,
    /// Labeled slices only, Dice + adversarial loss.
    SupervisedAdv,
    /// Two full encoder-decoder networks (`encoder` feeds decoder 1, `encoder2` decoder 2).
    SeparateEncoders,
    /// DMNet without sharpening of the soft masks in L_semi.
    NoSharpen,
    /// DMNet without adversarial loss and without sharpening.
    NoAdvNoSharpen,
}

impl Variant {
    /// All variants.
    pub const ALL: [Variant; 6] = [
        Variant::Dmnet,
        Variant::Supervised,
        Variant::SupervisedAdv,
        Variant::SeparateEncoders,
        Variant::NoSharpen,
        Variant::NoAdvNoSharpen,
    ];
    /// Whether unlabeled batches and L_semi are used.
    pub fn uses_unlabeled(self) -> bool {
        !matches!(self, Variant::Supervised | Variant::SupervisedAdv)
    }
    /// Whether the discriminator and L_adv are used.
    pub fn uses_adversarial(self) -> bool {
        !matches!(self, Variant::Supervised | Variant::NoAdvNoSharpen)
    }
    /// Whether the soft masks are sharpened before L_semi.
    pub(crate) fn sharpens(self) -> bool {
        !matches!(self, Variant::NoSharpen | Variant::NoAdvNoSharpen)
    }
    /// Whether decoder 2 has its own encoder (`encoder2.*`).
    pub fn separate_encoders(self) -> bool {
        matches!(self, Variant::SeparateEncoders)
    }
    /// The kebab-case name (`dmnet`, `supervised-adv`, …).
    pub fn name(self) -> &'static str {
        match self {
            Variant::Dmnet => "dmnet",
            Variant::Supervised => "supervised",
            Variant::SupervisedAdv => "supervised-adv",
            Variant::SeparateEncoders => "separate-encoders",
            Variant::NoSharpen => "no-sharpen",
            Variant::NoAdvNoSharpen => "no-adv-no-sharpen",
        }
    }
}

/// Which decoders the network has: DMNet's two (U-Net and DeepLab v3+, averaged at inference),
/// or the U-Net decoder alone (the single network of the comparators: supervised-single, Mean
/// Teacher, CPS, BCP). Set from the training method when a run starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Decoders {
    /// U-Net + DeepLab v3+ (DMNet).
    #[default]
    Both,
    /// The U-Net decoder only: probabilities = softmax of its logits.
    Unet,
}

/// The network. Saved in every run's `config.json` and model sidecar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// Image channels (1 for CT/LA MRI, 3 for BraTS T1/T1ce/T2).
    pub in_channels: usize,
    /// Classes K including background.
    pub num_classes: usize,
    /// Encoder depth.
    pub encoder: Encoder,
    /// Width multiplier w: a layer of n channels gets c(n) = max(8, round(n·w)).
    pub width: f64,
    /// Input size S (square); a multiple of 16, at least 32.
    pub input_size: usize,
    /// Training variant (ablation).
    pub variant: Variant,
    /// Dilation rates of the three atrous ASPP branches of decoder 2: `"auto"` (scaled with
    /// the stride-16 feature size, [`AsppRates::resolve`]) or three integers. A config without
    /// the key (every run config written before it existed) gets DeepLab v3+'s `[6, 12, 18]`.
    pub aspp_rates: AsppRates,
    /// The decoders (both for DMNet; the U-Net one alone for the single-network methods).
    pub decoders: Decoders,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            in_channels: 1,
            num_classes: 2,
            encoder: Encoder::Resnet18,
            width: 1.0,
            input_size: 224,
            variant: Variant::Dmnet,
            aspp_rates: AsppRates::default(),
            decoders: Decoders::Both,
        }
    }
}

/// DeepLab v3+'s ASPP rates at output stride 16 (Chen et al. 2018), tuned for ~512² inputs,
/// i.e. a 32×32 stride-16 feature map; architecture v1 used them at every size.
pub(crate) const DEEPLAB_ASPP_RATES: [usize; 3] = [6, 12, 18];

/// The stride-16 feature size DeepLab v3+'s rates were chosen for (512 / 16).
const DEEPLAB_FEATURE_SIZE: usize = 32;

/// The dilation rates of decoder 2's three atrous ASPP branches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsppRates {
    /// Scaled with the input size S (see [`AsppRates::resolve`]); written `"auto"`.
    Auto,
    /// These three rates at every size; written `[r1, r2, r3]`.
    Fixed([usize; 3]),
}

impl Default for AsppRates {
    /// `[6, 12, 18]`: what a config without the key means (architecture v1).
    fn default() -> Self {
        AsppRates::Fixed(DEEPLAB_ASPP_RATES)
    }
}

impl AsppRates {
    /// The rates for input size S. `Auto`: with F = S/16 the stride-16 feature size, each of
    /// DeepLab's 6, 12, 18 is scaled by F/32 and rounded half up, at least 1, then raised where
    /// needed to exceed the previous one (distinct, increasing): S = 512 → 6/12/18,
    /// 240 → 3/6/8, 224 → 3/5/8, 128 → 2/3/5, 64 → 1/2/3.
    pub(crate) fn resolve(self, input_size: usize) -> [usize; 3] {
        match self {
            AsppRates::Fixed(r) => r,
            AsppRates::Auto => {
                let f = input_size / SIZE_MULTIPLE;
                let mut out = [0; 3];
                let mut prev = 0;
                for (o, &base) in out.iter_mut().zip(&DEEPLAB_ASPP_RATES) {
                    let scaled = (base * f + DEEPLAB_FEATURE_SIZE / 2) / DEEPLAB_FEATURE_SIZE;
                    *o = scaled.max(1).max(prev + 1);
                    prev = *o;
                }
                out
            }
        }
    }
}

impl Serialize for AsppRates {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            AsppRates::Auto => s.serialize_str("auto"),
            AsppRates::Fixed(r) => r.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for AsppRates {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = AsppRates;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(r#""auto" or three dilation rates such as [6, 12, 18]"#)
            }
            fn visit_str<E: serde::de::Error>(
                self,
                v: &str,
            ) -> std::result::Result<Self::Value, E> {
                match v {
                    "auto" => Ok(AsppRates::Auto),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(v), &self)),
                }
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                let mut rates = Vec::new();
                while let Some(r) = seq.next_element::<usize>()? {
                    rates.push(r);
                }
                let n = rates.len();
                let r = <[usize; 3]>::try_from(rates)
                    .map_err(|_| serde::de::Error::invalid_length(n, &self))?;
                Ok(AsppRates::Fixed(r))
            }
        }
        d.deserialize_any(V)
    }
}

/// The multiple every input size must be (the encoder downsamples by 32, but ASPP runs at
/// stride 16 and every upsampling targets an explicit size, so 16 suffices).
pub(crate) const SIZE_MULTIPLE: usize = 16;

/// Checks that the network can take an S×S input.
pub(crate) fn validate_input_size(size: usize) -> Result<()> {
    if size < 2 * SIZE_MULTIPLE || !size.is_multiple_of(SIZE_MULTIPLE) {
        return Err(Error::Config {
            path: PathBuf::from("<model>"),
            msg: format!(
                "input size {size} is not supported: it must be a multiple of {SIZE_MULTIPLE} \
                 and at least {} (e.g. 224 or 240)",
                2 * SIZE_MULTIPLE
            ),
        });
    }
    Ok(())
}

impl ModelConfig {
    /// Channels of a layer nominally of `n` channels: max(8, round(n·w)).
    pub fn c(&self, n: usize) -> usize {
        ((n as f64 * self.width).round() as usize).max(8)
    }
    /// Checks every field; the error names the field and the allowed values.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Error::Config {
            path: PathBuf::from("<model>"),
            msg,
        };
        validate_input_size(self.input_size)?;
        if self.in_channels == 0 {
            return Err(bad("in_channels must be ≥ 1".into()));
        }
        if self.num_classes < 2 {
            return Err(bad(format!(
                "num_classes must be ≥ 2 (background + at least one class), got {}",
                self.num_classes
            )));
        }
        if !(self.width > 0.0 && self.width.is_finite()) {
            return Err(bad(format!("width must be > 0, got {}", self.width)));
        }
        if let AsppRates::Fixed(r) = self.aspp_rates {
            if r.contains(&0) {
                return Err(bad(format!("aspp_rates must be ≥ 1, got {r:?}")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_aspp_rates_scale_with_the_stride16_map_and_stay_distinct() {
        let auto = |s| AsppRates::Auto.resolve(s);
        assert_eq!(auto(512), [6, 12, 18]);
        assert_eq!(auto(240), [3, 6, 8]);
        assert_eq!(auto(224), [3, 5, 8]);
        assert_eq!(auto(128), [2, 3, 5]);
        assert_eq!(auto(64), [1, 2, 3]);
        assert_eq!(auto(32), [1, 2, 3]);
        for s in (32..=1024).step_by(16) {
            let r = auto(s);
            assert!(r[0] >= 1 && r[0] < r[1] && r[1] < r[2], "{s}: {r:?}");
        }
        assert_eq!(AsppRates::Fixed([2, 4, 7]).resolve(64), [2, 4, 7]);
    }

    #[test]
    fn aspp_rates_read_auto_or_three_integers_and_default_to_deeplab() {
        let json = |s: &str| serde_json::from_str::<ModelConfig>(s);
        // A config written before the key existed keeps the rates it was trained with.
        assert_eq!(
            json("{}").unwrap().aspp_rates,
            AsppRates::Fixed([6, 12, 18])
        );
        assert_eq!(
            ModelConfig::default().aspp_rates,
            AsppRates::Fixed([6, 12, 18])
        );
        let auto = json(r#"{"aspp_rates": "auto"}"#).unwrap();
        assert_eq!(auto.aspp_rates, AsppRates::Auto);
        let text = serde_json::to_string(&auto).unwrap();
        assert!(text.contains(r#""aspp_rates":"auto""#), "{text}");
        assert_eq!(json(&text).unwrap(), auto);
        let toml: ModelConfig = toml::from_str("aspp_rates = [2, 4, 7]").unwrap();
        assert_eq!(toml.aspp_rates, AsppRates::Fixed([2, 4, 7]));
        for bad in [r#""automatic""#, "[6, 12]", "[6, 12, 18, 24]", "6"] {
            let err = json(&format!(r#"{{"aspp_rates": {bad}}}"#)).unwrap_err();
            let err = err.to_string();
            assert!(
                err.contains(r#"expected "auto" or three dilation rates"#),
                "{bad}: {err}"
            );
        }
        let err = json(r#"{"aspp_rates": [-1, 2, 3]}"#).unwrap_err();
        assert!(err.to_string().contains("-1"), "{err}");
        let zero = json(r#"{"aspp_rates": [0, 2, 3]}"#).unwrap();
        assert!(zero
            .validate()
            .unwrap_err()
            .to_string()
            .contains("aspp_rates"));
    }
}
