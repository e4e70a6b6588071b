//! PyTorch memory snapshots: the fuzzer's bytes after a pickle protocol header (which makes
//! the detector pick the snapshot reader), through the unpickler and the snapshot mapping.
#![no_main]

#[path = "common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    common::load(b"\x80\x04", data);
});
