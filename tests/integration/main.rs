//! dmnet's one integration-test binary; `util` holds the fixture helpers.
mod util;

mod acdc;
mod binaries;
mod docs;
mod export;
mod first_day;
mod fuzz_regressions;
mod goldens;
mod infer;
mod integrity;
mod layers;
mod metrics;
mod model;
mod prep;
mod reliability;
mod shards;
mod synth;
mod toolchain;
mod train;
mod volume;
