//! dmnet-train: train DMNet with tch on CUDA or CPU.
use clap::{Parser, Subcommand};
use dmnet::cli::{DeviceChoice, LogArgs};

/// Train DMNet (shared encoder, U-Net + DeepLab v3+ decoders, FCN discriminator) with libtorch.
#[derive(Parser)]
#[command(
    version,
    about,
    after_help = "Examples:\n  dmnet-train check-device --device auto"
)]
struct Cli {
    #[command(flatten)]
    log: LogArgs,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Report which torch device `--device` resolves to (and why); exit 1 if unusable.
    CheckDevice {
        /// auto | cpu | cuda
        #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
        device: DeviceChoice,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    cli.log.init();
    let result = match cli.cmd {
        Cmd::CheckDevice { device } => dmnet::device::select(device).map(|d| println!("{d:?}")),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
