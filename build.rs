//! Build script: (1) an rpath to libtorch so `dmnet-train`/`dmnet-export` start with no
//! environment; (2) the default ONNX Runtime library path (`.dmnet/libonnxruntime.so`, made by
//! `scripts/setup.sh`) baked in as a fallback for `dmnet-infer`; (3) the ONNX protobuf messages,
//! generated with prost + protox (pure Rust) from the `onnx.proto` that the venv's `onnx` wheel
//! carries (no schema is copied into the repository).
use std::{env, path::PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // Set by torch-sys (links = "tch") when the `torch` feature is on.
    if let Ok(dir) = env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        println!("cargo:rustc-env=DMNET_LIBTORCH_LIB={dir}");
    }
    for var in ["DMNET_ORT_DYLIB", "DMNET_ONNX_PROTO", "DMNET_PYTHON"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let ort = env::var("DMNET_ORT_DYLIB").unwrap_or_default();
    println!("cargo:rustc-env=DMNET_ORT_DYLIB_DEFAULT={ort}");

    let proto = env::var("DMNET_ONNX_PROTO")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap()).join(".dmnet/onnx.proto")
        });
    if !proto.exists() {
        panic!(
            "onnx.proto not found at {} (it comes from the venv's `onnx` wheel): run scripts/setup.sh first",
            proto.display()
        );
    }
    println!("cargo:rerun-if-changed={}", proto.display());
    let dir = proto.parent().unwrap().to_path_buf();
    let fds = protox::compile([&proto], [&dir]).expect("compiling onnx.proto with protox");
    prost_build::Config::new()
        .compile_fds(fds)
        .expect("generating ONNX messages with prost-build");
}
