//! One ONNX Runtime session over an exported model: execution-provider choice (`--device
//! auto|cpu|cuda`; `cuda` demanded and unavailable is an error, the provider used is logged),
//! input checks (name, channels, size, dtype) and float32 batch runs.
use super::runtime;
use crate::cli::DeviceChoice;
use crate::{Error, Result};
use ort::ep::ExecutionProvider;
use ort::session::Session;
use ort::value::Tensor;
use std::path::{Path, PathBuf};

/// An open model.
pub struct OnnxModel {
    session: Session,
    path: PathBuf,
    /// The execution provider the session was created with (`CPUExecutionProvider`, …).
    pub provider: String,
    /// Name of the (single) input.
    pub input_name: String,
    /// Input dims after the batch: `[C, H, W]` (None when dynamic in the file).
    pub input_chw: Vec<Option<usize>>,
    /// Output names in graph order.
    pub output_names: Vec<String>,
    /// Output dims in graph order (`None` where dynamic in the file).
    pub output_dims: Vec<Vec<Option<usize>>>,
    /// The model's custom `metadata_props` (key → value).
    pub metadata: std::collections::BTreeMap<String, String>,
}

fn rt(path: &Path, what: &str, e: impl std::fmt::Display) -> Error {
    Error::Runtime(format!("{}: {what}: {e}", path.display()))
}

/// Whether to register the CUDA execution provider for `choice` (`cuda` without it: error).
fn choose_provider(choice: DeviceChoice) -> Result<bool> {
    let cuda = ort::ep::CUDA::is_available().unwrap_or(false);
    let offered = runtime::load(None)
        .map(|i| i.providers.join(", "))
        .unwrap_or_default();
    match (choice, cuda) {
        (DeviceChoice::Cpu, _) => Ok(false),
        (DeviceChoice::Cuda, true) | (DeviceChoice::Auto, true) => Ok(true),
        (DeviceChoice::Cuda, false) => Err(Error::Device(format!(
            "--device cuda was requested but this ONNX Runtime has no CUDAExecutionProvider \
             (it offers: {offered}). Install onnxruntime-gpu (scripts/setup.sh --gpu) or set \
             ORT_DYLIB_PATH to a CUDA build of libonnxruntime"
        ))),
        (DeviceChoice::Auto, false) => {
            tracing::info!("--device auto: no CUDAExecutionProvider in this ONNX Runtime ({offered}); using CPU");
            Ok(false)
        }
    }
}

impl OnnxModel {
    /// Opens `path` with the given device choice (ONNX Runtime loaded from `ort_lib` or the
    /// default search order, see [`runtime::candidates`]).
    pub fn open(path: &Path, device: DeviceChoice, ort_lib: Option<&Path>) -> Result<Self> {
        Self::open_with_threads(path, device, ort_lib, None)
    }

    /// [`OnnxModel::open`] with a fixed number of intra-op threads (benchmarks).
    pub fn open_with_threads(
        path: &Path,
        device: DeviceChoice,
        ort_lib: Option<&Path>,
        threads: Option<usize>,
    ) -> Result<Self> {
        let env = runtime::environment(ort_lib)?;
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let use_cuda = choose_provider(device)?;
        let mut builder = Session::builder(env).map_err(|e| rt(path, "session options", e))?;
        if let Some(t) = threads {
            builder = builder
                .with_intra_threads(t)
                .map_err(|e| rt(path, "intra-op threads", e))?;
        }
        let (mut builder, provider) = with_provider(builder, device, use_cuda)?;
        let session = builder.commit_from_memory(&bytes).map_err(|e| {
            Error::invalid(path, format!("ONNX Runtime cannot load the model: {e}"))
        })?;
        tracing::info!("execution provider: {provider} ({})", path.display());
        let (input_name, shape) = image_input(&session, path)?;
        let dims = |s: &[i64]| s.iter().map(|&d| (d > 0).then_some(d as usize)).collect();
        let input_chw = dims(&shape[1..]);
        let output_dims = session
            .outputs()
            .iter()
            .map(|o| {
                o.dtype()
                    .tensor_shape()
                    .map(|s| dims(s))
                    .unwrap_or_default()
            })
            .collect();
        let metadata = custom_metadata(&session, path)?;
        Ok(OnnxModel {
            output_dims,
            metadata,
            input_name,
            input_chw,
            output_names: session
                .outputs()
                .iter()
                .map(|o| o.name().to_string())
                .collect(),
            session,
            path: path.to_path_buf(),
            provider: provider.into(),
        })
    }

    /// The model file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The dims of output `name` (`None` entries: dynamic), if the model has that output.
    pub(crate) fn output_shape(&self, name: &str) -> Option<&[Option<usize>]> {
        self.output_names
            .iter()
            .position(|n| n == name)
            .and_then(|i| self.output_dims.get(i))
            .map(Vec::as_slice)
    }

    /// Checks an input batch shape `[N, C, H, W]` against the model; the error names `source`.
    pub fn check_input(&self, shape: &[usize], source: &Path) -> Result<()> {
        let ok = shape.len() == 4
            && self
                .input_chw
                .iter()
                .zip(&shape[1..])
                .all(|(m, &s)| m.is_none_or(|m| m == s));
        if ok {
            return Ok(());
        }
        Err(Error::Shape {
            path: source.to_path_buf(),
            case: format!("input of model {}", self.path.display()),
            expected: std::iter::once(shape.first().copied().unwrap_or(1))
                .chain(self.input_chw.iter().map(|d| d.unwrap_or(0)))
                .collect(),
            found: shape.to_vec(),
        })
    }

    /// Runs one batch `x` of shape `[N, C, H, W]` and returns the float32 output `name` with
    /// its shape.
    pub fn run_f32(
        &mut self,
        x: Vec<f32>,
        shape: [usize; 4],
        name: &str,
    ) -> Result<(Vec<usize>, Vec<f32>)> {
        let path = self.path.clone();
        let input = Tensor::from_array((shape, x)).map_err(|e| rt(&path, "input tensor", e))?;
        let outputs = self
            .session
            .run(ort::inputs![self.input_name.as_str() => input])
            .map_err(|e| rt(&path, "run", e))?;
        let value = outputs
            .get(name)
            .ok_or_else(|| Error::invalid(&path, format!("the model has no output `{name}`")))?;
        let (s, data) = value
            .try_extract_tensor::<f32>()
            .map_err(|e| rt(&path, &format!("output `{name}`"), e))?;
        let dims: Vec<usize> = s.iter().map(|&d| d.max(0) as usize).collect();
        if dims.iter().product::<usize>() != data.len() {
            return Err(Error::invalid(
                &path,
                format!(
                    "output `{name}` has {} values for shape {dims:?}",
                    data.len()
                ),
            ));
        }
        Ok((dims, data.to_vec()))
    }
}

/// The custom `metadata_props` of an open session.
fn custom_metadata(
    session: &Session,
    path: &Path,
) -> Result<std::collections::BTreeMap<String, String>> {
    let meta = session
        .metadata()
        .map_err(|e| rt(path, "model metadata", e))?;
    let keys = meta
        .custom_keys()
        .map_err(|e| rt(path, "model metadata keys", e))?;
    Ok(keys
        .into_iter()
        .filter_map(|k| meta.custom(&k).map(|v| (k, v)))
        .collect())
}

/// Registers the CUDA execution provider when `use_cuda`: a failure is an error under
/// `--device cuda`, else logged and the CPU is used. Returns the builder and the provider.
fn with_provider(
    builder: ort::session::builder::SessionBuilder,
    device: DeviceChoice,
    use_cuda: bool,
) -> Result<(ort::session::builder::SessionBuilder, &'static str)> {
    if !use_cuda {
        return Ok((builder, "CPUExecutionProvider"));
    }
    let ep = ort::ep::CUDA::default().build().error_on_failure();
    match builder.with_execution_providers([ep]) {
        Ok(b) => Ok((b, "CUDAExecutionProvider")),
        Err(e) if device == DeviceChoice::Cuda => Err(Error::Device(format!(
            "--device cuda: registering the CUDA execution provider failed: {e}"
        ))),
        Err(e) => {
            tracing::info!("CUDA execution provider not usable ({e}); using CPU");
            Ok((e.recover(), "CPUExecutionProvider"))
        }
    }
}

/// The model's first input: its name and shape, which must be a float32 `[N, C, H, W]`.
fn image_input(session: &Session, path: &Path) -> Result<(String, Vec<i64>)> {
    let input = session
        .inputs()
        .first()
        .ok_or_else(|| Error::invalid(path, "the model has no input"))?;
    let shape = input
        .dtype()
        .tensor_shape()
        .map(|s| s.to_vec())
        .unwrap_or_default();
    if input.dtype().tensor_type() != Some(ort::value::TensorElementType::Float32)
        || shape.len() != 4
    {
        return Err(Error::invalid(
            path,
            format!(
                "input `{}` must be a float32 [N, C, H, W] tensor, found {:?}",
                input.name(),
                input.dtype()
            ),
        ));
    }
    Ok((input.name().to_string(), shape))
}
