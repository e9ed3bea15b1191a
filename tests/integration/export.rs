//! dmnet-export: op-level parity of the ONNX graph builder against tch (same weights, ONNX
//! Runtime vs libtorch), the ONNX checker (`onnx.checker.check_model(full_check=True)` in the
//! venv's Python), and the exported DMNet model.
use crate::util::{run_ok, tmp};
use dmnet::cli::DeviceChoice;
use dmnet::export::graph::{encode, ConvOpts, Dim, GraphBuilder, T};
use dmnet::export::onnx::tensor_proto::DataType;
use dmnet::export::onnx::ModelProto;
use dmnet::onnxrt::session::OnnxModel;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;
use std::process::Command;
use tch::{Kind, Tensor};

/// The venv's Python (onnx, onnxruntime, nibabel, numpy).
pub fn py() -> Command {
    crate::util::python()
}

/// Runs the ONNX full checker on a model file.
pub fn check_model(path: &Path) {
    run_ok(py().args([
        "-c",
        "import onnx,sys; m=onnx.load(sys.argv[1]); onnx.checker.check_model(m, full_check=True)",
    ])
    .arg(path));
}

fn to_vec(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.flatten(0, -1).to_kind(Kind::Float)).unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Writes `g` to a temp file, checks it, runs it on `x` with ONNX Runtime and returns `out`.
fn run_graph(g: GraphBuilder, out: &T, x: &Tensor) -> Vec<f32> {
    let mut g = g;
    g.output(
        &out.name,
        DataType::Float,
        &[
            Dim::Param("N".into()),
            Dim::Fixed(out.c),
            Dim::Fixed(out.h),
            Dim::Fixed(out.w),
        ],
    );
    let dir = tmp();
    let path = dir.path().join("g.onnx");
    std::fs::write(&path, encode(&g.finish(&[], "test"))).unwrap();
    check_model(&path);
    let mut m = OnnxModel::open(&path, DeviceChoice::Cpu, None).unwrap();
    let s = x.size();
    let shape = [s[0] as usize, s[1] as usize, s[2] as usize, s[3] as usize];
    let (oshape, data) = m.run_f32(to_vec(x), shape, &out.name).unwrap();
    assert_eq!(oshape, [shape[0], out.c, out.h, out.w]);
    data
}

#[test]
fn resize_matches_tch_upsample_bilinear_align_corners_false() {
    tch::manual_seed(1);
    let cases = [
        (1, 1, 5, 7),
        (7, 5, 14, 10),
        (15, 15, 30, 30),
        (8, 8, 15, 15),
        (15, 9, 8, 20),
        (4, 4, 64, 64),
    ];
    for opset in [13, 17, 18, 21] {
        for &(h, w, oh, ow) in &cases {
            let x = Tensor::randn([2, 3, h, w], (Kind::Float, tch::Device::Cpu));
            let mut g = GraphBuilder::new("resize", opset).unwrap();
            let inp = g.input_nchw("x", 3, h as usize, w as usize);
            let out = g.resize_to(&inp, oh as usize, ow as usize);
            let got = run_graph(g, &out, &x);
            let want = to_vec(&x.upsample_bilinear2d([oh, ow], false, None, None));
            let d = max_abs_diff(&got, &want);
            assert!(d < 1e-5, "opset {opset} {h}x{w}->{oh}x{ow}: max |Δ| {d}");
        }
    }
}

fn randn(shape: &[i64]) -> Tensor {
    Tensor::randn(shape, (Kind::Float, tch::Device::Cpu))
}

#[test]
fn conv_bn_relu_pool_gap_concat_softmax_average_match_tch() {
    tch::manual_seed(2);
    let x = randn(&[2, 3, 20, 24]);
    let w1 = randn(&[6, 3, 3, 3]) * 0.3;
    let w2 = randn(&[5, 6, 7, 7]) * 0.1;
    let wb = randn(&[5]);
    let (g1, b1) = (randn(&[6]).abs() + 0.5, randn(&[6]));
    let (m1, v1) = (randn(&[6]) * 0.1, randn(&[6]).abs() + 0.2);
    let mut g = GraphBuilder::new("ops", 17).unwrap();
    let add = |g: &mut GraphBuilder, n: &str, t: &Tensor| {
        let dims: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
        g.initializer(n, &dims, &to_vec(t));
    };
    for (n, t) in [
        ("c1.weight", &w1),
        ("c2.weight", &w2),
        ("c2.bias", &wb),
        ("bn.weight", &g1),
        ("bn.bias", &b1),
        ("bn.running_mean", &m1),
        ("bn.running_var", &v1),
    ] {
        add(&mut g, n, t);
    }
    let inp = g.input_nchw("x", 3, 20, 24);
    // dilated conv → BN → ReLU → max-pool → strided 7×7 conv with bias
    let a = g.conv(
        &inp,
        "c1.weight",
        None,
        6,
        3,
        ConvOpts {
            stride: 1,
            pad: 2,
            dilation: 2,
        },
    );
    let a = g.batch_norm(&a, "bn", 1e-5);
    let a = g.relu(&a);
    let p = g.max_pool(&a, 3, 2, 1);
    let c = g.conv(&p, "c2.weight", Some("c2.bias"), 5, 7, ConvOpts::new(2, 3));
    let gp = g.global_avg_pool(&c);
    let gp = g.resize_to(&gp, c.h, c.w);
    let cat = g.concat(&[&c, &gp]);
    let s1 = g.softmax(&cat);
    let twice = g.add(&cat, &cat);
    let s2 = g.softmax(&twice);
    let out = g.average(&s1, &s2, "probabilities");

    let ta = x.conv2d(&w1, None::<Tensor>, [1, 1], [2, 2], [2, 2], 1);
    let ta = ta
        .batch_norm(
            Some(&g1),
            Some(&b1),
            Some(&m1),
            Some(&v1),
            false,
            0.1,
            1e-5,
            false,
        )
        .relu();
    let tp = ta.max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false);
    let tc = tp.conv2d(&w2, Some(&wb), [2, 2], [3, 3], [1, 1], 1);
    let tg = tc.adaptive_avg_pool2d([1, 1]).upsample_bilinear2d(
        [tc.size()[2], tc.size()[3]],
        false,
        None,
        None,
    );
    let tcat = Tensor::cat(&[&tc, &tg], 1);
    let want = (tcat.softmax(1, Kind::Float) + (&tcat + &tcat).softmax(1, Kind::Float)) / 2.0;
    assert_eq!(tc.size(), [2, 5, c.h as i64, c.w as i64]);
    let got = run_graph(g, &out, &x);
    let d = max_abs_diff(&got, &to_vec(&want));
    assert!(d < 1e-5, "max |Δ| {d}");
}

/// Values uniform in [lo, hi) from `rng`, as a tensor of `shape`.
fn uniform(rng: &mut ChaCha8Rng, shape: &[i64], lo: f32, hi: f32) -> Tensor {
    let n = shape.iter().product::<i64>() as usize;
    let v: Vec<f32> = (0..n).map(|_| rng.random_range(lo..hi)).collect();
    Tensor::from_slice(&v).view(shape)
}

/// A DMNet with every tensor drawn from a seeded generator in sorted-name order, saved as
/// safetensors, and an input batch from the same generator. Deterministic: tch's own
/// initialisation and `randn` share one global generator with the tests running beside this
/// one, and `vs.variables()` is a hash map whose order changes from run to run. Convs are
/// U(±1/√fan_in) (PyTorch's default bound); BN parameters and running statistics are far from
/// identity so that BN really computes something.
fn random_checkpoint(
    cfg: &dmnet::model::ModelConfig,
    file: &Path,
) -> (tch::nn::VarStore, dmnet::model::DmNet, Tensor) {
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let net = dmnet::model::DmNet::new(&vs.root(), cfg).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let bn: std::collections::HashSet<String> = vars
        .iter()
        .filter_map(|(n, _)| n.strip_suffix(".running_mean").map(String::from))
        .collect();
    tch::no_grad(|| {
        for (name, mut t) in vars {
            let size = t.size();
            let (layer, leaf) = name.rsplit_once('.').unwrap();
            let (lo, hi) = match leaf {
                "running_mean" => (-0.2, 0.2),
                "running_var" => (0.5, 2.0),
                _ if bn.contains(layer) => (0.5, 1.5),
                "weight" => {
                    let b = 1.0 / (size[1..].iter().product::<i64>() as f32).sqrt();
                    (-b, b)
                }
                _ => (-0.1, 0.1),
            };
            t.copy_(&uniform(&mut rng, &size, lo, hi));
        }
    });
    vs.save(file).unwrap();
    let s = cfg.input_size as i64;
    let x = uniform(&mut rng, &[2, cfg.in_channels as i64, s, s], -2.0, 2.0);
    (vs, net, x)
}

/// Distances (max |Δ| over the probabilities) between ONNX Runtime, the tch forward in float32
/// and the same tch model in float64 (the reference for float32 rounding error).
#[derive(Debug)]
struct Parity {
    ort_tch: f32,
    ort_exact: f32,
    tch_exact: f32,
}

/// The probabilities of `net` in float64: the model and input cast to double, softmax in double.
fn exact_probabilities(
    vs: &mut tch::nn::VarStore,
    net: &dmnet::model::DmNet,
    x: &Tensor,
) -> Tensor {
    vs.double();
    let out = tch::no_grad(|| net.forward_t(&x.to_kind(Kind::Double), false));
    let p = (out.logits1.softmax(1, Kind::Double) + out.logits2.softmax(1, Kind::Double)) / 2.0;
    vs.float();
    p
}

/// Exports `cfg` from a random checkpoint and compares ONNX Runtime with the tch forward.
fn dmnet_parity(cfg: &dmnet::model::ModelConfig, opset: i64) -> (Parity, ModelProto) {
    let dir = tmp();
    let ckpt = dir.path().join("w.safetensors");
    let (mut vs, net, x) = random_checkpoint(cfg, &ckpt);
    let weights = dmnet::export::weights::Weights::open(&ckpt).unwrap();
    let model = dmnet::export::dmnet::build_model(cfg, &weights, opset, &[]).unwrap();
    // Initializer names are exactly the checkpoint's model variable names.
    let mut init: Vec<String> = model
        .graph
        .as_ref()
        .unwrap()
        .initializer
        .iter()
        .map(|t| t.name.clone().unwrap())
        .collect();
    init.sort();
    let mut want = dmnet::model::weight_names(cfg);
    want.sort();
    assert_eq!(init, want);
    let path = dir.path().join("m.onnx");
    std::fs::write(&path, encode(&model)).unwrap();
    check_model(&path);
    let want = to_vec(&tch::no_grad(|| net.forward_t(&x, false).probabilities()));
    let exact = to_vec(&exact_probabilities(&mut vs, &net, &x));
    let mut m = OnnxModel::open(&path, DeviceChoice::Cpu, None).unwrap();
    let shape = [2, cfg.in_channels, cfg.input_size, cfg.input_size];
    let (oshape, got) = m.run_f32(to_vec(&x), shape, "probabilities").unwrap();
    assert_eq!(oshape, [2, cfg.num_classes, cfg.input_size, cfg.input_size]);
    let parity = Parity {
        ort_tch: max_abs_diff(&got, &want),
        ort_exact: max_abs_diff(&got, &exact),
        tch_exact: max_abs_diff(&want, &exact),
    };
    (parity, model)
}

/// The tolerance's reason: ONNX Runtime (MLAS) and libtorch both compute in float32 but sum
/// each convolution's products in a different order, so each carries its own rounding error,
/// which grows with depth (ResNet-50 has 53 convolutions before a decoder). Neither is the
/// truth; the float64 forward of the same model is. So ONNX Runtime must be no further from it
/// than twice libtorch's own float32 error, plus 1e-6 (a few float32 ulps of a probability) for
/// when that error is near zero; and the two within `dmnet-export --verify`'s 1e-4 of each
/// other. Measured with these weights: all three distances ≈ 1e-7. Real mistakes are far
/// above: one ASPP rate off by one gave 7e-3, align_corners instead of half_pixel resize 3e-2.
fn assert_parity(what: &str, p: &Parity) {
    eprintln!("{what}: {p:?}");
    assert!(p.ort_exact <= 2.0 * p.tch_exact + 1e-6, "{what}: {p:?}");
    assert!(
        p.ort_tch <= dmnet::export::verify::TOLERANCE,
        "{what}: {p:?}"
    );
}

#[test]
fn dmnet_graph_matches_tch_forward_for_basic_and_bottleneck_encoders() {
    use dmnet::model::{Encoder, ModelConfig, Variant};
    let cases = [
        (Encoder::Resnet18, 64, Variant::Dmnet, 17),
        (Encoder::Resnet50, 48, Variant::SeparateEncoders, 18),
    ];
    for (encoder, size, variant, opset) in cases {
        let cfg = ModelConfig {
            in_channels: 2,
            num_classes: 3,
            encoder,
            width: 0.125,
            input_size: size,
            variant,
            ..Default::default()
        };
        let (p, _) = dmnet_parity(&cfg, opset);
        assert_parity(
            &format!("{encoder:?} S={size} {variant:?} opset {opset}"),
            &p,
        );
    }
}

/// `aspp_rates = "auto"` reaches the ONNX graph through the network description: at 64² the
/// atrous branches dilate by 1, 2, 3 (not 6, 12, 18), and ONNX Runtime still matches tch.
#[test]
fn dmnet_graph_matches_tch_forward_with_auto_aspp_rates() {
    use dmnet::model::{AsppRates, Encoder, ModelConfig};
    let cfg = ModelConfig {
        in_channels: 1,
        num_classes: 2,
        encoder: Encoder::Resnet18,
        width: 0.125,
        input_size: 64,
        aspp_rates: AsppRates::Auto,
        ..Default::default()
    };
    let (p, model) = dmnet_parity(&cfg, 17);
    assert_parity("Resnet18 S=64 aspp auto", &p);
    let mut dilations: Vec<i64> = model
        .graph
        .unwrap()
        .node
        .iter()
        .filter(|n| n.op_type.as_deref() == Some("Conv"))
        .flat_map(|n| n.attribute.iter())
        .filter(|a| a.name.as_deref() == Some("dilations"))
        .map(|a| a.ints[0])
        .collect();
    dilations.sort();
    dilations.dedup();
    assert_eq!(dilations, [1, 2, 3]);
}

#[test]
fn a_model_whose_input_is_not_float32_nchw_is_refused_naming_the_file() {
    use dmnet::export::onnx::type_proto;
    let mut g = GraphBuilder::new("bad", 18).unwrap();
    let inp = g.input_nchw("x", 1, 4, 4);
    let out = g.resize_to(&inp, 8, 8);
    g.output(
        &out.name,
        DataType::Uint8,
        &[
            Dim::Param("N".into()),
            Dim::Fixed(1),
            Dim::Fixed(8),
            Dim::Fixed(8),
        ],
    );
    let mut model = g.finish(&[], "uint8 input");
    for v in model.graph.as_mut().unwrap().input.iter_mut() {
        if let Some(type_proto::Value::TensorType(t)) =
            v.r#type.as_mut().and_then(|t| t.value.as_mut())
        {
            t.elem_type = Some(DataType::Uint8 as i32);
        }
    }
    let dir = tmp();
    let path = dir.path().join("uint8.onnx");
    std::fs::write(&path, encode(&model)).unwrap();
    let err = OnnxModel::open(&path, DeviceChoice::Cpu, None)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("uint8.onnx") && err.contains("float32"),
        "{err}"
    );
}
