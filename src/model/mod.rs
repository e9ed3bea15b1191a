//! The DMNet network (paper §3.1): a shared ResNet encoder, a U-Net decoder, a DeepLab v3+
//! decoder and the FCN discriminator (§3.4). The configuration and the weight-name list are
//! torch-free (the exporter and dmnet-infer use them); the tch modules need feature `torch`.
mod config;
mod names;
#[cfg(feature = "torch")]
mod net;

pub use config::{validate_input_size, Encoder, ModelConfig, Variant, SIZE_MULTIPLE};
pub use names::{
    aspp_channels, decoder1_channels, discriminator_channels, discriminator_specs,
    encoder_channels, weight_names, weight_specs, WeightSpec, LOW_LEVEL_CHANNELS,
};
#[cfg(feature = "torch")]
pub use net::{
    resize, DeepLabDecoder, Discriminator, DmNet, DmNetOutput, ResNetEncoder, UNetDecoder,
};
