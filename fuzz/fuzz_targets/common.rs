//! What every trace-reader target checks: the whole load path (read, order, sanitise,
//! compile, statistics) over the fuzzer's bytes, in memory, within small limits, answers
//! with a trace or an error naming the file and a line, and never panics.

use std::io::Cursor;
use std::path::Path;

use workloads::input::{Compression, Input};
use workloads::{LoadOptions, ReadLimits};

/// Small limits, so that one input costs little time and memory.
const LIMITS: ReadLimits = ReadLimits {
    max_input_bytes: 4 << 20,
    max_events: 100_000,
    max_order_bytes: 1 << 20,
};

pub fn load(header: &[u8], body: &[u8]) {
    let mut bytes = header.to_vec();
    bytes.extend_from_slice(body);
    let path = Path::new("fuzz.trace");
    for strict in [false, true] {
        let input = Input {
            reader: Box::new(Cursor::new(bytes.clone())),
            compression: Compression::None,
        };
        let opts = LoadOptions {
            strict,
            keep_times: true,
            read: workloads::ReadOptions {
                limits: LIMITS,
                ..Default::default()
            },
        };
        match workloads::load_input(path, input, &opts) {
            Ok(trace) => {
                let c = &trace.compiled;
                let ops: usize = c.threads.iter().map(|t| t.ops.len()).sum();
                assert_eq!(ops as u64, c.event_count);
                assert_eq!(trace.stats.events, c.event_count);
                assert!(trace.stats.peak_live_bytes >= trace.stats.leaked_bytes);
            }
            Err(e) => {
                let message = e.to_string();
                assert!(message.starts_with("fuzz.trace"), "{message}");
                assert!(!message.contains('\n'), "a one-line message: {message}");
            }
        }
    }
}
