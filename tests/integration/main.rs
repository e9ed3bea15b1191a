//! dmnet's one integration-test binary; `util` holds the fixture helpers.
mod util;

mod binaries;
mod export;
mod fuzz_regressions;
mod infer;
mod layers;
mod metrics;
mod model;
mod prep;
mod reliability;
mod synth;
mod toolchain;
mod train;
mod volume;
