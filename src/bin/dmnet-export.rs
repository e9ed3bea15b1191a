//! dmnet-export: write a trained run's averaged two-decoder model to ONNX.
use clap::Parser;

/// Export a trained DMNet run to ONNX with a preprocessing sidecar.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    log: dmnet::cli::LogArgs,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    cli.log.init();
    Ok(())
}
