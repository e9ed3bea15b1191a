//! Torch device selection. The binaries are linked against `libtorch_cpu` only (the linker's
//! `--as-needed` drops `libtorch_cuda.so`), so one binary runs on CPU-only hosts; where the GPU
//! libraries exist, `libtorch_cuda.so` is loaded at run time (before the first CUDA call), which
//! registers libtorch's CUDA hooks.
use crate::{cli::DeviceChoice, Error, Result};
use std::sync::OnceLock;

/// Why CUDA is unusable, or `None` when it is usable; computed once per process.
fn cuda_problem() -> &'static Option<String> {
    static PROBLEM: OnceLock<Option<String>> = OnceLock::new();
    PROBLEM.get_or_init(|| {
        if let Err(e) = load_cuda_libraries() {
            return Some(e);
        }
        if !tch::Cuda::is_available() {
            return Some("libtorch_cuda loaded but no CUDA device is visible".into());
        }
        None
    })
}

/// Loads `libtorch_cuda.so` (and `libc10_cuda.so`) with `RTLD_GLOBAL`: first by name (honours
/// `LD_LIBRARY_PATH`, e.g. a GPU machine's own torch), then from the build's libtorch folder.
fn load_cuda_libraries() -> std::result::Result<(), String> {
    let built = option_env!("DMNET_LIBTORCH_LIB").unwrap_or("");
    let mut errors = Vec::new();
    for name in ["libc10_cuda.so", "libtorch_cuda.so"] {
        let candidates = [name.to_string(), format!("{built}/{name}")];
        let loaded = candidates.iter().any(|c| match open_global(c) {
            Ok(()) => true,
            Err(e) => {
                errors.push(format!("{c}: {e}"));
                false
            }
        });
        if !loaded {
            return Err(format!("cannot load {name} ({})", errors.join("; ")));
        }
    }
    Ok(())
}

fn open_global(path: &str) -> std::result::Result<(), String> {
    use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
    // SAFETY: loading libtorch's own CUDA libraries runs their static initialisers, which only
    // register CUDA hooks with the already loaded libtorch_cpu.
    let lib =
        unsafe { Library::open(Some(path), RTLD_NOW | RTLD_GLOBAL) }.map_err(|e| e.to_string())?;
    std::mem::forget(lib); // keep it loaded for the life of the process
    Ok(())
}

/// Resolves `--device` to a tch device, logging the choice.
pub fn select(choice: DeviceChoice) -> Result<tch::Device> {
    match choice {
        DeviceChoice::Cpu => {
            tracing::info!("device: cpu (requested)");
            Ok(tch::Device::Cpu)
        }
        DeviceChoice::Cuda => match cuda_problem() {
            None => {
                tracing::info!("device: cuda:0 (requested; {} GPU(s))", tch::Cuda::device_count());
                Ok(tch::Device::Cuda(0))
            }
            Some(why) => Err(Error::Device(format!(
                "--device cuda was requested but CUDA is not usable: {why}. Install the GPU variant \
                 (scripts/setup.sh --gpu) or point LD_LIBRARY_PATH at a CUDA build of torch 2.11's lib/"
            ))),
        },
        DeviceChoice::Auto => match cuda_problem() {
            None => {
                tracing::info!("device: cuda:0 (auto)");
                Ok(tch::Device::Cuda(0))
            }
            Some(why) => {
                tracing::debug!("device: cpu (auto; CUDA not usable: {why})");
                Ok(tch::Device::Cpu)
            }
        },
    }
}

/// A device as users write it: `cpu`, `cuda:0`.
pub fn describe(d: tch::Device) -> String {
    match d {
        tch::Device::Cpu => "cpu".into(),
        tch::Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

impl From<tch::TchError> for Error {
    fn from(e: tch::TchError) -> Self {
        Error::Torch(e.to_string())
    }
}
