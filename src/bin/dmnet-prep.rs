//! dmnet-prep: DICOM/NIfTI studies → Parquet slice shards.
use clap::Parser;

/// Turn raw DICOM/NIfTI studies into versioned Parquet slice shards.
#[derive(Parser)]
#[command(version, about, after_help = "Example:\n  dmnet-prep --help")]
struct Cli {
    #[command(flatten)]
    log: dmnet::cli::LogArgs,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    cli.log.init();
    Ok(())
}
