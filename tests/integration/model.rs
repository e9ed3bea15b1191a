//! The DMNet network: output shapes for every encoder depth at the paper's sizes, rejection of
//! sizes the architecture cannot take, and the weight names fixed by the architecture contract.
use dmnet::model::{
    discriminator_specs, param_groups, weight_specs, Discriminator, DmNet, Encoder, ModelConfig,
    Variant, WeightSpec,
};
use std::collections::BTreeMap;
use tch::{nn, Device, Kind, Tensor};

fn small(encoder: Encoder, size: usize, variant: Variant) -> ModelConfig {
    ModelConfig {
        in_channels: 3,
        num_classes: 3,
        encoder,
        width: 0.125,
        input_size: size,
        variant,
        ..Default::default()
    }
}

#[test]
fn every_depth_gives_k_logits_at_224_and_240() {
    let _g = tch::no_grad_guard();
    for encoder in Encoder::ALL {
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = small(encoder, 224, Variant::Dmnet);
        let net = DmNet::new(&vs.root(), &cfg).unwrap();
        for size in [224i64, 240] {
            let x = Tensor::randn([1, 3, size, size], (Kind::Float, Device::Cpu));
            net.check_input(&x).unwrap();
            let out = net.forward_t(&x, false);
            assert_eq!(out.logits1.size(), [1, 3, size, size], "{encoder:?} {size}");
            assert_eq!(out.logits2.size(), [1, 3, size, size], "{encoder:?} {size}");
            let p = out.probabilities();
            let total = p.sum_dim_intlist([1i64].as_slice(), false, Kind::Float);
            assert!((total - 1.0).abs().max().double_value(&[]) < 1e-5);
        }
    }
}

#[test]
fn separate_encoders_and_discriminator_shapes() {
    let _g = tch::no_grad_guard();
    let vs = nn::VarStore::new(Device::Cpu);
    let cfg = small(Encoder::Resnet18, 64, Variant::SeparateEncoders);
    let net = DmNet::new(&vs.root(), &cfg).unwrap();
    let x = Tensor::randn([2, 3, 64, 64], (Kind::Float, Device::Cpu));
    let out = net.forward_t(&x, true);
    assert_eq!(out.logits2.size(), [2, 3, 64, 64]);
    let d = Discriminator::new(&(vs.root() / "discriminator"), &cfg);
    assert_eq!(d.forward(&out.probabilities()).size(), [2, 1, 64, 64]);
}

#[test]
fn sizes_that_are_not_multiples_of_16_are_rejected() {
    for size in [100usize, 16, 230] {
        let cfg = ModelConfig {
            input_size: size,
            ..Default::default()
        };
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("multiple of 16"), "{size}: {err}");
        let vs = nn::VarStore::new(Device::Cpu);
        assert!(DmNet::new(&vs.root(), &cfg).is_err());
    }
    let vs = nn::VarStore::new(Device::Cpu);
    let net = DmNet::new(&vs.root(), &small(Encoder::Resnet18, 224, Variant::Dmnet)).unwrap();
    let x = Tensor::zeros([1, 3, 200, 200], (Kind::Float, Device::Cpu));
    let err = net.check_input(&x).unwrap_err().to_string();
    assert!(err.contains("multiple of 16"), "{err}");
}

fn store_specs(vs: &nn::VarStore) -> BTreeMap<String, Vec<usize>> {
    vs.variables()
        .into_iter()
        .map(|(k, t)| (k, t.size().iter().map(|&d| d as usize).collect()))
        .collect()
}

fn spec_map(specs: Vec<WeightSpec>) -> BTreeMap<String, Vec<usize>> {
    specs.into_iter().map(|w| (w.name, w.shape)).collect()
}

/// The torch-free name list (used by the exporter) matches the tch modules for every depth
/// and variant.
#[test]
fn weight_specs_match_the_tch_modules() {
    for encoder in Encoder::ALL {
        for variant in [
            Variant::Dmnet,
            Variant::SeparateEncoders,
            Variant::Supervised,
        ] {
            let cfg = small(encoder, 224, variant);
            let vs = nn::VarStore::new(Device::Cpu);
            DmNet::new(&vs.root(), &cfg).unwrap();
            if variant.uses_adversarial() {
                Discriminator::new(&(vs.root() / "discriminator"), &cfg);
            }
            let mut expected = spec_map(weight_specs(&cfg));
            expected.extend(spec_map(discriminator_specs(&cfg)));
            assert_eq!(store_specs(&vs), expected, "{encoder:?} {variant:?}");
        }
    }
}

/// The full list for resnet18, 1 input channel, K = 2, width 1 is fixed in a golden file
/// (`tests/golden/weights-resnet18-in1-k2.txt`: name and shape per line, module order).
#[test]
fn weight_names_resnet18_in1_k2_are_fixed() {
    let cfg = ModelConfig::default();
    assert_eq!(
        (cfg.in_channels, cfg.num_classes, cfg.encoder),
        (1, 2, Encoder::Resnet18)
    );
    let lines: Vec<String> = weight_specs(&cfg)
        .into_iter()
        .chain(discriminator_specs(&cfg))
        .map(|w| format!("{} {:?}", w.name, w.shape))
        .collect();
    let golden_path = crate::util::root().join("tests/golden/weights-resnet18-in1-k2.txt");
    let golden = std::fs::read_to_string(&golden_path).unwrap();
    let golden: Vec<&str> = golden.lines().collect();
    assert_eq!(lines.len(), golden.len());
    for (a, b) in lines.iter().zip(&golden) {
        assert_eq!(a, b);
    }
    // And the tch modules create exactly these tensors.
    let vs = nn::VarStore::new(Device::Cpu);
    DmNet::new(&vs.root(), &cfg).unwrap();
    Discriminator::new(&(vs.root() / "discriminator"), &cfg);
    let got = store_specs(&vs);
    assert_eq!(got.len(), golden.len());
    for line in golden {
        let name = line.split(' ').next().unwrap();
        assert!(got.contains_key(name), "{name} missing in the VarStore");
    }
}

/// The optimiser groups come from the network description: together they are exactly the
/// trainable variables tch creates (no BN running statistics), split by module, with
/// `encoder2` in the segmenter's group and nothing of the discriminator in it.
#[test]
fn param_groups_are_the_trainable_variables_split_by_module() {
    use std::collections::BTreeSet;
    for variant in [
        Variant::Dmnet,
        Variant::SeparateEncoders,
        Variant::Supervised,
    ] {
        let cfg = small(Encoder::Resnet18, 64, variant);
        let vs = nn::VarStore::new(Device::Cpu);
        DmNet::new(&vs.root(), &cfg).unwrap();
        if variant.uses_adversarial() {
            Discriminator::new(&(vs.root() / "discriminator"), &cfg);
        }
        let trainable: BTreeSet<String> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .map(|(n, _)| n)
            .collect();
        let groups = param_groups(&cfg);
        let seg: BTreeSet<String> = groups.segmenter.into_iter().collect();
        let dis: BTreeSet<String> = groups.discriminator.into_iter().collect();
        assert!(seg.is_disjoint(&dis));
        assert_eq!(&seg | &dis, trainable, "{variant:?}");
        assert!(seg.iter().all(|n| !n.starts_with("discriminator.")));
        assert!(dis.iter().all(|n| n.starts_with("discriminator.")));
        assert_eq!(dis.is_empty(), !variant.uses_adversarial());
        let has_encoder2 = seg.iter().any(|n| n.starts_with("encoder2."));
        assert_eq!(has_encoder2, variant.separate_encoders(), "{variant:?}");
    }
}
