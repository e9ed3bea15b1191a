//! cargo fuzz target `dicom_seg`: see `dmnet::fuzzing::dicom_seg`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let scratch = dmnet::fuzzing::process_scratch("dicom_seg");
    let _ = dmnet::fuzzing::dicom_seg(scratch, data);
});
