//! The weight names and shapes of a configuration, read off the one network description
//! ([`super::arch`]) without libtorch: the exporter maps them to ONNX initialisers, checkpoints
//! are keyed by them and the optimisers' parameter groups are their trainable subsets. Names
//! are `<module>.<layer>.<leaf>` with PyTorch leaf names (`encoder.layer2.0.downsample.1.running_var`);
//! the layout is fixed in `docs/contracts.md` (DMNet architecture v1).
use super::arch::{discriminator, Module, Op, Segmenter};
use super::ModelConfig;

/// One tensor of the model: its name, shape and whether the optimiser updates it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightSpec {
    /// Dotted name, e.g. `decoder2.aspp.b1.conv.weight`.
    pub name: String,
    /// Shape (PyTorch layout: conv `[out, in, kh, kw]`, transposed conv `[in, out, kh, kw]`).
    pub shape: Vec<usize>,
    /// A parameter (conv weight/bias, BN weight/bias), not a BN running statistic.
    pub trainable: bool,
}

fn module_specs(m: &Module) -> Vec<WeightSpec> {
    let mut out = Vec::new();
    let mut push = |name: String, shape: Vec<usize>, trainable: bool| {
        out.push(WeightSpec {
            name: format!("{}.{name}", m.name),
            shape,
            trainable,
        })
    };
    for node in &m.nodes {
        match &node.op {
            Op::Conv(c) | Op::ConvTranspose(c) => {
                let shape = match node.op {
                    Op::Conv(_) => vec![c.cout, c.cin, c.k, c.k],
                    _ => vec![c.cin, c.cout, c.k, c.k],
                };
                push(format!("{}.weight", c.name), shape, true);
                if c.bias {
                    push(format!("{}.bias", c.name), vec![c.cout], true);
                }
            }
            Op::BatchNorm { name, c } => {
                for (leaf, trainable) in [
                    ("weight", true),
                    ("bias", true),
                    ("running_mean", false),
                    ("running_var", false),
                ] {
                    push(format!("{name}.{leaf}"), vec![*c], trainable);
                }
            }
            _ => {}
        }
    }
    out
}

/// The segmentation network's tensors (what the exporter exports), in module order:
/// `encoder`, `decoder1`, `decoder2`, and `encoder2` for `separate-encoders`.
pub fn weight_specs(cfg: &ModelConfig) -> Vec<WeightSpec> {
    Segmenter::new(cfg)
        .modules()
        .flat_map(module_specs)
        .collect()
}

/// The discriminator's tensors (training only, never exported). Empty when the variant has no
/// adversarial loss.
pub fn discriminator_specs(cfg: &ModelConfig) -> Vec<WeightSpec> {
    if !cfg.variant.uses_adversarial() {
        return Vec::new();
    }
    module_specs(&discriminator(cfg))
}

/// The names of [`weight_specs`].
pub fn weight_names(cfg: &ModelConfig) -> Vec<String> {
    weight_specs(cfg).into_iter().map(|w| w.name).collect()
}

/// The variables each optimiser updates (paper §4.2: one Adam for the segmentation network,
/// one for the discriminator), by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamGroups {
    /// Trainable tensors of the encoder(s) and both decoders.
    pub segmenter: Vec<String>,
    /// Trainable tensors of the discriminator (empty without adversarial loss).
    pub discriminator: Vec<String>,
}

/// The trainable subsets of [`weight_specs`] and [`discriminator_specs`].
pub fn param_groups(cfg: &ModelConfig) -> ParamGroups {
    let trainable = |specs: Vec<WeightSpec>| {
        specs
            .into_iter()
            .filter(|w| w.trainable)
            .map(|w| w.name)
            .collect()
    };
    ParamGroups {
        segmenter: trainable(weight_specs(cfg)),
        discriminator: trainable(discriminator_specs(cfg)),
    }
}
