//! ONNX Runtime, shared by `dmnet-infer` and `dmnet-export --verify` (no libtorch):
//! [`runtime`] finds and loads the library (`ort` with `load-dynamic`) and reports its version
//! and execution providers, [`session`] opens an exported model on a chosen execution provider.
pub mod runtime;
pub mod session;
