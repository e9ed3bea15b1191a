//! cargo fuzz target `nifti`: see `dmnet::fuzzing::nifti`.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(init: common::limit_memory(), |data: &[u8]| {
    let scratch = dmnet::fuzzing::process_scratch("nifti");
    let _ = dmnet::fuzzing::nifti(scratch, data);
});
