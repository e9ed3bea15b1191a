//! Toolchain smoke tests: libtorch through tch (train step + safetensors round trip) and ONNX
//! Runtime loaded dynamically from the venv.
use crate::util::{bin, run_ok, stdout, tmp};
use tch::{nn, nn::Module, nn::ModuleT, Device, Kind, Tensor};

#[test]
fn tch_conv_bn_relu_adam_step_and_safetensors_round_trip() {
    tch::manual_seed(0);
    let build = |vs: &nn::VarStore| {
        let root = vs.root();
        let conv = nn::conv2d(
            &root / "conv",
            1,
            4,
            3,
            nn::ConvConfig {
                padding: 1,
                ..Default::default()
            },
        );
        let bn = nn::batch_norm2d(&root / "bn", 4, Default::default());
        (conv, bn)
    };
    let vs = nn::VarStore::new(Device::Cpu);
    let (conv, bn) = build(&vs);
    // dmnet's own Adam (the one training uses; checked against torch.optim.Adam in goldens.rs)
    let names: Vec<String> = vs.variables().into_keys().collect();
    let mut opt = dmnet::train::optim::Adam::new(&vs, &names, 0.0).unwrap();
    let x = Tensor::randn([2, 1, 8, 8], (Kind::Float, Device::Cpu));
    let before = conv.ws.copy();
    let y = bn.forward_t(&conv.forward(&x), true).relu();
    assert_eq!(y.size(), [2, 4, 8, 8]);
    let loss = (y - 1.0).square().mean(Kind::Float);
    loss.backward();
    opt.step(1e-2, 1.0);
    let moved = (&conv.ws - &before).abs().max().double_value(&[]);
    assert!(moved > 0.0, "Adam step did not change the conv weight");

    let dir = tmp();
    let file = dir.path().join("w.safetensors");
    vs.save(&file).unwrap();
    // An independent reader (the safetensors crate) sees the tensors by name.
    let bytes = std::fs::read(&file).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<_> = st.names().into_iter().map(str::to_string).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "bn.bias",
            "bn.running_mean",
            "bn.running_var",
            "bn.weight",
            "conv.bias",
            "conv.weight"
        ]
    );

    let mut vs2 = nn::VarStore::new(Device::Cpu);
    let _ = build(&vs2);
    vs2.load(&file).unwrap();
    let (a, b) = (vs.variables(), vs2.variables());
    assert_eq!(a.len(), b.len());
    for (name, t) in &a {
        assert!(
            t.equal(&b[name]),
            "{name} differs after the safetensors round trip"
        );
    }
}

#[test]
fn ort_loads_from_the_venv_and_reports_its_version() {
    let info = dmnet::onnxrt::runtime::load(None).expect("ONNX Runtime from scripts/setup.sh");
    assert!(info.version.starts_with("1."), "{info:?}");
    assert!(
        info.library.to_string_lossy().contains("onnxruntime"),
        "{info:?}"
    );
    assert!(
        info.providers.iter().any(|p| p == "CPUExecutionProvider"),
        "{info:?}"
    );
    let out = run_ok(bin("dmnet-infer").arg("runtime").env_clear());
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json["version"], info.version.as_str());
}

#[test]
fn missing_ort_library_says_where_it_looked_and_how_to_fix() {
    let out = bin("dmnet-infer")
        .arg("runtime")
        .env_clear()
        .env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so.1.32.0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/libonnxruntime.so.1.32.0"),
        "{err}"
    );
    assert!(
        err.contains("ORT_DYLIB_PATH") && err.contains("scripts/setup.sh"),
        "{err}"
    );
    assert_eq!(
        err.trim().lines().count(),
        1,
        "one-line error expected: {err}"
    );
}
