//! The `dmnet-export` command line. The binary `src/bin/dmnet-export.rs` only parses and
//! calls [`run`].
use crate::artifact::CheckpointKind;
use crate::Result;
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

/// Examples, one command per paragraph; no line is wider than 78 columns, so clap never wraps
/// them inside a command (tested: they paste into a shell as written).
const EXAMPLES: &str = "\
Examples:
  # the best checkpoint (by validation mIoU): models/la.onnx + models/la.json
  dmnet-export --run runs/la --out models/la.onnx

  # the last checkpoint, opset 18
  dmnet-export --run runs/la --out models/la-last.onnx --checkpoint last \\
      --opset 18

  # compare ONNX Runtime with libtorch on shard slices (fails above 1e-4)
  dmnet-export --run runs/la --out models/la.onnx --verify --shards shards/la

The sidecar's validation_metrics are dmnet-train eval's report of the exported
checkpoint (run `dmnet-train eval --checkpoint best|last` first), else null.";

/// Export a trained DMNet run to ONNX (probabilities = mean of both decoders' softmax) with a
/// `model.json` preprocessing sidecar beside it.
#[derive(Parser)]
#[command(version, about, max_term_width = 100, after_help = EXAMPLES)]
pub struct Cli {
    #[command(flatten)]
    log: crate::cli::LogArgs,
    /// The run directory (dmnet-train --out).
    #[arg(long)]
    run: PathBuf,
    /// The ONNX file to write; the sidecar goes beside it with extension .json.
    #[arg(long)]
    out: PathBuf,
    /// Which checkpoint of the run.
    #[arg(long, value_enum, default_value_t = CheckpointKind::Best)]
    checkpoint: CheckpointKind,
    /// ONNX opset (13..=21).
    #[arg(long, default_value_t = super::graph::DEFAULT_OPSET)]
    opset: i64,
    /// Compare ONNX Runtime with the tch forward on shard slices (needs --shards).
    #[arg(long, requires = "shards")]
    verify: bool,
    /// Shard folder for --verify.
    #[arg(long)]
    shards: Option<PathBuf>,
    /// Slices used by --verify.
    #[arg(long, default_value_t = 16)]
    verify_slices: usize,
}

/// `dmnet-export`: installs the logger, exports, maps the result to the exit code (0; 1 when
/// `--verify` fails or on an error, after one `error:` line).
pub fn run(cli: Cli) -> ExitCode {
    cli.log.init();
    crate::cli::exit_code(export(&cli).map(|ok| {
        if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }))
}

fn export(cli: &Cli) -> Result<bool> {
    let opts = super::run::ExportOptions {
        run: cli.run.clone(),
        out: cli.out.clone(),
        checkpoint: cli.checkpoint,
        opset: cli.opset,
    };
    let (sidecar, summary) = super::run::export_run(&opts)?;
    println!("{}", serde_json::to_string(&summary).unwrap_or_default());
    if let (true, Some(shards)) = (cli.verify, &cli.shards) {
        let r = super::verify::verify(
            &cli.out,
            &sidecar.model,
            &sidecar.source.checkpoint_file,
            shards,
            cli.verify_slices.max(1),
        )?;
        println!(
            "verify: {} slices, max |Δ probabilities| = {:.3e} (tolerance {:e}): {}",
            r.slices,
            r.max_abs_diff,
            super::verify::TOLERANCE,
            if r.ok { "OK" } else { "FAILED" }
        );
        return Ok(r.ok);
    }
    Ok(true)
}
