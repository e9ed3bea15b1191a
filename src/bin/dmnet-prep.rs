//! dmnet-prep: DICOM/NIfTI studies → versioned Parquet slice shards. Flags, their merging
//! and the subcommands live in `dmnet::prep::cli`.
use clap::Parser;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    dmnet::prep::cli::run(dmnet::prep::cli::Cli::parse())
}
