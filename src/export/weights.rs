//! Reading a checkpoint's tensors with the pure-Rust `safetensors` crate (no libtorch), so the
//! exporter's graph building also works in builds without the `torch` feature. Names are the
//! checkpoint variable names (contract "Weight names", `docs/contracts.md`).
use crate::{Error, Result};
use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// All tensors of one safetensors file as float32, by name.
pub struct Weights {
    path: PathBuf,
    tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
}

impl Weights {
    /// Reads every float tensor of `path` (F32, F64, F16/BF16 widened or narrowed to f32).
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| Error::invalid(path, format!("not a safetensors checkpoint: {e}")))?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            let data = view.data();
            let values: Vec<f32> = match view.dtype() {
                Dtype::F32 => data
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                    .collect(),
                Dtype::F64 => data
                    .chunks_exact(8)
                    .map(|b| f64::from_le_bytes(b.try_into().unwrap()) as f32)
                    .collect(),
                // Integer bookkeeping tensors (step counters, …) are not model weights.
                _ => continue,
            };
            tensors.insert(name, (view.shape().to_vec(), values));
        }
        Ok(Weights {
            path: path.to_path_buf(),
            tensors,
        })
    }

    /// The checkpoint file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All tensor names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// The tensor `name`, checking its shape when `expected` is given. A missing tensor or a
    /// shape mismatch is an error naming the checkpoint and the tensor.
    pub fn get(&self, name: &str, expected: Option<&[usize]>) -> Result<(&[usize], &[f32])> {
        let (shape, data) = self.tensors.get(name).ok_or_else(|| {
            Error::invalid(
                &self.path,
                format!("the checkpoint has no tensor `{name}` (is the run's model config the one it was trained with?)"),
            )
        })?;
        if let Some(exp) = expected {
            if exp != shape.as_slice() {
                return Err(Error::Shape {
                    path: self.path.clone(),
                    case: name.to_string(),
                    expected: exp.to_vec(),
                    found: shape.clone(),
                });
            }
        }
        Ok((shape, data))
    }
}
