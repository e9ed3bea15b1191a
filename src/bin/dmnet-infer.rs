//! dmnet-infer: run an exported DMNet model with ONNX Runtime (no libtorch needed).
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Segment volumes or shards with an exported DMNet model and ONNX Runtime.
#[derive(Parser)]
#[command(
    version,
    about,
    args_conflicts_with_subcommands = true,
    after_help = "Examples:\n  \
        dmnet-infer --model models/la.onnx --input scans/case01.nii.gz --out masks/\n  \
        dmnet-infer --model models/la.onnx --input scans/ --out masks/ --batch 16 --probabilities\n  \
        dmnet-infer --model models/ct.onnx --input dicom/series1/ --out masks/ --device cuda\n  \
        dmnet-infer --model models/la.onnx --input shards/la --out eval/ --split val\n  \
        dmnet-infer runtime\n  \
        ORT_DYLIB_PATH=/opt/ort/libonnxruntime.so.1.32.0 dmnet-infer runtime\n\n\
        The sidecar models/la.json (written by dmnet-export) must sit beside the model: it \
        holds the preprocessing, which dmnet-infer repeats. Volumes give OUT/<case>.nii.gz \
        (uint8 mask on the input's grid); shard folders give OUT/predictions.parquet and, \
        where masks exist, OUT/metrics.json."
)]
struct Cli {
    #[command(flatten)]
    log: dmnet::cli::LogArgs,
    /// ONNX Runtime library to load (default: ORT_DYLIB_PATH, then the one scripts/setup.sh installed).
    #[arg(long, global = true)]
    ort_lib: Option<PathBuf>,
    #[command(flatten)]
    run: RunArgs,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Args)]
struct RunArgs {
    /// The exported model (.onnx, with its .json sidecar beside it).
    #[arg(long, required = true)]
    model: Option<PathBuf>,
    /// A NIfTI file, a folder of NIfTI files, a DICOM series folder, or a shard folder.
    #[arg(long, required = true)]
    input: Option<PathBuf>,
    /// Output folder.
    #[arg(long, required = true)]
    out: Option<PathBuf>,
    /// Execution provider: auto (CUDA when available), cpu, or cuda (error when unavailable).
    #[arg(long, value_enum, default_value_t = dmnet::cli::DeviceChoice::Auto)]
    device: dmnet::cli::DeviceChoice,
    /// Slices per ONNX Runtime run.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Also write class probability maps (volumes: OUT/<case>_probabilities.nii.gz, 4-D float32).
    #[arg(long)]
    probabilities: bool,
    /// Shard inputs: only rows of this split (train, val, test).
    #[arg(long)]
    split: Option<String>,
    /// 4-D inputs (a 4-D NIfTI, a DICOM series with repeated positions): segment this time
    /// point (0-based); 3-D inputs are read as they are. Without it a 4-D input is an error.
    #[arg(long)]
    timepoint: Option<usize>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Load ONNX Runtime and print its library path, version and execution providers as JSON.
    Runtime,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    cli.log.init();
    let result = match cli.cmd {
        Some(Cmd::Runtime) => dmnet::onnxrt::runtime::load(cli.ort_lib.as_deref()).map(|info| {
            println!(
                "{}",
                serde_json::to_string_pretty(info).expect("serialisable")
            )
        }),
        None => {
            let r = cli.run;
            let opts = dmnet::infer::run::InferOptions {
                model: r.model.expect("required"),
                input: r.input.expect("required"),
                out: r.out.expect("required"),
                device: r.device,
                batch: r.batch,
                probabilities: r.probabilities,
                split: r.split,
                timepoint: r.timepoint,
                ort_lib: cli.ort_lib.clone(),
            };
            dmnet::infer::run::infer(&opts).map(|s| {
                eprintln!(
                    "{} case(s), {} slices in {:.2} s: {:.1} slices/s ({})",
                    s.cases, s.slices, s.seconds, s.slices_per_second, s.provider
                );
                println!("{}", serde_json::to_string(&s).expect("serialisable"));
            })
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", dmnet::error::report_line(&e));
            std::process::ExitCode::FAILURE
        }
    }
}
