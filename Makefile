# The two commands a new user runs (each sets up what it needs on first use):
#   make demo   the whole pipeline on the embedded default
#   make test   fmt + clippy + every test
#   make test-all   make test + the CPU rehearsal of the GPU check (what CI runs)
.PHONY: setup build test test-all gpu-rehearsal carry-gpu demo bench-prep
setup:
	@bash scripts/setup.sh
build: setup
	cargo build --release --locked
test: setup
	cargo fmt --all -- --check
	cargo clippy --all-targets --locked -- -D warnings
	cargo clippy --no-default-features --features serve --lib --bins --locked -- -D warnings
	cargo build --locked --no-default-features --features serve --bin dmnet-infer --bin dmnet-prep --target-dir target/no-torch
	DMNET_NO_TORCH_BIN=$(CURDIR)/target/no-torch/debug cargo test --locked
demo: setup
	@bash scripts/demo.sh
# dmnet-prep + dmnet-infer without libtorch (inference hosts: glibc, libstdc++, ONNX Runtime).
build-infer: setup
	cargo build --release --locked --no-default-features --features serve --bin dmnet-infer --bin dmnet-prep
# The CPU rehearsal of scripts/gpu_check.sh (docs/gpu.md): every step of the GPU check, on CPU,
# 2 steps per training run, with the debug binaries `make test` built. Minutes on 2 cores: CI
# runs it through test-all, so that `make test` stays fast.
gpu-rehearsal: setup
	@if [ ! -d ../shared/data/la2018 ]; then \
	  if [ "$${CI:-0}" = 1 ]; then echo "gpu-rehearsal FAILED: ../shared/data/la2018 is absent (CI=1)" >&2; exit 1; fi; \
	  echo "gpu-rehearsal SKIPPED: ../shared/data/la2018 is absent (under CI=1 this fails)"; \
	else \
	  bash scripts/carry_for_gpu.sh --profile debug && \
	  bash scripts/gpu_check.sh --device cpu --steps 2 --carry target/gpu-carry-debug target/gpu-rehearsal; \
	fi
test-all: test
	$(MAKE) gpu-rehearsal
# What to carry to a bare GPU host (release binaries, ONNX Runtime, 8 LA studies; < 64 MiB).
carry-gpu: setup
	bash scripts/carry_for_gpu.sh
