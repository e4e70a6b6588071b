//! Trace formats: detection by content, and one streaming reader per format.
//!
//! Every reader yields `Result<Event, TraceError>` one event at a time, in file order, and
//! stops after the first error. `read_ordered_events` adds the global order of docs/formats.md.

pub mod android;
pub mod csv;
mod fields;
mod lines;
mod order;
pub mod rmm;
pub mod write;

use std::path::Path;

use serde::Serialize;

use crate::error::{Quoted, TraceError};
use crate::event::Event;
use crate::input::{self, Compression};
use lines::LineReader;
use order::{Merge, TimeOrder};

/// The end of every format reader's `Iterator::next`: turn `next_event`'s result into the
/// item, and mark the reader done after the end or the first error (a reader never resumes
/// past a bad line).
pub(crate) fn fuse(
    done: &mut bool,
    next_event: Result<Option<Event>, TraceError>,
) -> Option<Result<Event, TraceError>> {
    let item = next_event.transpose();
    if !matches!(item, Some(Ok(_))) {
        *done = true;
    }
    item
}

pub use fields::{MAX_ALIGN_BYTES, MAX_SIZE_BYTES};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TraceFormat {
    /// poolbench canonical CSV.
    Csv,
    /// RMM `logging_resource_adaptor` log.
    Rmm,
    /// Android `memory_replay` text dump.
    Android,
}

impl TraceFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            TraceFormat::Csv => "csv",
            TraceFormat::Rmm => "rmm",
            TraceFormat::Android => "android",
        }
    }
}

enum Inner {
    Csv(csv::CsvReader),
    Rmm(rmm::RmmReader),
    Android(android::AndroidReader),
}

/// A streaming reader over any supported trace, in file order.
pub struct EventReader {
    inner: Inner,
    compression: Compression,
}

impl EventReader {
    pub fn format(&self) -> TraceFormat {
        match self.inner {
            Inner::Csv(_) => TraceFormat::Csv,
            Inner::Rmm(_) => TraceFormat::Rmm,
            Inner::Android(_) => TraceFormat::Android,
        }
    }

    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// Failed allocations in the trace (RMM `allocate failure`, Android NULL results),
    /// skipped so far.
    pub fn alloc_failures(&self) -> u64 {
        match &self.inner {
            Inner::Csv(_) => 0,
            Inner::Rmm(r) => r.alloc_failures(),
            Inner::Android(r) => r.alloc_failures(),
        }
    }

    /// Whether the file order is not the global order (canonical CSV with `time_ns`).
    fn needs_time_order(&self) -> bool {
        match &self.inner {
            Inner::Csv(r) => r.has_times(),
            _ => false,
        }
    }
}

impl Iterator for EventReader {
    type Item = Result<Event, TraceError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.inner {
            Inner::Csv(r) => r.next(),
            Inner::Rmm(r) => r.next(),
            Inner::Android(r) => r.next(),
        }
    }
}

/// Open a trace of any supported format (detected by content; compression by magic
/// bytes) and stream its events in file order.
pub fn read_events(path: &Path) -> Result<EventReader, TraceError> {
    let input = input::open(path)?;
    let compression = input.compression;
    let mut lines = LineReader::new(path, input);
    #[derive(PartialEq)]
    enum Detected {
        Csv,
        Rmm,
        Android,
    }
    let detected = {
        let Some(first) = lines.next_line()? else {
            return Err(TraceError::Empty {
                path: path.to_path_buf(),
            });
        };
        if rmm::looks_like_header(first.text) {
            Detected::Rmm
        } else if android::looks_like_record(first.text) {
            Detected::Android
        } else if first.text.contains(&b',') && std::str::from_utf8(first.text).is_ok() {
            // Anything comma-separated is taken as canonical CSV, so that a header with a
            // misspelt column gets a message about the column, not about the format.
            Detected::Csv
        } else {
            return Err(TraceError::UnknownFormat {
                path: path.to_path_buf(),
                line: first.number,
                value: Quoted::new(first.text),
            });
        }
    };
    lines.unread();
    let inner = match detected {
        Detected::Csv => Inner::Csv(csv::CsvReader::new(lines)?),
        Detected::Rmm => Inner::Rmm(rmm::RmmReader::new(lines)?),
        Detected::Android => Inner::Android(android::AndroidReader::new(lines)),
    };
    Ok(EventReader { inner, compression })
}

/// Events of a trace in its global order: file order, except for canonical CSV with
/// `time_ns`, whose rows are stably sorted by time (file order breaks ties, so each
/// thread keeps its program order). Only that case holds the events in memory, packed
/// per thread at about 32 bytes each and freed as they are yielded (see `order`).
pub struct OrderedEvents {
    format: TraceFormat,
    alloc_failures: u64,
    /// An event read ahead (to learn whether rows carry times), yielded first.
    pending: Option<Event>,
    source: Source,
    /// Heap bytes the held events took once all were read (0 when streaming).
    held_bytes: usize,
}

enum Source {
    Streaming(EventReader),
    Merged(Merge),
}

impl OrderedEvents {
    pub fn format(&self) -> TraceFormat {
        self.format
    }

    /// Failed allocations skipped so far (complete once the iterator is exhausted).
    pub fn alloc_failures(&self) -> u64 {
        match &self.source {
            Source::Streaming(r) => r.alloc_failures(),
            Source::Merged(_) => self.alloc_failures,
        }
    }

    /// Heap bytes taken by the events held to put them in order, measured once all were
    /// read (the most they take); 0 when the trace streams in file order.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }
}

impl Iterator for OrderedEvents {
    type Item = Result<Event, TraceError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.pending.take() {
            return Some(Ok(e));
        }
        match &mut self.source {
            Source::Streaming(r) => r.next(),
            Source::Merged(m) => m.next().map(Ok),
        }
    }
}

/// Open a trace and yield its events in global order (see `OrderedEvents`).
pub fn read_ordered_events(path: &Path) -> Result<OrderedEvents, TraceError> {
    let mut reader = read_events(path)?;
    let format = reader.format();
    let first = reader.next().transpose()?;
    let Some(first) = first.filter(|_| reader.needs_time_order()) else {
        return Ok(OrderedEvents {
            format,
            alloc_failures: 0,
            pending: first,
            source: Source::Streaming(reader),
            held_bytes: 0,
        });
    };
    let mut order = TimeOrder::new();
    order.push(&first);
    for e in reader.by_ref() {
        order.push(&e?);
    }
    Ok(OrderedEvents {
        format,
        alloc_failures: reader.alloc_failures(),
        pending: None,
        held_bytes: order.heap_bytes(),
        source: Source::Merged(order.into_merge()),
    })
}
