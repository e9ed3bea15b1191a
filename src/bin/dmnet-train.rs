//! dmnet-train: train DMNet with tch on CUDA or CPU, evaluate a run's checkpoints, run a grid.
//! Flags, their merging and the subcommands live in `dmnet::train::cli`.
use clap::Parser;

fn main() -> std::process::ExitCode {
    dmnet::train::cli::run(dmnet::train::cli::Cli::parse())
}
