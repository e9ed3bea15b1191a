//! The library's one error type. Every message names the file (and, where it applies, the
//! case and the shape) so a user can act on one line.
//!
//! Also the two pieces of the bad-input policy (issue 12) that every stage shares:
//! [`report_line`] prints an error and its causes without repeating a cause that the message
//! already shows, and [`catch_panic`] turns a panic in one study's (or case's) work into that
//! study's error, so the others go on.
use std::path::{Path, PathBuf};

/// Everything that can go wrong in dmnet's library code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O operation on a file or folder failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file exists but its content is not what dmnet expects.
    #[error("{path}: {msg}")]
    InvalidInput {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
    /// Two arrays that must agree in shape do not.
    #[error("{path}: case {case}: shape mismatch: expected {expected:?}, found {found:?}")]
    Shape {
        /// The file where the mismatch was found.
        path: PathBuf,
        /// The study / patient.
        case: String,
        /// The expected shape.
        expected: Vec<usize>,
        /// The shape found.
        found: Vec<usize>,
    },
    /// A configuration (pipeline TOML, run config, CLI combination) is invalid.
    #[error("config {path}: {msg}")]
    Config {
        /// The config file (or `<cli>`).
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// A command line that cannot run as given (a missing or contradictory flag).
    #[error("{0} (see --help)")]
    Usage(String),
    /// A compute device was demanded but cannot be used.
    #[error("device: {0}")]
    Device(String),
    /// The ONNX Runtime library could not be found or loaded.
    #[error("ONNX Runtime: {0}")]
    Runtime(String),
    /// An error reported by libtorch (through tch). Held as text so that code paths without
    /// libtorch (dmnet-prep, dmnet-infer) never reference tch and the linker can drop it.
    #[error("libtorch: {0}")]
    Torch(String),
    /// The inference queue is full (`dmnet-infer serve` answers 503 with Retry-After).
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// A deadline passed (`dmnet-infer serve`: the request's).
    #[error("timed out: {0}")]
    Timeout(String),
    /// A panic (a dmnet bug) caught at a study or case boundary by [`catch_panic`].
    #[error("{path}: {what}: internal error (panic: {msg}); the other studies went on, please report this input")]
    Panic {
        /// The input being processed.
        path: PathBuf,
        /// What was being done, e.g. `case la_003`.
        what: String,
        /// The panic message.
        msg: String,
    },
}

impl Error {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
    /// An invalid-input error for `path`.
    pub(crate) fn invalid(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::InvalidInput {
            path: path.into(),
            msg: msg.into(),
        }
    }
}

/// `Result` with dmnet's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One line for the user: `err`, then each cause in its `source()` chain that the line does
/// not already show. [`Error::Io`] prints its `io::Error` and also returns it as its source, so
/// printing the chain naively (anyhow's `{:#}`) says "Permission denied (os error 13)" twice.
pub(crate) fn report_line(err: &(dyn std::error::Error + 'static)) -> String {
    let mut line = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !text.is_empty() && !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = c.source();
    }
    line
}

/// Runs `work`; a panic inside it becomes [`Error::Panic`] naming `path` and `what` (the panic
/// message is kept) instead of unwinding through the caller. Used at the study boundary of
/// `dmnet-prep ingest`, where one rayon worker's panic would otherwise abort every study.
pub(crate) fn catch_panic<T>(
    path: impl AsRef<Path>,
    what: &str,
    work: impl FnOnce() -> Result<T>,
) -> Result<T> {
    // The closures handed in only read shared state (config, plan, splits), so nothing is left
    // half-updated when they unwind.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).unwrap_or_else(|payload| {
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-text panic payload".into());
        Err(Error::Panic {
            path: path.as_ref().to_path_buf(),
            what: what.to_string(),
            msg,
        })
    })
}

/// Test hook, debug builds only: panics when the environment variable
/// `DMNET_DEBUG_PANIC_IN` equals `name` (a study name), so the tests can prove that a panic at
/// the study boundary is contained. Compiled out of release builds.
#[doc(hidden)]
pub(crate) fn debug_injected_panic(name: &str) {
    #[cfg(debug_assertions)]
    if std::env::var_os("DMNET_DEBUG_PANIC_IN").is_some_and(|v| v == name) {
        panic!("injected by DMNET_DEBUG_PANIC_IN={name}");
    }
    #[cfg(not(debug_assertions))]
    let _ = name;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denied() -> Error {
        Error::io(
            "/data/x.nii.gz",
            std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        )
    }

    #[test]
    fn io_cause_is_printed_once_through_anyhow() {
        // a real permission error from the OS when not root; the same text otherwise
        let e = anyhow::Error::from(denied());
        let naive = format!("{e:#}");
        let line = report_line(e.as_ref());
        let cause = std::io::Error::from(std::io::ErrorKind::PermissionDenied).to_string();
        assert_eq!(naive.matches(&cause).count(), 2, "{naive}");
        assert_eq!(line, format!("/data/x.nii.gz: {cause}"));
        // context added by a binary stays, and the cause still appears once
        let e = anyhow::Error::from(denied()).context("reading the pipeline");
        let line = report_line(e.as_ref());
        assert_eq!(line.matches(&cause).count(), 1, "{line}");
        assert!(
            line.starts_with("reading the pipeline: /data/x.nii.gz"),
            "{line}"
        );
    }

    #[test]
    fn a_cause_not_in_the_message_is_kept() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("inner cause"));
        assert_eq!(report_line(&e), "outer: inner cause");
    }

    #[test]
    fn panics_become_errors_with_their_message() {
        let p = Path::new("/data/case_7");
        // a real out-of-bounds index, as an unchecked read of a file value would panic
        let r: Result<u8> = catch_panic(p, "case case_7", || {
            let v: Vec<u8> = Vec::new();
            Ok(v[std::hint::black_box(3)])
        });
        let msg = r.unwrap_err().to_string();
        assert!(
            msg.starts_with(
                "/data/case_7: case case_7: internal error (panic: index out of bounds: the len is 0 but the index is 3)"
            ),
            "{msg}"
        );
        let fine = catch_panic(p, "case case_7", || Ok(5));
        assert_eq!(fine.unwrap(), 5);
        let formatted: Result<()> = catch_panic(p, "x", || panic!("{} {}", "two", "words"));
        assert!(formatted
            .unwrap_err()
            .to_string()
            .contains("panic: two words"));
    }
}
