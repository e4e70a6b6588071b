//! Android `memory_replay` text dumps: one call per line, `<tid>: <op> <args>`.
//!
//! ```text
//! 1234: malloc 0xb6038060 20
//! 1234: calloc 0xb6038070 4 16        (nmemb, size)
//! 1234: memalign 0xb6039000 64 128    (align, size)
//! 1234: realloc 0xb603a000 0xb6038060 40   (new, old; old 0x0 = from nothing)
//! 1234: free 0xb603a000               (0x0 = free(NULL), ignored)
//! 1234: thread_done 0x0
//! ```
//! Some versions append fields (timestamps); those are ignored. File order is the order.

use crate::error::{Quoted, TraceError};
use crate::event::{Event, OpKind};
use crate::formats::fields::{parse_dec, parse_hex_digits, FieldContext};
use crate::formats::lines::{Line, LineReader};

const EXPECTED_OPS: &str = "malloc, calloc, memalign, realloc, free or thread_done";

/// Whether a line looks like a memory_replay record.
pub fn looks_like_record(line: &[u8]) -> bool {
    let mut words = line
        .split(u8::is_ascii_whitespace)
        .filter(|w| !w.is_empty());
    let tid_ok = words
        .next()
        .and_then(|w| w.strip_suffix(b":"))
        .is_some_and(|t| parse_dec(t).is_some());
    tid_ok
        && matches!(
            words.next(),
            Some(b"malloc" | b"calloc" | b"memalign" | b"realloc" | b"free" | b"thread_done")
        )
}

/// Android pointers are hex, with or without `0x`.
fn parse_ptr(f: &[u8]) -> Option<u64> {
    let digits = f
        .strip_prefix(b"0x")
        .or_else(|| f.strip_prefix(b"0X"))
        .unwrap_or(f);
    parse_hex_digits(digits)
}

pub struct AndroidReader {
    lines: LineReader,
    alloc_failures: u64,
    done: bool,
}

impl AndroidReader {
    pub fn new(lines: LineReader) -> Self {
        AndroidReader {
            lines,
            alloc_failures: 0,
            done: false,
        }
    }

    /// Calls that returned NULL (an allocation failure), skipped so far.
    pub fn alloc_failures(&self) -> u64 {
        self.alloc_failures
    }

    fn next_event(&mut self) -> Result<Option<Event>, TraceError> {
        loop {
            let Some(Line {
                text: row,
                number: line,
                path,
            }) = self.lines.next_line()?
            else {
                return Ok(None);
            };
            let cx = FieldContext { path, line };
            let mut words: [&[u8]; 5] = [b""; 5];
            let mut found = 0;
            for w in row.split(u8::is_ascii_whitespace).filter(|w| !w.is_empty()) {
                if found < words.len() {
                    words[found] = w;
                }
                found += 1;
            }
            let tid = words[0];
            let thread = tid
                .strip_suffix(b":")
                .and_then(parse_dec)
                .ok_or_else(|| cx.error("thread id", tid, "expected '<tid>:'"))?;
            let op = words[1];
            let needed = match op {
                b"malloc" => 4,
                b"calloc" | b"memalign" | b"realloc" => 5,
                b"free" | b"thread_done" => 3,
                _ if found < 2 => 2,
                _ => {
                    return Err(TraceError::UnknownOp {
                        path: cx.path.to_path_buf(),
                        line: cx.line,
                        value: Quoted::new(op),
                        expected: EXPECTED_OPS,
                    })
                }
            };
            if found < needed {
                return Err(TraceError::Truncated {
                    path: cx.path.to_path_buf(),
                    line: cx.line,
                    value: Quoted::new(row),
                    expected: needed,
                    found,
                });
            }
            let ptr_of = |f: &[u8], field: &'static str| {
                parse_ptr(f).ok_or_else(|| cx.error(field, f, "expected a hex pointer"))
            };
            let ptr = ptr_of(words[2], "ptr")?;
            let (op, ptr, size, align, old_ptr) = match op {
                b"thread_done" => continue,
                b"free" if ptr == 0 => continue,
                b"free" => (OpKind::Free, ptr, 0, 0, 0),
                b"malloc" => (OpKind::Alloc, ptr, cx.size("size", words[3])?, 0, 0),
                b"calloc" => {
                    let nmemb = cx.size("nmemb", words[3])?;
                    let each = cx.size("size", words[4])?;
                    let total = nmemb.checked_mul(each).ok_or_else(|| {
                        cx.error(
                            "size",
                            row,
                            format!("calloc {nmemb} * {each} overflows 64 bits"),
                        )
                    })?;
                    (OpKind::Alloc, ptr, cx.check_size("size", row, total)?, 0, 0)
                }
                b"memalign" => {
                    let align = cx.align(words[3])?;
                    (OpKind::Alloc, ptr, cx.size("size", words[4])?, align, 0)
                }
                _ => {
                    let old = ptr_of(words[3], "old_ptr")?;
                    let size = cx.size("size", words[4])?;
                    if ptr == 0 && size == 0 && old != 0 {
                        // realloc(old, 0) returning NULL released `old`.
                        (OpKind::Free, old, 0, 0, 0)
                    } else {
                        (OpKind::Realloc, ptr, size, 0, old)
                    }
                }
            };
            if ptr == 0 {
                self.alloc_failures += 1;
                continue;
            }
            return Ok(Some(Event {
                thread,
                time_ns: None,
                op,
                ptr,
                size,
                align,
                old_ptr,
                stream: None,
                device: None,
                line: cx.line,
            }));
        }
    }
}

impl Iterator for AndroidReader {
    type Item = Result<Event, TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let next = self.next_event();
        super::fuse(&mut self.done, next)
    }
}
