//! RMM logging_resource_adaptor logs: the fuzzer's bytes after the log's header.
#![no_main]

#[path = "common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    common::load(b"Thread,Time,Action,Pointer,Size,Stream\n", data);
});
