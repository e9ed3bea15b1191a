//! dmnet-infer: run an exported DMNet model with ONNX Runtime (no libtorch needed). Flags and
//! their mapping live in `dmnet::infer::cli`.
use clap::Parser;

fn main() -> std::process::ExitCode {
    dmnet::infer::cli::run(dmnet::infer::cli::Cli::parse())
}
