//! cargo fuzz target `h5`: see `dmnet::fuzzing::h5`.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(init: common::limit_memory(), |data: &[u8]| {
    let scratch = dmnet::fuzzing::process_scratch("h5");
    let _ = dmnet::fuzzing::h5(scratch, data);
});
