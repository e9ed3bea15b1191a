//! cargo fuzz target `nifti`: see `dmnet::fuzzing::nifti`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let scratch = dmnet::fuzzing::process_scratch("nifti");
    let _ = dmnet::fuzzing::nifti(scratch, data);
});
