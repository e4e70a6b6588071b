//! RMM `logging_resource_adaptor` logs: header `Thread,Time,Action,Pointer,Size,Stream`.
//!
//! Actions: `allocate`, `free` or `deallocate`, `allocate failure` (skipped and counted).
//! `Time` is a time of day, `HH:MM:SS.ffffff`, that wraps at midnight. The logger writes
//! under a lock, so file order is the true order: times are turned into nanoseconds that
//! never decrease, adding a day at each wrap.

use crate::error::{Quoted, TraceError};
use crate::event::{Event, OpKind};
use crate::formats::fields::{parse_hex_digits, parse_int, trim_field, FieldContext};
use crate::formats::lines::{Line, LineReader};

const NS_PER_SEC: u64 = 1_000_000_000;
const NS_PER_DAY: u64 = 86_400 * NS_PER_SEC;
/// A step back in time of day larger than this is a midnight wrap; a smaller one is
/// clock jitter between logging threads, and file order wins.
const WRAP_THRESHOLD_NS: u64 = NS_PER_DAY / 2;

/// Whether a header line is an RMM log header.
pub fn looks_like_header(line: &[u8]) -> bool {
    let names: Vec<&[u8]> = line.split(|&b| b == b',').map(trim_field).collect();
    ["thread", "time", "action", "pointer"]
        .iter()
        .all(|req| names.iter().any(|n| n.eq_ignore_ascii_case(req.as_bytes())))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Column {
    Thread,
    Time,
    Action,
    Pointer,
    Size,
    Stream,
}

pub struct RmmReader {
    lines: LineReader,
    roles: Vec<Option<Column>>,
    /// Days added so far for midnight wraps.
    day: u64,
    last_time_ns: Option<u64>,
    alloc_failures: u64,
    done: bool,
}

impl RmmReader {
    pub fn new(mut lines: LineReader) -> Result<Self, TraceError> {
        let path = lines.path().to_path_buf();
        let Some(Line {
            text: header,
            number: header_line,
            ..
        }) = lines.next_line()?
        else {
            return Err(TraceError::Empty { path });
        };
        let names = [
            ("thread", Column::Thread),
            ("time", Column::Time),
            ("action", Column::Action),
            ("pointer", Column::Pointer),
            ("size", Column::Size),
            ("stream", Column::Stream),
        ];
        let roles: Vec<Option<Column>> = header
            .split(|&b| b == b',')
            .map(trim_field)
            .map(|n| {
                names
                    .iter()
                    .find(|(name, _)| n.eq_ignore_ascii_case(name.as_bytes()))
                    .map(|&(_, c)| c)
            })
            .collect();
        for (name, column) in &names[..5] {
            if !roles.contains(&Some(*column)) {
                return Err(TraceError::BadHeader {
                    path,
                    line: header_line,
                    value: Quoted::new(header),
                    reason: format!(
                        "missing required RMM column '{name}' (expected Thread,Time,Action,Pointer,Size,Stream)"
                    ),
                });
            }
        }
        Ok(RmmReader {
            lines,
            roles,
            day: 0,
            last_time_ns: None,
            alloc_failures: 0,
            done: false,
        })
    }

    /// `allocate failure` records skipped so far.
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
            let mut fields: [&[u8]; 6] = [b""; 6];
            let mut found = 0;
            for field in row.split(|&b| b == b',') {
                if let Some(Some(role)) = self.roles.get(found) {
                    fields[*role as usize] = trim_field(field);
                }
                found += 1;
            }
            if found < self.roles.len() {
                return Err(TraceError::Truncated {
                    path: cx.path.to_path_buf(),
                    line: cx.line,
                    value: Quoted::new(row),
                    expected: self.roles.len(),
                    found,
                });
            }
            let [thread, time, action, pointer, size, stream] = fields;
            let op = match action {
                b"allocate" => OpKind::Alloc,
                b"free" | b"deallocate" => OpKind::Free,
                b"allocate failure" => {
                    self.alloc_failures += 1;
                    continue;
                }
                _ => {
                    return Err(TraceError::UnknownOp {
                        path: cx.path.to_path_buf(),
                        line: cx.line,
                        value: Quoted::new(action),
                        expected: "allocate, free, deallocate or allocate failure",
                    })
                }
            };
            let thread = cx.int("Thread", thread)?;
            let time_of_day_ns = parse_time_of_day(time)
                .ok_or_else(|| cx.error("Time", time, "expected HH:MM:SS.ffffff"))?;
            let ptr = if pointer == b"(nil)" {
                0
            } else {
                parse_int(pointer)
                    .ok_or_else(|| cx.error("Pointer", pointer, "expected 0x-hex or (nil)"))?
            };
            let size = cx.size("Size", size)?;
            let stream = if stream.is_empty() {
                None
            } else {
                let digits = stream
                    .strip_prefix(b"0x")
                    .or_else(|| stream.strip_prefix(b"0X"));
                Some(
                    match digits {
                        Some(d) => parse_hex_digits(d),
                        None => parse_int(stream),
                    }
                    .ok_or_else(|| cx.error("Stream", stream, "expected a hex stream handle"))?,
                )
            };
            // Each wrap adds a day; a log that wraps more than u64 nanoseconds hold
            // (213,503 days) is refused rather than given a wrapped-around duration.
            let too_long = || {
                cx.error(
                    "Time",
                    time,
                    format!(
                        "the log wraps past midnight {} times: more days than u64 \
                         nanoseconds hold",
                        self.day + 1
                    ),
                )
            };
            let mut time_ns = self
                .day
                .checked_mul(NS_PER_DAY)
                .and_then(|t| t.checked_add(time_of_day_ns))
                .ok_or_else(too_long)?;
            if let Some(last) = self.last_time_ns {
                if time_ns.saturating_add(WRAP_THRESHOLD_NS) < last {
                    time_ns = time_ns.checked_add(NS_PER_DAY).ok_or_else(too_long)?;
                    self.day += 1;
                }
                time_ns = time_ns.max(last);
            }
            self.last_time_ns = Some(time_ns);
            if ptr == 0 {
                match op {
                    OpKind::Free => continue,
                    _ => {
                        return Err(cx.error(
                            "Pointer",
                            pointer,
                            "null pointer on allocate (a failure is logged as 'allocate failure')",
                        ))
                    }
                }
            }
            return Ok(Some(Event {
                thread,
                time_ns: Some(time_ns),
                op,
                ptr,
                size: if op == OpKind::Free { 0 } else { size },
                align: 0,
                old_ptr: 0,
                stream,
                device: None,
                line: cx.line,
            }));
        }
    }
}

/// `HH:MM:SS` with an optional fraction of up to 9 digits, to nanoseconds since midnight.
fn parse_time_of_day(t: &[u8]) -> Option<u64> {
    let (hms, frac) = match t.iter().position(|&b| b == b'.') {
        Some(dot) => (&t[..dot], &t[dot + 1..]),
        None => (t, &b""[..]),
    };
    let mut parts = hms.split(|&b| b == b':');
    let two = |p: Option<&[u8]>| -> Option<u64> {
        let p = p?;
        if p.len() != 2 {
            return None;
        }
        crate::formats::fields::parse_dec(p)
    };
    let (h, m, s) = (two(parts.next())?, two(parts.next())?, two(parts.next())?);
    if parts.next().is_some() || h > 23 || m > 59 || s > 60 || frac.len() > 9 {
        return None;
    }
    let mut frac_ns = 0u64;
    for i in 0..9 {
        let d = match frac.get(i) {
            Some(b) if b.is_ascii_digit() => (b - b'0') as u64,
            Some(_) => return None,
            None => 0,
        };
        frac_ns = frac_ns * 10 + d;
    }
    Some(((h * 60 + m) * 60 + s) * NS_PER_SEC + frac_ns)
}

impl Iterator for RmmReader {
    type Item = Result<Event, TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let next = self.next_event();
        super::fuse(&mut self.done, next)
    }
}

#[cfg(test)]
mod tests {
    use super::parse_time_of_day;

    #[test]
    fn time_of_day() {
        assert_eq!(parse_time_of_day(b"00:00:00.000001"), Some(1_000));
        assert_eq!(
            parse_time_of_day(b"23:59:59.5"),
            Some(86_399 * 1_000_000_000 + 500_000_000)
        );
        assert_eq!(parse_time_of_day(b"12:00:00"), Some(43_200 * 1_000_000_000));
        assert_eq!(parse_time_of_day(b"24:00:00.0"), None);
        assert_eq!(parse_time_of_day(b"1:00:00.0"), None);
        assert_eq!(parse_time_of_day(b"01:00:00.x"), None);
    }
}
