//! Inference with ONNX Runtime (no libtorch): [`runtime`] finds and loads the ONNX Runtime
//! library (`ort` with `load-dynamic`) and reports its version and execution providers.
pub mod runtime;
pub mod session;
