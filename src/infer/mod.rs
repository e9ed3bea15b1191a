//! Inference with ONNX Runtime (no libtorch): [`model`] opens an exported model and checks
//! its sidecar against the model's own metadata, [`input`] detects what `--input` holds
//! (nnU-Net/MSD, KiTS, BraTS, flat folders, DICOM, shards), [`volumes`] and [`shards`] segment
//! volumes and shard folders (with [`tta`] mirroring), [`seg`] writes DICOM SEG objects,
//! [`case_metrics`] per-case metrics, [`engine`] batches slices into ONNX Runtime runs (also
//! across the concurrent requests of `serve`), and [`run`] is `dmnet-infer`'s entry point. Loading ONNX
//! Runtime and opening sessions is [`crate::onnxrt`].
pub mod case_metrics;
pub mod cli;
pub mod engine;
pub mod input;
pub mod model;
pub mod run;
pub mod seg;
#[cfg(feature = "serve")]
pub mod serve;
pub mod shards;
pub mod tta;
pub mod volumes;
