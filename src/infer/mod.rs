//! Inference with ONNX Runtime (no libtorch): [`input`] detects what `--input` holds,
//! [`volumes`] and [`shards`] segment volumes and shard folders, [`run`] is `dmnet-infer`'s
//! entry point. Loading ONNX Runtime and opening sessions is [`crate::onnxrt`].
pub mod input;
pub mod run;
pub mod shards;
pub mod volumes;
