# The two commands a new user runs (each sets up what it needs on first use):
#   make demo   the whole pipeline on the embedded default
#   make test   fmt + clippy + every test (what CI runs)
.PHONY: setup build test demo bench-prep
setup:
	@bash scripts/setup.sh
build: setup
	cargo build --release --locked
test: setup
	cargo fmt --all -- --check
	cargo clippy --all-targets --locked -- -D warnings
	cargo clippy --no-default-features --lib --bins --locked -- -D warnings
	cargo build --locked --no-default-features --bin dmnet-infer --bin dmnet-prep --target-dir target/no-torch
	DMNET_NO_TORCH_BIN=$(CURDIR)/target/no-torch/debug cargo test --locked
demo: setup
	@bash scripts/demo.sh
# dmnet-prep + dmnet-infer without libtorch (inference hosts: glibc, libstdc++, ONNX Runtime).
build-infer: setup
	cargo build --release --locked --no-default-features --bin dmnet-infer --bin dmnet-prep
