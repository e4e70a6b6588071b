//! Canonical CSV (see DESIGN.md "Trace format"): a header naming the columns, any order;
//! `thread`, `op`, `ptr` required; `time_ns`, `size`, `align`, `old_ptr`, `stream`,
//! `device` optional; unknown columns are ignored so newer writers stay readable.
//!
//! Parsing is byte-level over one reused line buffer: no per-row allocation.

use crate::error::{Quoted, TraceError};
use crate::event::{Event, OpKind};
use crate::formats::fields::{trim_field, FieldContext};
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

impl Iterator for CsvReader {
    type Item = Result<Event, TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.next_event().transpose();
        if !matches!(item, Some(Ok(_))) {
            self.done = true;
        }
        item
    }
}
