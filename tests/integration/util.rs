//! Fixture helpers shared by the integration tests (in the spirit of ripgrep's `tests/util.rs`):
//! paths to the built binaries, the real data under `../shared/data` (tests skip with a clear
//! message when it is absent), the venv's Python for real Arrow/ONNX clients, and temp dirs.
#![allow(dead_code)]
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Whether this is a CI run (`CI` set to anything but empty, `0` or `false`): missing data is
/// then a failure, never a skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// `../shared/data/<rel>` if present. Missing: under `CI=1` the test fails; locally it returns
/// `None` after a SKIP line written straight to the terminal (libtest's capture hides
/// `eprintln!`, so a skipped test would otherwise look like a pass).
pub fn shared_data(rel: &str, test: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("DMNET_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("../shared/data"));
    let p = dir.join(rel);
    if p.exists() {
        return Some(p);
    }
    let msg = format!(
        "{test}: {} not found (real data lives in ../shared/data)",
        p.display()
    );
    assert!(!in_ci(), "CI=1 and the test data is missing: {msg}");
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIP {msg}");
    None
}

/// Returns early from a test when the shared data is missing.
#[macro_export]
macro_rules! require_data {
    ($rel:expr) => {
        match $crate::util::shared_data($rel, module_path!()) {
            Some(p) => p,
            None => return,
        }
    };
}

/// A command for one of the package's binaries (`dmnet-prep`, `dmnet-train`, …).
pub fn bin(name: &str) -> Command {
    Command::new(bin_path(name))
}

/// The path of a built binary.
pub fn bin_path(name: &str) -> PathBuf {
    let p = match name {
        "dmnet-prep" => env!("CARGO_BIN_EXE_dmnet-prep"),
        "dmnet-train" => env!("CARGO_BIN_EXE_dmnet-train"),
        "dmnet-export" => env!("CARGO_BIN_EXE_dmnet-export"),
        "dmnet-infer" => env!("CARGO_BIN_EXE_dmnet-infer"),
        other => panic!("unknown binary {other}"),
    };
    PathBuf::from(p)
}

/// The venv's Python (made by scripts/setup.sh), for real clients: pyarrow, duckdb, onnx, …
pub fn python() -> Command {
    let py = std::env::var_os("DMNET_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".dmnet/python"));
    assert!(
        py.exists(),
        "{} missing: run scripts/setup.sh",
        py.display()
    );
    Command::new(py)
}

/// Runs a command, panicking with its stderr when it fails.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A fresh temporary directory, removed on drop.
pub fn tmp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("dmnet-test-")
        .tempdir()
        .expect("tempdir")
}

/// stdout as a String.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// stderr as a String.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Whether `path` exists, for readable asserts.
pub fn exists(path: &Path) -> bool {
    path.exists()
}

/// The `dcm2niix` binary (Debian package, installed by scripts/setup.sh; `DCM2NIIX`
/// overrides). Missing: under `CI=1` the test fails; locally it skips loudly.
pub fn dcm2niix(test: &str) -> Option<PathBuf> {
    let p = std::env::var_os("DCM2NIIX")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("dcm2niix"));
    if Command::new(&p).arg("-v").output().is_ok() {
        return Some(p);
    }
    assert!(
        !in_ci(),
        "CI=1 and dcm2niix is missing: run scripts/setup.sh"
    );
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "SKIP {test}: dcm2niix not found (scripts/setup.sh installs it)"
    );
    None
}

/// The folder of DICOM test files shipped in the pydicom wheel (`pydicom/data/test_files`).
pub fn pydicom_test_files() -> PathBuf {
    let o = run_ok(
        python()
            .arg(root().join("scripts/pydicom_pixels.py"))
            .arg("--test-files"),
    );
    PathBuf::from(stdout(&o).trim())
}

/// A gunzipped copy of one of nibabel's DICOM test files (`nibabel/nicom/tests/data/NAME`,
/// `.gz` or not) in `dir`.
pub fn nibabel_dicom(name: &str, dir: &Path) -> PathBuf {
    let o = run_ok(python().args([
        "-c",
        "import nibabel, os; print(os.path.join(os.path.dirname(nibabel.__file__), 'nicom', 'tests', 'data'))",
    ]));
    let src = PathBuf::from(stdout(&o).trim()).join(name);
    let dest = dir.join(name.trim_end_matches(".gz"));
    let bytes = std::fs::read(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    let bytes = if name.ends_with(".gz") {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut v).unwrap();
        v
    } else {
        bytes
    };
    std::fs::write(&dest, bytes).unwrap();
    dest
}
