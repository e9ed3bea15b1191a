//! Inference with ONNX Runtime (no libtorch): [`runtime`] finds and loads the ONNX Runtime
//! library (`ort` with `load-dynamic`) and reports its version and execution providers,
//! [`session`] opens an exported model on a chosen execution provider, [`volumes`] and
//! [`shards`] segment volumes and shard folders, [`run`] is `dmnet-infer`'s entry point.
pub mod input;
pub mod run;
pub mod runtime;
pub mod session;
pub mod shards;
pub mod volumes;
