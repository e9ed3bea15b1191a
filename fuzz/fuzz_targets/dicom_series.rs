//! cargo fuzz target `dicom_series`: see `dmnet::fuzzing::dicom_series`.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(init: common::limit_memory(), |data: &[u8]| {
    let scratch = dmnet::fuzzing::process_scratch("dicom_series");
    let _ = dmnet::fuzzing::dicom_series(scratch, data);
});
