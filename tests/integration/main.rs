//! dmnet's one integration-test binary; `util` holds the fixture helpers.
mod util;

mod binaries;
mod model;
mod synth;
mod toolchain;
mod train;
mod volume;
