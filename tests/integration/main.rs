//! dmnet's one integration-test binary; `util` holds the fixture helpers.
mod util;

mod binaries;
mod prep;
mod synth;
mod toolchain;
mod volume;
