//! dmnet-export: write a trained run's averaged two-decoder model to ONNX. Flags live in
//! `dmnet::export::cli`.
use clap::Parser;

fn main() -> std::process::ExitCode {
    dmnet::export::cli::run(dmnet::export::cli::Cli::parse())
}
