//! cargo fuzz target `shard`: see `dmnet::fuzzing::shard`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let scratch = dmnet::fuzzing::process_scratch("shard");
    let _ = dmnet::fuzzing::shard(scratch, data);
});
