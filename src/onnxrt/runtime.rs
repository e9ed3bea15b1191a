//! Finding and loading ONNX Runtime at run time (`ort`'s `load-dynamic`). Search order:
//! an explicit path, `ORT_DYLIB_PATH`, the library `scripts/setup.sh` linked at build time
//! (`.dmnet/libonnxruntime.so`), `libonnxruntime.so` beside the executable, then the system
//! loader path. A miss is an error that lists every place looked at and how to fix it.
use crate::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// What was loaded.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RuntimeInfo {
    /// The library file that was loaded.
    pub library: PathBuf,
    /// ONNX Runtime's own version string (e.g. `1.32.0`).
    pub version: String,
    /// Execution providers this build of ONNX Runtime offers (e.g. `CPUExecutionProvider`).
    pub providers: Vec<String>,
}

/// The candidate library paths, in search order, with where each came from. An explicit
/// `--ort-lib` or `ORT_DYLIB_PATH` is used alone: a user who names a library gets that one or
/// an error, never a silent fallback to another.
pub(crate) fn candidates(explicit: Option<&Path>) -> Vec<(String, PathBuf)> {
    if let Some(p) = explicit {
        return vec![("--ort-lib".into(), p.to_path_buf())];
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return vec![("ORT_DYLIB_PATH".into(), PathBuf::from(p))];
    }
    let mut out = Vec::new();
    let built = env!("DMNET_ORT_DYLIB_DEFAULT");
    if !built.is_empty() {
        out.push((
            "build default (scripts/setup.sh)".into(),
            PathBuf::from(built),
        ));
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        out.push((
            "beside the executable".into(),
            dir.join("libonnxruntime.so"),
        ));
    }
    out.push(("system loader".into(), PathBuf::from("libonnxruntime.so.1")));
    out
}

static ENVIRONMENT: OnceLock<ort::environment::Environment> = OnceLock::new();

/// The process-wide ONNX Runtime environment (loads the library first when needed).
pub fn environment(explicit: Option<&Path>) -> Result<&'static ort::environment::Environment> {
    load(explicit)?;
    ENVIRONMENT
        .get()
        .ok_or_else(|| Error::Runtime("environment was not created".into()))
}

/// Loads ONNX Runtime once per process (later calls return the first result).
pub fn load(explicit: Option<&Path>) -> Result<&'static RuntimeInfo> {
    static LOADED: OnceLock<std::result::Result<RuntimeInfo, String>> = OnceLock::new();
    LOADED
        .get_or_init(|| load_uncached(explicit))
        .as_ref()
        .map_err(|e| Error::Runtime(e.clone()))
}

fn load_uncached(explicit: Option<&Path>) -> std::result::Result<RuntimeInfo, String> {
    let mut looked = Vec::new();
    for (source, path) in candidates(explicit) {
        let is_bare = path.components().count() == 1;
        if !is_bare && !path.exists() {
            looked.push(format!("{} ({source}): not found", path.display()));
            continue;
        }
        match probe_version(&path) {
            Ok(version) => {
                let env = ort::init_from(&path)
                    .map_err(|e| format!("{}: {e}", path.display()))?
                    .with_name("dmnet")
                    .build()
                    .map_err(|e| format!("{}: creating the environment: {e}", path.display()))?;
                // Sessions hold a weak reference to the environment: keep it for the process.
                let _ = ENVIRONMENT.set(env);
                let providers = available_providers();
                tracing::debug!("ONNX Runtime {version} from {} ({source})", path.display());
                return Ok(RuntimeInfo {
                    library: path,
                    version,
                    providers,
                });
            }
            Err(e) => looked.push(format!("{} ({source}): {e}", path.display())),
        }
    }
    Err(format!(
        "library not found; looked at: {}. Fix: run scripts/setup.sh (installs the onnxruntime wheel), \
         or set ORT_DYLIB_PATH to a libonnxruntime.so.1.* (ONNX Runtime >= 1.{})",
        looked.join("; "),
        ort::MINOR_VERSION
    ))
}

/// Opens the library and asks it for its version, without handing it to `ort` yet.
fn probe_version(path: &Path) -> std::result::Result<String, String> {
    // SAFETY: loading ONNX Runtime runs no code beyond its own initialisers.
    let lib = unsafe { libloading::Library::new(path) }.map_err(|e| e.to_string())?;
    // SAFETY: `OrtGetApiBase` is ONNX Runtime's documented C entry point with this signature.
    let get: libloading::Symbol<unsafe extern "C" fn() -> *const ort::sys::OrtApiBase> =
        unsafe { lib.get(b"OrtGetApiBase") }
            .map_err(|_| "not an ONNX Runtime library (no OrtGetApiBase)".to_string())?;
    let base = unsafe { get() };
    if base.is_null() {
        return Err("OrtGetApiBase returned null".into());
    }
    // SAFETY: the base pointer is valid for the life of the library; the string is static.
    let v = unsafe { std::ffi::CStr::from_ptr(((*base).GetVersionString)()) };
    let version = v.to_string_lossy().into_owned();
    let minor: u32 = version
        .split('.')
        .nth(1)
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if minor < ort::MINOR_VERSION {
        return Err(format!(
            "version {version} is older than the required 1.{}",
            ort::MINOR_VERSION
        ));
    }
    Ok(version)
}

/// The execution providers compiled into the loaded ONNX Runtime.
fn available_providers() -> Vec<String> {
    let api = ort::api();
    let mut list: *mut *mut std::ffi::c_char = std::ptr::null_mut();
    let mut n: std::ffi::c_int = 0;
    // SAFETY: documented C API; the list is released below with its matching call.
    unsafe {
        let status = (api.GetAvailableProviders)(&mut list, &mut n);
        if !status.0.is_null() || list.is_null() {
            return Vec::new();
        }
        let names = (0..n as usize)
            .map(|i| {
                std::ffi::CStr::from_ptr(*list.add(i))
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        let _ = (api.ReleaseAvailableProviders)(list, n);
        names
    }
}
