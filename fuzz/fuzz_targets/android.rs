//! Android memory_replay dumps: the fuzzer's bytes after one record (which makes the
//! detector pick the Android reader).
#![no_main]

#[path = "common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    common::load(b"1: malloc 0x1000 16\n", data);
});
