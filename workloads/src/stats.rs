//! Trace statistics, computed in one streaming pass over the sanitised global order.
//!
//! Definitions (each tested on hand-written traces):
//! - `peak_live_bytes`: the maximum, over the global order, of the sum of requested sizes
//!   of live blocks; a realloc releases the old block, then counts the new one.
//! - `cross_thread_frees`: frees and reallocs whose block was allocated (or last
//!   reallocated) by another thread.
//! - `leaks`: blocks live at the end.
//! - `size_histogram`: requested sizes of allocs and reallocs in log2 buckets
//!   `[2^k, 2^(k+1))`, plus a bucket for size 0.

use serde::Serialize;

use crate::compiler::Resolved;
use crate::event::{Event, OpKind};
use crate::ptrmap::PtrMap;
use crate::sanitize::SanitationReport;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SizeBucket {
    /// Smallest size in the bucket (bytes).
    pub min_bytes: u64,
    /// Largest size in the bucket (bytes).
    pub max_bytes: u64,
    pub count: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ThreadStats {
    /// Thread id as written in the trace.
    pub thread: u64,
    pub events: u64,
    pub allocs: u64,
    pub frees: u64,
    pub reallocs: u64,
    /// Frees and reallocs by this thread of blocks another thread allocated.
    pub cross_thread_frees: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StreamStats {
    /// Stream id as written in the trace.
    pub stream: u64,
    pub events: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TraceStats {
    pub events: u64,
    pub allocs: u64,
    pub frees: u64,
    pub reallocs: u64,
    pub threads: u64,
    pub peak_live_bytes: u64,
    /// Most blocks live at once.
    pub peak_live_blocks: u64,
    /// Sum of requested sizes of allocs and reallocs.
    pub requested_bytes: u64,
    pub min_size_bytes: u64,
    pub max_size_bytes: u64,
    pub cross_thread_frees: u64,
    pub leaks: u64,
    pub leaked_bytes: u64,
    /// Failed allocations the trace recorded (skipped: they are not events).
    pub alloc_failures: u64,
    /// Last `time_ns` minus first, when the trace has times.
    pub duration_ns: Option<u64>,
    pub size_histogram: Vec<SizeBucket>,
    pub per_thread: Vec<ThreadStats>,
    /// Events per stream; empty when the trace has no streams.
    pub streams: Vec<StreamStats>,
    pub sanitation: SanitationReport,
}

#[derive(Debug, Clone, Copy)]
struct LiveBlock {
    thread: u64,
    size_bytes: u64,
}

/// Streaming statistics: `observe` sanitised events in global order, then `finish`.
pub struct StatsCollector {
    stats: TraceStats,
    live: PtrMap<LiveBlock>,
    live_bytes: u64,
    thread_index: PtrMap<usize>,
    stream_index: PtrMap<usize>,
    histogram: [u64; 65],
    first_time_ns: Option<u64>,
    last_time_ns: Option<u64>,
    /// Blocks and bytes live after the last event counted.
    end_live: (u64, u64),
    /// The first event whose block made the live bytes exceed u64: (line, bytes live
    /// before it, its size). `live_bytes` saturates from then on.
    live_overflow: Option<(u64, u64, u64)>,
}

impl Default for StatsCollector {
    fn default() -> Self {
        Self::new()
    }
}

impl StatsCollector {
    pub fn new() -> Self {
        StatsCollector {
            stats: TraceStats::default(),
            live: PtrMap::default(),
            live_bytes: 0,
            thread_index: PtrMap::default(),
            stream_index: PtrMap::default(),
            histogram: [0; 65],
            first_time_ns: None,
            last_time_ns: None,
            end_live: (0, 0),
            live_overflow: None,
        }
    }

    /// The first event at which the bytes live exceeded what a u64 holds, as an error
    /// naming `path` and the event's line; statistics past it would be wrong.
    pub fn live_overflow(&self, path: &std::path::Path) -> Option<crate::TraceError> {
        self.live_overflow
            .map(|(line, live, size)| crate::TraceError::TooLarge {
                path: path.to_path_buf(),
                line,
                what: crate::compiler::live_bytes_overflow(live, size),
            })
    }

    fn release(&mut self, ptr: u64, by_thread: u64) -> bool {
        match self.live.remove(&ptr) {
            Some(b) => {
                // Exact unless it saturated at an overflow (reported by `live_overflow`).
                self.live_bytes -= b.size_bytes.min(self.live_bytes);
                b.thread != by_thread
            }
            None => false,
        }
    }

    fn count_size(&mut self, size: u64) {
        let s = &mut self.stats;
        s.requested_bytes = s.requested_bytes.saturating_add(size);
        s.min_size_bytes = if s.allocs + s.reallocs == 1 {
            size
        } else {
            s.min_size_bytes.min(size)
        };
        s.max_size_bytes = s.max_size_bytes.max(size);
        let bucket = if size == 0 {
            0
        } else {
            64 - size.leading_zeros() as usize
        };
        self.histogram[bucket] += 1;
    }

    /// Count one sanitised event, keeping track of its block here.
    pub fn observe(&mut self, e: &Event) {
        let cross = match e.op {
            OpKind::Alloc => false,
            OpKind::Free => self.release(e.ptr, e.thread),
            OpKind::Realloc => e.old_ptr != 0 && self.release(e.old_ptr, e.thread),
        };
        if e.op != OpKind::Free {
            if let Some(old) = self.live.insert(
                e.ptr,
                LiveBlock {
                    thread: e.thread,
                    size_bytes: e.size,
                },
            ) {
                // Unsanitised input: the old block is gone.
                self.live_bytes -= old.size_bytes.min(self.live_bytes);
            }
            self.live_bytes = match self.live_bytes.checked_add(e.size) {
                Some(sum) => sum,
                None => {
                    self.live_overflow
                        .get_or_insert((e.line, self.live_bytes, e.size));
                    u64::MAX
                }
            };
        }
        let next = self.stats.per_thread.len();
        let ti = *self.thread_index.entry(e.thread).or_insert(next);
        self.count(
            e,
            &Resolved {
                thread: ti as u32,
                cross_thread_release: cross,
                live_blocks: self.live.len() as u64,
                live_bytes: self.live_bytes,
            },
        );
    }

    /// Count one sanitised event whose block was tracked elsewhere: by the compiler, in
    /// `load_trace`, so that one pointer map serves both. `r.thread` numbers threads in
    /// order of first appearance, as `observe` does.
    pub(crate) fn count(&mut self, e: &Event, r: &Resolved) {
        self.stats.events += 1;
        let ti = r.thread as usize;
        if ti == self.stats.per_thread.len() {
            self.stats.per_thread.push(ThreadStats {
                thread: e.thread,
                ..ThreadStats::default()
            });
        }
        if let Some(stream) = e.stream {
            let next = self.stats.streams.len();
            let si = *self.stream_index.entry(stream).or_insert(next);
            if si == next {
                self.stats.streams.push(StreamStats { stream, events: 0 });
            }
            self.stats.streams[si].events += 1;
        }
        if let Some(t) = e.time_ns {
            self.first_time_ns.get_or_insert(t);
            self.last_time_ns = Some(t);
        }
        match e.op {
            OpKind::Alloc => {
                self.stats.allocs += 1;
                self.count_size(e.size);
            }
            OpKind::Free => self.stats.frees += 1,
            OpKind::Realloc => {
                self.stats.reallocs += 1;
                self.count_size(e.size);
            }
        }
        if e.op != OpKind::Free {
            self.stats.peak_live_bytes = self.stats.peak_live_bytes.max(r.live_bytes);
            self.stats.peak_live_blocks = self.stats.peak_live_blocks.max(r.live_blocks);
        }
        self.end_live = (r.live_blocks, r.live_bytes);
        let t = &mut self.stats.per_thread[ti];
        t.events += 1;
        match e.op {
            OpKind::Alloc => t.allocs += 1,
            OpKind::Free => t.frees += 1,
            OpKind::Realloc => t.reallocs += 1,
        }
        if r.cross_thread_release {
            t.cross_thread_frees += 1;
            self.stats.cross_thread_frees += 1;
        }
    }

    /// Complete the statistics; `alloc_failures` and `sanitation` come from the reader
    /// and the sanitizer.
    pub fn finish(mut self, alloc_failures: u64, sanitation: SanitationReport) -> TraceStats {
        let s = &mut self.stats;
        s.threads = s.per_thread.len() as u64;
        (s.leaks, s.leaked_bytes) = self.end_live;
        s.alloc_failures = alloc_failures;
        s.sanitation = sanitation;
        s.duration_ns = match (self.first_time_ns, self.last_time_ns) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        };
        s.size_histogram = self
            .histogram
            .iter()
            .enumerate()
            .filter(|(_, &c)| c > 0)
            .map(|(k, &count)| {
                let (min_bytes, max_bytes) = match k {
                    0 => (0, 0),
                    64 => (1 << 63, u64::MAX),
                    _ => (1u64 << (k - 1), (1u64 << k) - 1),
                };
                SizeBucket {
                    min_bytes,
                    max_bytes,
                    count,
                }
            })
            .collect();
        self.stats
    }
}

/// Statistics of already-sanitised events (no sanitation report, no failures).
pub fn trace_stats<'a>(events: impl IntoIterator<Item = &'a Event>) -> TraceStats {
    let mut c = StatsCollector::new();
    for e in events {
        c.observe(e);
    }
    c.finish(0, SanitationReport::default())
}
