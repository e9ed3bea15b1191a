//! dmnet-infer: run an exported DMNet model with ONNX Runtime (no libtorch needed).
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Segment volumes or shards with an exported DMNet model and ONNX Runtime.
#[derive(Parser)]
#[command(
    version,
    about,
    after_help = "Examples:\n  dmnet-infer runtime\n  ORT_DYLIB_PATH=/opt/ort/libonnxruntime.so.1.32.0 dmnet-infer runtime"
)]
struct Cli {
    #[command(flatten)]
    log: dmnet::cli::LogArgs,
    /// ONNX Runtime library to load (default: ORT_DYLIB_PATH, then the one scripts/setup.sh installed).
    #[arg(long, global = true)]
    ort_lib: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
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
        Cmd::Runtime => dmnet::infer::runtime::load(cli.ort_lib.as_deref()).map(|info| {
            println!(
                "{}",
                serde_json::to_string_pretty(info).expect("serialisable")
            )
        }),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
