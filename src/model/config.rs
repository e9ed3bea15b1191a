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
    pub fn blocks(self) -> [usize; 4] {
        match self {
            Encoder::Resnet18 => [2, 2, 2, 2],
            Encoder::Resnet34 | Encoder::Resnet50 => [3, 4, 6, 3],
            Encoder::Resnet101 => [3, 4, 23, 3],
        }
    }
    /// Whether the blocks are bottlenecks (expansion 4).
    pub fn bottleneck(self) -> bool {
        matches!(self, Encoder::Resnet50 | Encoder::Resnet101)
    }
    /// Channel expansion of a block (1 or 4).
    pub fn expansion(self) -> usize {
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
    pub fn sharpens(self) -> bool {
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
        }
    }
}

/// The multiple every input size must be (the encoder downsamples by 32, but ASPP runs at
/// stride 16 and every upsampling targets an explicit size, so 16 suffices).
pub const SIZE_MULTIPLE: usize = 16;

/// Checks that the network can take an S×S input.
pub fn validate_input_size(size: usize) -> Result<()> {
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
        Ok(())
    }
}
