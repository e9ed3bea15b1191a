//! cargo fuzz target `sidecar`: see `dmnet::fuzzing::sidecar`.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(init: common::limit_memory(), |data: &[u8]| {
    let scratch = dmnet::fuzzing::process_scratch("sidecar");
    let _ = dmnet::fuzzing::sidecar(scratch, data);
});
