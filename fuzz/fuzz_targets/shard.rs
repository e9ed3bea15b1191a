//! cargo fuzz target `shard`: see `dmnet::fuzzing::shard`.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(init: common::limit_memory(), |data: &[u8]| {
    let scratch = dmnet::fuzzing::process_scratch("shard");
    let _ = dmnet::fuzzing::shard(scratch, data);
});
