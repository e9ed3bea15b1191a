//! dmnet's one integration-test binary; `util` holds the fixture helpers.
mod util;

mod binaries;
mod model;
mod toolchain;
mod train;
