//! Benchmark (not a test): the same weights and the same input batch through ONNX Runtime
//! (the exported model, CPU) and through the tch forward (the run's checkpoint), reporting
//! slices/s and the ratio. Used by `scripts/bench_infer.sh`.
//!
//! `cargo run --example bench_infer -- MODEL.onnx RUN_DIR [BATCH] [ITERS] [THREADS]`
use dmnet::artifact::sidecar::ModelSidecar;
use dmnet::cli::DeviceChoice;
use dmnet::onnxrt::session::OnnxModel;
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() >= 3,
        "usage: bench_infer MODEL.onnx RUN_DIR [BATCH] [ITERS] [THREADS]"
    );
    let model = std::path::PathBuf::from(&args[1]);
    let run = std::path::PathBuf::from(&args[2]);
    let arg = |i: usize, d: usize| args.get(i).and_then(|v| v.parse().ok()).unwrap_or(d);
    let (batch, iters) = (arg(3, 8), arg(4, 5));
    let threads = arg(
        5,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    );
    let side = ModelSidecar::read_for(&model)?;
    let cfg = &side.model;
    let (c, s) = (cfg.in_channels, cfg.input_size);
    tch::manual_seed(0);
    tch::set_num_threads(threads as i32);
    let x = tch::Tensor::randn(
        [batch as i64, c as i64, s as i64, s as i64],
        (tch::Kind::Float, tch::Device::Cpu),
    );
    let xv = Vec::<f32>::try_from(x.flatten(0, -1))?;

    let mut ort = OnnxModel::open_with_threads(&model, DeviceChoice::Cpu, None, Some(threads))?;
    let mut vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let net = dmnet::model::DmNet::new(&vs.root(), cfg)?;
    vs.load_partial(
        run.join("checkpoints")
            .join(side.source.checkpoint.to_string())
            .join("model.safetensors"),
    )?;

    let time = |f: &mut dyn FnMut()| {
        f();
        let t = Instant::now();
        for _ in 0..iters {
            f();
        }
        (batch * iters) as f64 / t.elapsed().as_secs_f64()
    };
    let ort_sps = time(&mut || {
        let (_, p) = ort
            .run_f32(xv.clone(), [batch, c, s, s], "probabilities")
            .unwrap();
        assert_eq!(p.len(), batch * cfg.num_classes * s * s);
    });
    let _g = tch::no_grad_guard();
    let tch_sps = time(&mut || {
        let p = net.forward_t(&x, false).probabilities();
        let _ = p.sum(tch::Kind::Float).double_value(&[]);
    });
    let report = serde_json::json!({
        "encoder": cfg.encoder.name(), "width": cfg.width, "size": s, "batch": batch,
        "iters": iters, "threads": threads,
        "ort_cpu_slices_per_s": ort_sps, "tch_cpu_slices_per_s": tch_sps,
        "ratio_ort_over_tch": ort_sps / tch_sps,
    });
    println!("{report}");
    Ok(())
}
