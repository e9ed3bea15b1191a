//! What the four binaries share: `-v/-q` logging flags, the `--device auto|cpu|cuda` choice, a
//! progress-bar style and the exit-code mapping. Binaries stay thin (ripgrep's
//! `crates/core/main.rs`): `main` parses the stage's `Cli` (in `prep::cli`, `train::cli`,
//! `export::cli`, `infer::cli`, where the flags are merged into configs) and calls its `run`.
//! Log lines carry ANSI colours only when stderr is a terminal and `NO_COLOR` is unset
//! (<https://no-color.org>), so redirected logs stay plain text.
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use std::process::ExitCode;

/// `-v` (repeatable) and `-q` flags, flattened into every binary's arguments.
#[derive(Debug, Clone, Args)]
pub(crate) struct LogArgs {
    /// More log output (-v: debug, -vv: trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only warnings and errors; no progress bars.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

impl LogArgs {
    /// Installs the tracing subscriber (stderr). `RUST_LOG` overrides the flags.
    pub fn init(&self) {
        let level = match (self.quiet, self.verbose) {
            (true, _) => "warn",
            (false, 0) => "info",
            (false, 1) => "debug",
            _ => "trace",
        };
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{level},ort=warn")));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(colour_stderr())
            .with_writer(std::io::stderr)
            .with_target(false)
            .compact()
            .try_init();
        QUIET.store(self.quiet, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Whether log lines on stderr may carry ANSI colour codes: stderr is a terminal and
/// `NO_COLOR` is unset or empty.
pub(crate) fn colour_stderr() -> bool {
    use std::io::IsTerminal;
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stderr().is_terminal()
}

static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Where computation runs. `cuda` demanded and unavailable is an error, never a silent CPU run.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// CUDA when available, else CPU (the choice is logged).
    #[default]
    Auto,
    /// CPU only.
    Cpu,
    /// CUDA; an error when no usable GPU or CUDA library is present.
    Cuda,
}

/// A progress bar on stderr with dmnet's style; hidden under `-q` or when stderr is no terminal.
pub(crate) fn progress(len: u64, what: &str) -> ProgressBar {
    if QUIET.load(std::sync::atomic::Ordering::Relaxed) {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>8} [{elapsed_precise}] {wide_bar} {pos}/{len} {per_sec} eta {eta} {msg}",
        )
        .expect("valid template"),
    );
    bar.set_prefix(what.to_string());
    bar
}

/// A binary's exit code from its stage's result: the code the stage chose (0, or 2 when some
/// studies or cases failed), or 1 after one `error:` line on stderr (the error and its causes,
/// [`crate::error::report_line`]).
pub(crate) fn exit_code(result: crate::Result<ExitCode>) -> ExitCode {
    result.unwrap_or_else(|e| {
        eprintln!("error: {}", crate::error::report_line(&e));
        ExitCode::FAILURE
    })
}
