//! Canonical CSV: the fuzzer's bytes after a header with every column.
#![no_main]

#[path = "common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    common::load(b"thread,time_ns,op,ptr,size,align,old_ptr,stream,device\n", data);
    // And with no header of ours: detection and header parsing too.
    common::load(b"", data);
});
