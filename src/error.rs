//! The library's one error type. Every message names the file (and, where it applies, the
//! case and the shape) so a user can act on one line.
use std::path::PathBuf;

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
    pub fn invalid(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::InvalidInput {
            path: path.into(),
            msg: msg.into(),
        }
    }
}

/// `Result` with dmnet's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
