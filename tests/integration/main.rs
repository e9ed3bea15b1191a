//! dmnet's one integration-test binary; `util` holds the fixture helpers.
mod util;

mod binaries;
mod export;
mod infer;
mod layers;
mod model;
mod prep;
mod shards;
mod synth;
mod toolchain;
mod train;
mod volume;
