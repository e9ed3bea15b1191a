//! The DMNet network (paper §3.1): a shared ResNet encoder, a U-Net decoder, a DeepLab v3+
//! decoder and the FCN discriminator (§3.4). `arch.rs` describes it once, torch-free; the weight
//! names and optimiser groups ([`weight_specs`], [`param_groups`]), the ONNX exporter and the
//! tch modules (feature `torch`) are all read off that description.
pub(crate) mod arch;
mod config;
mod names;
#[cfg(feature = "torch")]
mod net;

pub(crate) use config::validate_input_size;
pub use config::{AsppRates, Decoders, Encoder, ModelConfig, Variant};
pub use names::{
    discriminator_specs, param_groups, weight_names, weight_specs, ParamGroups, WeightSpec,
};
#[cfg(feature = "torch")]
pub use net::{resize, Discriminator, DmNet, DmNetOutput};
