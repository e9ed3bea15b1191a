//! cargo fuzz target `dicom_series`: see `dmnet::fuzzing::dicom_series`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let scratch = dmnet::fuzzing::process_scratch("dicom_series");
    let _ = dmnet::fuzzing::dicom_series(scratch, data);
});
