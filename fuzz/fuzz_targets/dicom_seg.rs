//! cargo fuzz target `dicom_seg`: see `dmnet::fuzzing::dicom_seg`.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(init: common::limit_memory(), |data: &[u8]| {
    let scratch = dmnet::fuzzing::process_scratch("dicom_seg");
    let _ = dmnet::fuzzing::dicom_seg(scratch, data);
});
