//! The `dmnet-infer` command line: flags and their mapping onto [`InferOptions`]. The binary
//! `src/bin/dmnet-infer.rs` only parses and calls [`run`].
use super::run::{InferOptions, OutputFormat};
use super::tta::Tta;
use crate::{Error, Result};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Examples, one command per paragraph; no line is wider than 78 columns, so clap never wraps
/// them inside a command (tested: they paste into a shell as written).
const EXAMPLES: &str = "\
Examples:
  # one NIfTI volume
  dmnet-infer --model models/la.onnx --input scans/case01.nii.gz \\
      --out masks/

  # an nnU-Net / MSD raw folder (imagesTs/, else imagesTr/), mirrored TTA
  dmnet-infer --model models/la.onnx --input Dataset027_LA/ --out pred/ \\
      --tta flip

  # a DICOM series: OUT/<series>.nii.gz and OUT/<series>.seg.dcm
  dmnet-infer --model models/ct.onnx --input dicom/series1/ --out pred/

  # a shard folder: predictions.parquet and metrics.json
  dmnet-infer --model models/la.onnx --input shards/la --out eval/ \\
      --split val

  # which ONNX Runtime is loaded, and its execution providers
  dmnet-infer runtime

The sidecar (models/la.json, written by dmnet-export) must sit beside the
model. Exit status: 0 all cases done, 2 some cases failed (one error line
each, listed in OUT/summary.json), 1 nothing could run.";

/// Segment volumes or shards with an exported DMNet model and ONNX Runtime.
#[derive(Parser)]
#[command(
    version,
    about,
    args_conflicts_with_subcommands = true,
    max_term_width = 100,
    after_help = EXAMPLES
)]
pub struct Cli {
    #[command(flatten)]
    log: crate::cli::LogArgs,
    /// ONNX Runtime library to load (default: ORT_DYLIB_PATH, then the one scripts/setup.sh installed).
    #[arg(long, global = true)]
    ort_lib: Option<PathBuf>,
    #[command(flatten)]
    run: RunArgs,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Args)]
struct RunArgs {
    /// The exported model (.onnx, with its .json sidecar beside it).
    #[arg(long, required = true)]
    model: Option<PathBuf>,
    /// A NIfTI file; a folder of NIfTI files (<case>_0000.nii.gz … groups channels); an
    /// nnU-Net/MSD raw folder; a KiTS tree; a DICOM folder; or a shard folder.
    #[arg(long, required = true)]
    input: Option<PathBuf>,
    /// Output folder.
    #[arg(long, required = true)]
    out: Option<PathBuf>,
    /// Execution provider: auto (CUDA when available), cpu, or cuda (error when unavailable).
    #[arg(long, value_enum, default_value_t = crate::cli::DeviceChoice::Auto)]
    device: crate::cli::DeviceChoice,
    /// The most slices in one ONNX Runtime run (the batching engine's one limit, the same in
    /// `serve`). `--batch` is the old name.
    #[arg(long = "max-batch", visible_alias = "batch", default_value_t = 8)]
    batch: usize,
    /// Also write class probabilities (volumes: OUT/<case>_probabilities.nii.gz, 5-D float32,
    /// vector intent).
    #[arg(long)]
    probabilities: bool,
    /// Test-time augmentation: average over mirrored inputs (flip: width axis, as trained;
    /// flip-all: both in-plane axes).
    #[arg(long, value_enum, default_value_t = Tta::None)]
    tta: Tta,
    /// Volume outputs: auto (NIfTI; DICOM inputs also a DICOM SEG), nifti, seg, both.
    #[arg(long, value_enum, default_value_t = OutputFormat::Auto)]
    format: OutputFormat,
    /// Run even when the input's channels, modality, classes or slice size differ from the
    /// model's (a warning instead of an error).
    #[arg(long)]
    allow_mismatch: bool,
    /// When the sidecar disagrees with the metadata inside the .onnx, follow the model's
    /// metadata instead of stopping.
    #[arg(long)]
    use_model_metadata: bool,
    /// Shard inputs: only rows of this split.
    #[arg(long, value_enum)]
    split: Option<crate::shard::Split>,
    /// 4-D inputs (a 4-D NIfTI, a DICOM series with repeated positions): segment this time
    /// point (0-based); 3-D inputs are read as they are. Without it a 4-D input is an error.
    #[arg(long)]
    timepoint: Option<usize>,
    /// Per-case metrics (inputs with labels): how a structure missed on one side or absent
    /// from both scores: nnunet, brats or ssl4mis (default: the model's, from its sidecar).
    #[arg(long, value_enum)]
    convention: Option<crate::metrics::Convention>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Load ONNX Runtime and print its library path, version and execution providers as JSON.
    Runtime,
    /// Serve the model over HTTP: the Open Inference Protocol (KServe v2 / Triton) and
    /// /v1/segment (a NIfTI or a zipped DICOM series in, the mask out). docs/serving.md.
    #[command(after_help = SERVE_EXAMPLES, max_term_width = 100)]
    Serve(ServeArgs),
}

const SERVE_EXAMPLES: &str = "\
Examples:
  # serve on 127.0.0.1:8000 (the default), the model named after its file
  dmnet-infer serve --model models/la.onnx

  # a bearer token, other limits, reachable from other hosts
  dmnet-infer serve --model models/la.onnx --listen 0.0.0.0:8000 \\
      --token-file /run/secrets/dmnet-token --max-batch 16

  # segment one volume (the mask comes back as .nii.gz)
  curl -sf --data-binary @scan.nii.gz -o mask.nii.gz \\
      http://127.0.0.1:8000/v1/segment

Built with the `serve` feature: make build-infer (target/release/dmnet-infer).";

/// `dmnet-infer serve` flags.
#[derive(Args)]
struct ServeArgs {
    /// The exported model (.onnx, with its .json sidecar beside it).
    #[arg(long)]
    model: PathBuf,
    /// The model name clients use (default: the model file's stem).
    #[arg(long)]
    name: Option<String>,
    /// Address and port to listen on.
    #[arg(long, default_value = "127.0.0.1:8000")]
    listen: String,
    /// Execution provider: auto, cpu or cuda.
    #[arg(long, value_enum, default_value_t = crate::cli::DeviceChoice::Auto)]
    device: crate::cli::DeviceChoice,
    /// The most slices in one ONNX Runtime run, across concurrent requests.
    #[arg(long, default_value_t = 8)]
    max_batch: usize,
    /// How long the first slices of a batch wait for more (ms; 0: no waiting).
    #[arg(long, default_value_t = 5)]
    max_delay_ms: u64,
    /// Inference jobs that may wait; beyond, requests get 503 with Retry-After.
    #[arg(long, default_value_t = 64)]
    queue: usize,
    /// A request's deadline in seconds (receiving its body, waiting and running).
    #[arg(long, default_value_t = 60.0)]
    timeout_s: f64,
    /// Largest request body (MB): 413 beyond.
    #[arg(long, default_value_t = 512)]
    max_body_mb: usize,
    /// Largest decompressed NIfTI or unzipped DICOM series (MB): 413 beyond.
    #[arg(long, default_value_t = 2048)]
    max_expanded_mb: u64,
    /// Most entries in a DICOM zip.
    #[arg(long, default_value_t = 10000)]
    max_zip_entries: usize,
    /// A file holding a bearer token that every endpoint but /v2/health/* then requires.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Test-time augmentation of /v1/segment: none, flip, flip-all.
    #[arg(long, value_enum, default_value_t = Tta::None)]
    tta: Tta,
    /// Seconds between SIGTERM turning readiness off and the end of accepting requests.
    #[arg(long, default_value_t = 5.0)]
    drain_s: f64,
    /// Follow the model's embedded metadata when the sidecar disagrees with it.
    #[arg(long)]
    use_model_metadata: bool,
}

/// `dmnet-infer`: installs the logger, runs, maps the result to the exit code (0 all cases
/// done; 2 some failed; 1 nothing could run, after one `error:` line).
pub fn run(cli: Cli) -> ExitCode {
    cli.log.init();
    crate::cli::exit_code(run_cli(cli))
}

fn run_cli(cli: Cli) -> Result<ExitCode> {
    match cli.cmd {
        Some(Cmd::Runtime) => {
            let info = crate::onnxrt::runtime::load(cli.ort_lib.as_deref())?;
            println!("{}", serde_json::to_string_pretty(info).unwrap_or_default());
            return Ok(ExitCode::SUCCESS);
        }
        Some(Cmd::Serve(a)) => return serve(a, cli.ort_lib),
        None => {}
    }
    let r = cli.run;
    let (Some(model), Some(input), Some(out)) = (r.model, r.input, r.out) else {
        return Err(Error::Usage(
            "--model, --input and --out are required".into(),
        ));
    };
    let opts = InferOptions {
        device: r.device,
        batch: r.batch,
        probabilities: r.probabilities,
        split: r.split,
        timepoint: r.timepoint,
        ort_lib: cli.ort_lib,
        tta: r.tta,
        format: r.format,
        allow_mismatch: r.allow_mismatch,
        use_model_metadata: r.use_model_metadata,
        convention: r.convention,
        ..InferOptions::new(model, input, out)
    };
    let s = super::run::infer(&opts)?;
    eprintln!(
        "{} case(s), {} slices in {:.2} s: {:.1} slices/s ({}){}",
        s.cases,
        s.slices,
        s.seconds,
        s.slices_per_second,
        s.provider,
        match s.failed.len() {
            0 => String::new(),
            n => format!("; {n} failed (see the error lines above and summary.json)"),
        }
    );
    println!("{}", serde_json::to_string(&s).unwrap_or_default());
    Ok(ExitCode::from(if s.failed.is_empty() { 0 } else { 2 }))
}

#[cfg(feature = "serve")]
fn serve(a: ServeArgs, ort_lib: Option<PathBuf>) -> Result<ExitCode> {
    let token = match &a.token_file {
        Some(p) => {
            let t = std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?;
            let t = t.trim().to_string();
            if t.is_empty() {
                return Err(Error::invalid(p, "the token file is empty"));
            }
            Some(t)
        }
        None => None,
    };
    let secs = |s: f64, what: &str| {
        std::time::Duration::try_from_secs_f64(s)
            .map_err(|_| Error::Usage(format!("{what} must be a number of seconds ≥ 0")))
    };
    super::serve::serve(super::serve::ServeOptions {
        model: a.model,
        name: a.name,
        listen: a.listen,
        device: a.device,
        ort_lib,
        max_batch: a.max_batch.max(1),
        max_delay: std::time::Duration::from_millis(a.max_delay_ms),
        queue: a.queue.max(1),
        timeout: secs(a.timeout_s, "--timeout-s")?,
        max_body: a.max_body_mb << 20,
        max_expanded: a.max_expanded_mb << 20,
        max_zip_entries: a.max_zip_entries,
        token,
        tta: a.tta,
        drain: secs(a.drain_s, "--drain-s")?,
        use_model_metadata: a.use_model_metadata,
    })?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(not(feature = "serve"))]
fn serve(_: ServeArgs, _: Option<PathBuf>) -> Result<ExitCode> {
    Err(Error::Usage(
        "this dmnet-infer was built without the `serve` feature: build the libtorch-free binaries with `make build-infer` (target/release/dmnet-infer), or `cargo build --release --no-default-features --features serve --bin dmnet-infer`".into(),
    ))
}
