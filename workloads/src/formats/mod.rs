//! Trace formats: detection by content, and one streaming reader per format.
//!
//! Every reader yields `Result<Event, TraceError>` one event at a time, in file order, and
//! stops after the first error. `read_ordered_events` adds the global order of docs/formats.md.

pub mod android;
pub mod csv;
mod fields;
mod lines;
mod order;
pub mod pickle;
pub mod pytorch;
pub mod rmm;
pub mod write;

use std::io::BufRead;
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
pub use lines::MAX_LINE_BYTES;

/// How much of a trace the readers take before they stop with an error naming the file
/// and line: hostile or broken input (a zip bomb, a file with no line ends, billions of
/// rows) is answered in bounded memory and time. Raise them for a legitimately huge trace
/// (`--max-input-bytes`, `--max-events`, `--max-order-bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimits {
    /// Bytes of input after decompression.
    pub max_input_bytes: u64,
    /// Events (rows that become alloc, free or realloc).
    pub max_events: u64,
    /// Bytes held to put time-stamped canonical CSV rows in time order (about 32 per row).
    /// A file already in time order streams past this budget.
    pub max_order_bytes: u64,
}

impl ReadLimits {
    /// 4 GiB: about 100 million rows of canonical CSV.
    pub const DEFAULT_MAX_INPUT_BYTES: u64 = 4 << 30;
    /// 2^24 events (16,777,216): the compiled form takes at most 24 bytes each (384 MiB).
    pub const DEFAULT_MAX_EVENTS: u64 = 1 << 24;
    /// 512 MiB: about 16 million rows held for ordering.
    pub const DEFAULT_MAX_ORDER_BYTES: u64 = 512 << 20;

    /// No limit but the line length (tests and trusted input).
    pub const UNLIMITED: ReadLimits = ReadLimits {
        max_input_bytes: u64::MAX,
        max_events: u64::MAX,
        max_order_bytes: u64::MAX,
    };
}

impl Default for ReadLimits {
    fn default() -> Self {
        ReadLimits {
            max_input_bytes: Self::DEFAULT_MAX_INPUT_BYTES,
            max_events: Self::DEFAULT_MAX_EVENTS,
            max_order_bytes: Self::DEFAULT_MAX_ORDER_BYTES,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TraceFormat {
    /// poolbench canonical CSV.
    Csv,
    /// RMM `logging_resource_adaptor` log.
    Rmm,
    /// Android `memory_replay` text dump.
    Android,
    /// PyTorch CUDA memory snapshot (pickle).
    #[serde(rename = "pytorch")]
    PyTorch,
}

impl TraceFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            TraceFormat::Csv => "csv",
            TraceFormat::Rmm => "rmm",
            TraceFormat::Android => "android",
            TraceFormat::PyTorch => "pytorch",
        }
    }
}

enum Inner {
    Csv(csv::CsvReader),
    Rmm(rmm::RmmReader),
    Android(android::AndroidReader),
    PyTorch(pytorch::PyTorchReader),
}

/// A streaming reader over any supported trace, in file order.
pub struct EventReader {
    inner: Inner,
    compression: Compression,
    path: std::path::PathBuf,
    /// Events yielded so far, and the most that may be.
    events: u64,
    max_events: u64,
}

impl EventReader {
    pub fn format(&self) -> TraceFormat {
        match self.inner {
            Inner::Csv(_) => TraceFormat::Csv,
            Inner::Rmm(_) => TraceFormat::Rmm,
            Inner::Android(_) => TraceFormat::Android,
            Inner::PyTorch(_) => TraceFormat::PyTorch,
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
            Inner::PyTorch(r) => r.alloc_failures(),
        }
    }

    /// What a PyTorch snapshot held besides its events (`None` for other formats).
    pub fn snapshot(&self) -> Option<&pytorch::SnapshotSummary> {
        match &self.inner {
            Inner::PyTorch(r) => Some(r.summary()),
            _ => None,
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
        let item = match &mut self.inner {
            Inner::Csv(r) => r.next(),
            Inner::Rmm(r) => r.next(),
            Inner::Android(r) => r.next(),
            Inner::PyTorch(r) => r.next(),
        };
        if let Some(Ok(e)) = &item {
            self.events += 1;
            if self.events > self.max_events {
                return Some(Err(TraceError::TooLarge {
                    path: self.path.clone(),
                    line: e.line,
                    what: format!(
                        "more than {} events (the limit; raise it with --max-events)",
                        self.max_events
                    ),
                }));
            }
        }
        item
    }
}

/// How to read a trace: the limits every reader keeps, and the choices a format's reader
/// offers (only PyTorch snapshots have any).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadOptions {
    pub limits: ReadLimits,
    /// Which PyTorch record replays as the free.
    pub pytorch_free_at: pytorch::FreeAt,
}

/// Open a trace of any supported format (detected by content; compression by magic
/// bytes) and stream its events in file order, within the default `ReadLimits`.
pub fn read_events(path: &Path) -> Result<EventReader, TraceError> {
    read_events_with(path, &ReadOptions::default())
}

/// [`read_events`] with the readers' options and limits.
pub fn read_events_with(path: &Path, opts: &ReadOptions) -> Result<EventReader, TraceError> {
    events_from_input(path, input::open(path)?, opts)
}

/// [`read_events_with`] over an already opened `input`; `path` only names it in errors.
pub fn events_from_input(
    path: &Path,
    mut input: input::Input,
    opts: &ReadOptions,
) -> Result<EventReader, TraceError> {
    let limits = &opts.limits;
    let compression = input.compression;
    let head = input
        .reader
        .fill_buf()
        .map_err(|e| TraceError::io(path, e))?;
    if pickle::looks_like_pickle(head) {
        // The unpickler bounds its own input and decoded size (see `pickle`).
        let reader = pytorch::PyTorchReader::new(path, &mut input.reader, opts.pytorch_free_at)?;
        return Ok(EventReader {
            inner: Inner::PyTorch(reader),
            compression,
            path: path.to_path_buf(),
            events: 0,
            max_events: limits.max_events,
        });
    }
    let mut lines = LineReader::new(path, input, limits.max_input_bytes);
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
        // No format has a carriage return inside a line: one there means CR-only line
        // ends, and the whole file would read as one header line and no events.
        if let Some(column) = first.text.iter().position(|&b| b == b'\r') {
            return Err(TraceError::CrLineEnds {
                path: path.to_path_buf(),
                line: first.number,
                column: column + 1,
            });
        }
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
    Ok(EventReader {
        inner,
        compression,
        path: path.to_path_buf(),
        events: 0,
        max_events: limits.max_events,
    })
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
    /// The rows held when the order budget ran out were in time order: they are yielded
    /// in order, then the rest of the file streams as long as it stays in time order.
    SortedTail(SortedTail),
}

struct SortedTail {
    held: Merge,
    reader: EventReader,
    last_time_ns: u64,
    max_order_bytes: u64,
}

impl SortedTail {
    fn next(&mut self) -> Option<Result<Event, TraceError>> {
        if let Some(e) = self.held.next() {
            return Some(Ok(e));
        }
        let e = match self.reader.next()? {
            Ok(e) => e,
            Err(err) => return Some(Err(err)),
        };
        let time_ns = e.time_ns.unwrap_or(0);
        if time_ns < self.last_time_ns {
            return Some(Err(order_budget_error(
                self.reader.path.as_path(),
                e.line,
                self.max_order_bytes,
                (e.line, time_ns, self.last_time_ns),
            )));
        }
        self.last_time_ns = time_ns;
        Some(Ok(e))
    }
}

/// The rows of `path` need more than `max_order_bytes` to be put in time order, and are
/// not in order already: `step_back` is (line, time_ns, an earlier row's greater time_ns)
/// of the first row found out of order. The error is reported at `line`.
fn order_budget_error(
    path: &Path,
    line: u64,
    max_order_bytes: u64,
    step_back: (u64, u64, u64),
) -> TraceError {
    let (back_line, time_ns, earlier_ns) = step_back;
    TraceError::TooLarge {
        path: path.to_path_buf(),
        line,
        what: format!(
            "rows out of time order (line {back_line} has time_ns {time_ns}, before \
             {earlier_ns} on an earlier row), and putting them in order needs more than \
             {max_order_bytes} bytes (the limit; about 32 bytes a row): sort the file by \
             time_ns first (a file in time order streams in constant memory), or raise \
             --max-order-bytes"
        ),
    }
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
            Source::SortedTail(t) => t.reader.alloc_failures(),
        }
    }

    /// Heap bytes taken by the events held to put them in order, measured once all were
    /// read (the most they take); 0 when the trace streams in file order.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// What a PyTorch snapshot held besides its events (`None` for other formats).
    pub fn snapshot(&self) -> Option<&pytorch::SnapshotSummary> {
        match &self.source {
            Source::Streaming(r) => r.snapshot(),
            // Only canonical CSV is held for ordering; snapshots stream.
            Source::Merged(_) | Source::SortedTail(_) => None,
        }
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
            Source::SortedTail(t) => t.next(),
        }
    }
}

/// Open a trace and yield its events in global order (see `OrderedEvents`), within the
/// default `ReadLimits`.
pub fn read_ordered_events(path: &Path) -> Result<OrderedEvents, TraceError> {
    read_ordered_events_with(path, &ReadOptions::default())
}

/// [`read_ordered_events`] with the readers' options and limits.
pub fn read_ordered_events_with(
    path: &Path,
    opts: &ReadOptions,
) -> Result<OrderedEvents, TraceError> {
    ordered_events_from_input(path, input::open(path)?, opts)
}

/// [`read_ordered_events_with`] over an already opened `input`; `path` only names it in
/// errors.
pub fn ordered_events_from_input(
    path: &Path,
    input: input::Input,
    opts: &ReadOptions,
) -> Result<OrderedEvents, TraceError> {
    let limits = &opts.limits;
    let mut reader = events_from_input(path, input, opts)?;
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
    // The first row out of time order, if any: (line, time_ns, the greater time before).
    // Without one, the rows' stable sort by time is file order.
    let mut last_time_ns = first.time_ns.unwrap_or(0);
    let mut step_back = None;
    while let Some(e) = reader.next() {
        let e = e?;
        let time_ns = e.time_ns.unwrap_or(0);
        if time_ns < last_time_ns && step_back.is_none() {
            step_back = Some((e.line, time_ns, last_time_ns));
        }
        last_time_ns = last_time_ns.max(time_ns);
        order.push(&e);
        if order.approx_bytes() as u64 > limits.max_order_bytes {
            if let Some(step_back) = step_back {
                return Err(order_budget_error(
                    path,
                    e.line,
                    limits.max_order_bytes,
                    step_back,
                ));
            }
            return Ok(OrderedEvents {
                format,
                alloc_failures: 0,
                pending: None,
                held_bytes: order.heap_bytes(),
                source: Source::SortedTail(SortedTail {
                    held: order.into_merge(),
                    reader,
                    last_time_ns,
                    max_order_bytes: limits.max_order_bytes,
                }),
            });
        }
    }
    Ok(OrderedEvents {
        format,
        alloc_failures: reader.alloc_failures(),
        pending: None,
        held_bytes: order.heap_bytes(),
        source: Source::Merged(order.into_merge()),
    })
}
