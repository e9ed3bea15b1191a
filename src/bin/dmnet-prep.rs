//! dmnet-prep: DICOM/NIfTI studies → versioned Parquet slice shards. Flags, their merging
//! and the subcommands live in `dmnet::prep::cli`.
use clap::Parser;

fn main() -> std::process::ExitCode {
    dmnet::prep::cli::run(dmnet::prep::cli::Cli::parse())
}
