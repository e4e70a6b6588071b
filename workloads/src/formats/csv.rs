//! Canonical CSV (see docs/formats.md, "Canonical trace CSV"): a header naming the columns, any order;
//! `thread`, `op`, `ptr` required; `time_ns`, `size`, `align`, `old_ptr`, `stream`,
//! `device` optional; unknown columns are ignored so newer writers stay readable.
//!
//! Parsing is byte-level over the line reader's buffer: no per-row allocation. A row in
//! the usual shape (plain digits, `0x` pointers, no spaces or quotes, every value valid)
//! is parsed in place in one pass over its bytes (`fast_row`); any other row, including
//! every row with an error, goes through the general parser, which owns the messages.

use crate::error::{Quoted, TraceError};
use crate::event::{Event, OpKind};
use crate::formats::fields::{trim_field, FieldContext, MAX_ALIGN_BYTES, MAX_SIZE_BYTES};
use crate::formats::lines::{Line, LineReader};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Column {
    Thread,
    TimeNs,
    Op,
    Ptr,
    Size,
    Align,
    OldPtr,
    Stream,
    Device,
}

const COLUMNS: [(&str, Column); 9] = [
    ("thread", Column::Thread),
    ("time_ns", Column::TimeNs),
    ("op", Column::Op),
    ("ptr", Column::Ptr),
    ("size", Column::Size),
    ("align", Column::Align),
    ("old_ptr", Column::OldPtr),
    ("stream", Column::Stream),
    ("device", Column::Device),
];

/// Whether a header line names the canonical CSV's required columns.
pub fn looks_like_header(line: &[u8]) -> bool {
    let names: Vec<&[u8]> = line.split(|&b| b == b',').map(trim_field).collect();
    ["thread", "op", "ptr"]
        .iter()
        .all(|req| names.iter().any(|n| n.eq_ignore_ascii_case(req.as_bytes())))
}

/// Whether rows carry `time_ns`: decided by the first row, then required to stay so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Times {
    Unknown,
    Present,
    Absent,
}

pub struct CsvReader {
    lines: LineReader,
    /// Column role of each field position; `None` for ignored columns.
    roles: Vec<Option<Column>>,
    times: Times,
    has_time_column: bool,
    done: bool,
}

impl CsvReader {
    /// Read the header (the reader's next line).
    pub fn new(mut lines: LineReader) -> Result<Self, TraceError> {
        let path = lines.path().to_path_buf();
        let Some(Line {
            text: header,
            number: line,
            ..
        }) = lines.next_line()?
        else {
            return Err(TraceError::Empty { path });
        };
        let bad = |reason: String| TraceError::BadHeader {
            path: path.clone(),
            line,
            value: Quoted::new(header),
            reason,
        };
        let mut roles = Vec::new();
        for name in header.split(|&b| b == b',').map(trim_field) {
            let role = COLUMNS
                .iter()
                .find(|(n, _)| name.eq_ignore_ascii_case(n.as_bytes()))
                .map(|&(_, c)| c);
            if let Some(role) = role {
                if roles.contains(&Some(role)) {
                    return Err(bad(format!("column '{}' appears twice", Quoted::new(name))));
                }
            }
            roles.push(role);
        }
        for (required, column) in [
            ("thread", Column::Thread),
            ("op", Column::Op),
            ("ptr", Column::Ptr),
        ] {
            if !roles.contains(&Some(column)) {
                return Err(bad(format!(
                    "missing required column '{required}' (required: thread, op, ptr)"
                )));
            }
        }
        let has_time_column = roles.contains(&Some(Column::TimeNs));
        Ok(CsvReader {
            lines,
            roles,
            times: Times::Unknown,
            has_time_column,
            done: false,
        })
    }

    /// Whether the rows carry `time_ns` (known for sure once the first row has been read).
    pub fn has_times(&self) -> bool {
        self.has_time_column && self.times != Times::Absent
    }

    fn next_event(&mut self) -> Result<Option<Event>, TraceError> {
        let line = self.lines.line() + 1;
        if let Some((event, len, times)) =
            fast_row(&self.roles, self.times, self.lines.pending(), line)
        {
            self.times = times;
            self.lines.consume_line(len);
            return Ok(Some(event));
        }
        self.general_row()
    }

    /// The general parser: any row, and the error message for a bad one.
    fn general_row(&mut self) -> Result<Option<Event>, TraceError> {
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
            let mut thread = None;
            let mut time = &b""[..];
            let mut op = &b""[..];
            let mut ptr = &b""[..];
            let mut size = &b""[..];
            let mut align = &b""[..];
            let mut old_ptr = &b""[..];
            let mut stream = &b""[..];
            let mut device = &b""[..];
            let mut found = 0usize;
            for field in row.split(|&b| b == b',') {
                let role = self.roles.get(found).copied();
                found += 1;
                let f = trim_field(field);
                match role {
                    Some(Some(Column::Thread)) => thread = Some(f),
                    Some(Some(Column::TimeNs)) => time = f,
                    Some(Some(Column::Op)) => op = f,
                    Some(Some(Column::Ptr)) => ptr = f,
                    Some(Some(Column::Size)) => size = f,
                    Some(Some(Column::Align)) => align = f,
                    Some(Some(Column::OldPtr)) => old_ptr = f,
                    Some(Some(Column::Stream)) => stream = f,
                    Some(Some(Column::Device)) => device = f,
                    Some(None) | None => {}
                }
            }
            if found != self.roles.len() {
                if found < self.roles.len() {
                    return Err(TraceError::Truncated {
                        path: cx.path.to_path_buf(),
                        line: cx.line,
                        value: Quoted::new(row),
                        expected: self.roles.len(),
                        found,
                    });
                }
                return Err(cx.error(
                    "row",
                    row,
                    format!(
                        "expected {} fields (as in the header), found {found}",
                        self.roles.len()
                    ),
                ));
            }
            let thread = cx.int("thread", thread.unwrap_or_default())?;
            let op = match op {
                b"alloc" => OpKind::Alloc,
                b"free" => OpKind::Free,
                b"realloc" => OpKind::Realloc,
                _ => {
                    return Err(TraceError::UnknownOp {
                        path: cx.path.to_path_buf(),
                        line: cx.line,
                        value: Quoted::new(op),
                        expected: "alloc, free or realloc",
                    })
                }
            };
            let time_ns = if time.is_empty() {
                None
            } else {
                Some(cx.int("time_ns", time)?)
            };
            match (self.times, time_ns.is_some()) {
                (Times::Unknown, true) => self.times = Times::Present,
                (Times::Unknown, false) => self.times = Times::Absent,
                (Times::Present, false) => {
                    return Err(cx.error(
                        "time_ns",
                        time,
                        "missing here but given on earlier rows (give it on every row or none)",
                    ))
                }
                (Times::Absent, true) => {
                    return Err(cx.error(
                        "time_ns",
                        time,
                        "given here but missing on earlier rows (give it on every row or none)",
                    ))
                }
                _ => {}
            }
            let ptr = cx.int("ptr", ptr)?;
            let size = match op {
                OpKind::Free if size.is_empty() => 0,
                OpKind::Free => {
                    cx.size("size", size)?;
                    0
                }
                OpKind::Alloc | OpKind::Realloc if size.is_empty() => {
                    return Err(cx.error(
                        "size",
                        size,
                        format!("missing value (required for {})", op.as_str()),
                    ))
                }
                OpKind::Alloc | OpKind::Realloc => cx.size("size", size)?,
            };
            let align = if align.is_empty() {
                0
            } else {
                cx.align(align)?
            };
            let old_ptr = if old_ptr.is_empty() || op != OpKind::Realloc {
                0
            } else {
                cx.int("old_ptr", old_ptr)?
            };
            if ptr == 0 {
                match op {
                    // free(NULL) is a no-op in every allocator.
                    OpKind::Free => continue,
                    OpKind::Alloc | OpKind::Realloc => {
                        return Err(cx.error(
                            "ptr",
                            b"0",
                            format!(
                                "null pointer on {} (failed calls are not events)",
                                op.as_str()
                            ),
                        ))
                    }
                }
            }
            let stream = if stream.is_empty() {
                None
            } else {
                Some(cx.int("stream", stream)?)
            };
            let device = if device.is_empty() {
                None
            } else {
                Some(cx.int("device", device)?)
            };
            return Ok(Some(Event {
                thread,
                time_ns,
                op,
                ptr,
                size,
                align,
                old_ptr,
                stream,
                device,
                line: cx.line,
            }));
        }
    }
}

/// Parse the row at the start of `bytes` (line `line`) if it has the usual shape and is
/// valid; `None` sends it to the general parser. Returns the event, the row's length with
/// its terminator, and the new `Times`.
///
/// Invariant: whatever this accepts, `general_row` accepts with the same event; so it
/// bails out on anything unusual (blank line, whitespace, quotes, a missing terminator,
/// 20-digit numbers, null pointers) and on every error.
#[inline]
fn fast_row(
    roles: &[Option<Column>],
    times: Times,
    bytes: &[u8],
    line: u64,
) -> Option<(Event, usize, Times)> {
    let mut thread = None;
    let mut time_ns = None;
    let mut op = None;
    let mut ptr = None;
    let mut size = None;
    let mut align = None;
    let mut old_ptr = None;
    let mut stream = None;
    let mut device = None;
    let mut p = 0;
    let last = roles.len().checked_sub(1)?;
    for (i, role) in roles.iter().enumerate() {
        match role {
            Some(Column::Op) => {
                let rest = bytes.get(p..)?;
                let (kind, len) = if rest.starts_with(b"alloc") {
                    (OpKind::Alloc, 5)
                } else if rest.starts_with(b"free") {
                    (OpKind::Free, 4)
                } else if rest.starts_with(b"realloc") {
                    (OpKind::Realloc, 7)
                } else {
                    return None;
                };
                op = Some(kind);
                p += len;
            }
            Some(Column::Size) => size = scan_dec(bytes, &mut p)?,
            Some(column) => {
                let v = scan_int(bytes, &mut p)?;
                match column {
                    Column::Thread => thread = v,
                    Column::TimeNs => time_ns = v,
                    Column::Ptr => ptr = v,
                    Column::Align => align = v,
                    Column::OldPtr => old_ptr = v,
                    Column::Stream => stream = v,
                    Column::Device => device = v,
                    Column::Op | Column::Size => unreachable!(),
                }
            }
            None => {
                while !matches!(*bytes.get(p)?, b',' | b'\n' | b'\r') {
                    p += 1;
                }
            }
        }
        match *bytes.get(p)? {
            b',' if i < last => p += 1,
            b'\n' if i == last => p += 1,
            b'\r' if i == last && bytes.get(p + 1) == Some(&b'\n') => p += 2,
            _ => return None,
        }
    }
    let times = match (times, time_ns.is_some()) {
        (Times::Unknown, true) | (Times::Present, true) => Times::Present,
        (Times::Unknown, false) | (Times::Absent, false) => Times::Absent,
        (Times::Present, false) | (Times::Absent, true) => return None,
    };
    let op = op?;
    let ptr = ptr.filter(|&p| p != 0)?;
    let size = match (op, size) {
        (_, Some(s)) if s > MAX_SIZE_BYTES => return None,
        (OpKind::Free, _) => 0,
        (_, s) => s?,
    };
    let align = align.unwrap_or(0);
    if align != 0 && (!align.is_power_of_two() || align > MAX_ALIGN_BYTES) {
        return None;
    }
    let old_ptr = match op {
        OpKind::Realloc => old_ptr.unwrap_or(0),
        _ => 0,
    };
    let event = Event {
        thread: thread?,
        time_ns,
        op,
        ptr,
        size,
        align,
        old_ptr,
        stream,
        device,
        line,
    };
    Some((event, p, times))
}

/// Decimal digits at `bytes[*p..]`, up to the next non-digit: `Some(None)` when there are
/// none; `None` (bail out) for 20 digits or more, which may overflow.
#[inline(always)]
fn scan_dec(bytes: &[u8], p: &mut usize) -> Option<Option<u64>> {
    let start = *p;
    let mut v = 0u64;
    while let Some(&b) = bytes.get(*p) {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            break;
        }
        v = v.wrapping_mul(10).wrapping_add(d as u64);
        *p += 1;
    }
    match *p - start {
        0 => Some(None),
        1..=19 => Some(Some(v)),
        _ => None,
    }
}

/// `0x`-hex (1 to 16 digits) or decimal at `bytes[*p..]`, as `scan_dec`.
#[inline(always)]
fn scan_int(bytes: &[u8], p: &mut usize) -> Option<Option<u64>> {
    if bytes.get(*p) == Some(&b'0') && matches!(bytes.get(*p + 1), Some(b'x' | b'X')) {
        *p += 2;
        let start = *p;
        let mut v = 0u64;
        while let Some(&b) = bytes.get(*p) {
            let d = HEX_DIGIT[b as usize];
            if d > 15 {
                break;
            }
            v = (v << 4) | d as u64;
            *p += 1;
        }
        return match *p - start {
            1..=16 => Some(Some(v)),
            _ => None,
        };
    }
    scan_dec(bytes, p)
}

/// Value of each byte as a hex digit; 0xff for non-digits.
static HEX_DIGIT: [u8; 256] = {
    let mut t = [0xff; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

impl Iterator for CsvReader {
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
    use std::io::Cursor;
    use std::path::Path;

    use proptest::prelude::*;

    use super::*;
    use crate::input::{Compression, Input};

    const HEADER: &str = "thread,time_ns,op,ptr,size,align,old_ptr,stream,extra,device\n";

    /// Values near every edge the two parsers must agree on.
    const TOKENS: &[&str] = &[
        "",
        "0",
        "1",
        "12",
        "007",
        "0x10",
        "0X1f",
        "0xABCDEF",
        "0x",
        "0x0",
        "-1",
        " 5",
        "5 ",
        "\"7\"",
        "x",
        "1e3",
        "alloc",
        "free",
        "realloc",
        "Alloc",
        "allocx",
        "64",
        "3",
        "281474976710656",
        "281474976710657",
        "1073741824",
        "2147483648",
        "9999999999999999999",
        "18446744073709551615",
        "18446744073709551616",
        "00000000000000000001",
        "0x1ffffffffffffffff",
        "0xffffffffffffffff",
    ];
    const OPS: &[&str] = &["alloc", "free", "realloc", "frees", ""];
    const ENDS: &[&str] = &["\n", "\r\n", "", "\r\r\n", ",\n", "\r"];

    /// A valid value for each column of `HEADER`.
    const VALID: &[&str] = &[
        "3", "1000", "alloc", "0x10", "8", "16", "0x20", "0x2", "y", "1",
    ];
    static ACCEPTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    /// Field `i` of a row is `TOKENS[fields[i]]`, or its column's valid value when the index
    /// is past `TOKENS`.
    fn row(fields: &[usize], op: usize, end: usize) -> String {
        let mut f: Vec<&str> = fields
            .iter()
            .zip(VALID)
            .map(|(&i, valid)| *TOKENS.get(i).unwrap_or(valid))
            .collect();
        f[2] = if op < OPS.len() {
            OPS[op]
        } else {
            TOKENS[op % TOKENS.len()]
        };
        format!("{}{}", f.join(","), ENDS.get(end).unwrap_or(&"\n"))
    }

    #[test]
    fn fast_rows_agree_with_the_general_parser() {
        agree();
        // The comparison means something only if the fast path took many rows.
        let accepted = ACCEPTED.load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            accepted > 300,
            "the fast path accepted only {accepted} rows"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        fn agree(
            rows in proptest::collection::vec(
                (proptest::collection::vec(0usize..400, 10), 0usize..8, 0usize..12),
                1..4,
            ),
        ) {
            let mut text = HEADER.to_string();
            for (fields, op, end) in &rows {
                text.push_str(&row(fields, *op, *end));
            }
            let input = Input {
                reader: Box::new(Cursor::new(text.into_bytes())),
                compression: Compression::None,
            };
            let mut r = CsvReader::new(LineReader::new(Path::new("t.csv"), input)).unwrap();
            // Reading the header filled the buffer: `pending` holds the rows.
            for _ in &rows {
                let line = r.lines.line() + 1;
                let fast = fast_row(&r.roles, r.times, r.lines.pending(), line);
                let general = r.general_row();
                match (fast, general) {
                    (Some((e, _, times)), Ok(Some(g))) => {
                        prop_assert_eq!(e, g);
                        prop_assert_eq!(times, r.times);
                        prop_assert_eq!(r.lines.line(), line);
                        ACCEPTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    (Some((e, _, _)), other) => {
                        prop_assert!(false, "fast accepted {:?}, general gave {:?}", e, other);
                    }
                    (None, Ok(Some(_))) => {}
                    (None, _) => break,
                }
            }
        }
    }
}
