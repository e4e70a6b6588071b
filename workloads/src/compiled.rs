//! The replay form of a trace: what the engine consumes.
//!
//! Pointers become dense slot indices (a slot is reused once its block is freed), every
//! event gets a global sequence number, events are split per trace thread. Every op on a
//! slot carries its `ordinal`: the number of ops on that slot before it, in global order.
//! An engine keeps a per-slot count of executed ops and runs an op once the count equals
//! its ordinal; the `CROSS_THREAD` flag marks the ops whose predecessor on the slot ran on
//! another trace thread (the only ones that can ever wait).

use crate::event::OpKind;

/// 24 bytes (checked by a test): size 8, seq 4, slot 4, ordinal 4, kind 1, flags 1, stream 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct CompiledOp {
    /// Requested bytes: the new size for realloc, 0 for free.
    pub size: u64,
    /// Global sequence number (position in the trace's global order).
    pub seq: u32,
    pub slot: u32,
    /// Ops on this slot before this one.
    pub ordinal: u32,
    pub kind: OpKind,
    /// bit 0: `CROSS_THREAD`; bits 1..=6: log2 of the requested alignment + 1 (0 = none).
    pub flags: u8,
    /// Dense stream index into `CompiledTrace::streams` (0 when the trace has none).
    pub stream: u16,
}

impl CompiledOp {
    pub const CROSS_THREAD: u8 = 1;

    #[inline]
    pub fn cross_thread(&self) -> bool {
        self.flags & Self::CROSS_THREAD != 0
    }

    /// Requested alignment in bytes, or 0 when the trace gave none.
    #[inline]
    pub fn align(&self) -> usize {
        let code = (self.flags >> 1) & 0x3f;
        if code == 0 {
            0
        } else {
            1usize << (code - 1)
        }
    }

    /// Encode `flags` from the cross-thread bit and an alignment (0 or a power of two).
    pub fn make_flags(cross_thread: bool, align: u64) -> u8 {
        let code = if align == 0 {
            0
        } else {
            (align.trailing_zeros() as u8 + 1) & 0x3f
        };
        (code << 1) | cross_thread as u8
    }
}

/// The ops of one trace thread, in global order.
#[derive(Debug, Clone, Default)]
pub struct ThreadOps {
    /// The thread id as written in the trace.
    pub trace_thread: u64,
    pub ops: Vec<CompiledOp>,
    /// `time_ns` of each op (parallel to `ops`), kept only when asked for (pacing).
    pub times_ns: Option<Vec<u64>>,
}

/// A compiled trace.
#[derive(Debug, Clone, Default)]
pub struct CompiledTrace {
    pub threads: Vec<ThreadOps>,
    /// Number of distinct slots (the most blocks live at once, at most).
    pub slot_count: u32,
    pub event_count: u64,
    /// Stream ids as written in the trace; `CompiledOp::stream` indexes this.
    pub streams: Vec<u64>,
    /// Maximum over the global order of the requested bytes live.
    pub peak_live_bytes: u64,
}

impl CompiledTrace {
    /// Bytes of memory the compiled form occupies (ops and times), to check the footprint.
    pub fn memory_bytes(&self) -> usize {
        self.threads
            .iter()
            .map(|t| {
                t.ops.capacity() * std::mem::size_of::<CompiledOp>()
                    + t.times_ns.as_ref().map_or(0, |v| v.capacity() * 8)
            })
            .sum()
    }

    /// The ops with `seq < events` of every thread: a valid trace on its own, since an op
    /// only ever waits for ops with a smaller sequence number. `peak_live_bytes` stays the
    /// whole trace's (an upper bound for the prefix).
    pub fn prefix(&self, events: u64) -> CompiledTrace {
        if events >= self.event_count {
            return self.clone();
        }
        let threads = self
            .threads
            .iter()
            .map(|t| {
                let n = t.ops.partition_point(|op| (op.seq as u64) < events);
                ThreadOps {
                    trace_thread: t.trace_thread,
                    ops: t.ops[..n].to_vec(),
                    times_ns: t.times_ns.as_ref().map(|v| v[..n].to_vec()),
                }
            })
            .filter(|t| !t.ops.is_empty())
            .collect();
        CompiledTrace {
            threads,
            slot_count: self.slot_count,
            event_count: events,
            streams: self.streams.clone(),
            peak_live_bytes: self.peak_live_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One thread allocating and freeing one 64-byte block, `events` events in all,
    /// through the compiler.
    fn alternating_trace(events: u64) -> CompiledTrace {
        let event = |i: u64| crate::Event {
            thread: 0,
            time_ns: None,
            op: if i.is_multiple_of(2) {
                OpKind::Alloc
            } else {
                OpKind::Free
            },
            ptr: 0x1000,
            size: if i.is_multiple_of(2) { 64 } else { 0 },
            align: 0,
            old_ptr: 0,
            stream: None,
            device: None,
            line: i + 2,
        };
        crate::compile(
            std::path::Path::new("alternating"),
            (0..events).map(event),
            false,
        )
        .expect("a valid trace")
    }

    #[test]
    fn prefix_keeps_only_earlier_ops() {
        let trace = alternating_trace(100);
        let p = trace.prefix(10);
        assert_eq!(p.event_count, 10);
        assert_eq!(p.threads[0].ops.len(), 10);
        assert!(p.threads[0].ops.iter().all(|o| o.seq < 10));
    }
}
