//! The smallest capacity a trace fits in: for backends whose memory limit is a parameter
//! (a simulated device), replay the trace again and again at different limits.
//!
//! These replays are sequential: the trace's ops in global order on one thread, with no
//! clock and no sampling. That order is the one every concurrent pass respects op by op on
//! each slot, and it makes a probe's answer a function of the capacity alone (no scheduling
//! noise), which bisection needs.

use crate::backends::Backend;
use workloads::{CompiledTrace, OpKind};

/// One op of the trace in global order.
#[derive(Debug, Clone, Copy)]
struct SequentialOp {
    slot: u32,
    kind: OpKind,
    size_bytes: u64,
    align: usize,
    stream: u16,
}

/// The trace's ops in global order.
fn global_order(trace: &CompiledTrace) -> Vec<SequentialOp> {
    let mut ops: Vec<(u32, SequentialOp)> = trace
        .threads
        .iter()
        .flat_map(|t| t.ops.iter())
        .map(|o| {
            (
                o.seq,
                SequentialOp {
                    slot: o.slot,
                    kind: o.kind,
                    size_bytes: o.size,
                    align: o.align(),
                    stream: o.stream,
                },
            )
        })
        .collect();
    ops.sort_unstable_by_key(|&(seq, _)| seq);
    ops.into_iter().map(|(_, o)| o).collect()
}

/// Replay `ops` single-threaded against `backend`; true when no allocation failed. Every
/// block still live at the end (or when the first allocation fails) is freed, so that
/// dropping the backend reports no leak.
fn replays_without_failure<B: Backend>(backend: &B, ops: &[SequentialOp], slots: usize) -> bool {
    // (address, requested bytes) of each slot's live block; address 0 = none.
    let mut live: Vec<(usize, usize)> = vec![(0, 0); slots];
    let mut ok = true;
    for op in ops {
        let slot = &mut live[op.slot as usize];
        match op.kind {
            OpKind::Alloc => {
                let addr = backend.alloc(op.size_bytes as usize, op.align, op.stream);
                if addr == 0 {
                    ok = false;
                    break;
                }
                *slot = (addr, op.size_bytes as usize);
            }
            OpKind::Free => {
                if slot.0 != 0 {
                    // SAFETY: a non-zero entry of `live` is a live block of this backend of
                    // `slot.1` requested bytes, set by the op that allocated it and
                    // cleared here.
                    unsafe { backend.free(slot.0, slot.1, op.stream) };
                }
                *slot = (0, 0);
            }
            OpKind::Realloc => {
                // SAFETY: `slot.0` is 0 or a live block of `slot.1` bytes (as above); on
                // success it is replaced by the new block below.
                let addr = unsafe {
                    backend.realloc(slot.0, slot.1, op.size_bytes as usize, op.align, op.stream)
                };
                if addr == 0 {
                    ok = false;
                    break;
                }
                *slot = (addr, op.size_bytes as usize);
            }
        }
    }
    for &(addr, size_bytes) in &live {
        if addr != 0 {
            // SAFETY: each non-zero entry is still a live block (as above).
            unsafe { backend.free(addr, size_bytes, 0) };
        }
    }
    ok
}

/// The smallest capacity, to `step_bytes`, at which a backend made by `with_capacity`
/// replays `trace` with no allocation failure, found by bisection over sequential replays
/// (a fresh backend per probe; a probe whose backend cannot be made counts as a failure).
/// `None` when even 1 PiB fails.
///
/// Fragmentation need not be monotone in the capacity; bisection finds a capacity that
/// works with every probed smaller one failing, which is the figure users ask for.
pub fn min_capacity_bytes<B, F>(
    trace: &CompiledTrace,
    step_bytes: u64,
    mut with_capacity: F,
) -> Option<u64>
where
    B: Backend,
    F: FnMut(u64) -> Option<B>,
{
    let step_bytes = step_bytes.max(1);
    let ops = global_order(trace);
    let slots = trace.slot_count as usize;
    let mut works = |capacity_bytes: u64| -> bool {
        with_capacity(capacity_bytes).is_some_and(|b| replays_without_failure(&b, &ops, slots))
    };
    let mut hi = trace.peak_live_bytes.max(1).next_multiple_of(step_bytes);
    while !works(hi) {
        if hi >= 1 << 50 {
            return None;
        }
        hi *= 2;
    }
    // Invariant: `works(hi)`, and every capacity <= `lo` probed so far failed (or is 0).
    let mut lo = 0;
    while hi - lo > step_bytes {
        let mid = (lo + (hi - lo) / 2) / step_bytes * step_bytes;
        let mid = mid.max(lo + step_bytes);
        if works(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(hi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use workloads::{CompiledOp, ThreadOps};

    /// A bump allocator with a limit on the bytes live at once: it fits a trace exactly
    /// when the limit is at least the trace's peak live bytes.
    struct Limited {
        limit_bytes: u64,
        live_bytes: AtomicU64,
        next_addr: AtomicU64,
    }

    impl Backend for Limited {
        fn alloc(&self, size: usize, _align: usize, _stream: u16) -> usize {
            let live = self.live_bytes.load(Ordering::Relaxed) + size as u64;
            if live > self.limit_bytes {
                return 0;
            }
            self.live_bytes.store(live, Ordering::Relaxed);
            self.next_addr
                .fetch_add(size.max(1) as u64, Ordering::Relaxed) as usize
        }
        unsafe fn free(&self, _addr: usize, size: usize, _stream: u16) {
            self.live_bytes.fetch_sub(size as u64, Ordering::Relaxed);
        }
        unsafe fn realloc(
            &self,
            addr: usize,
            old: usize,
            new: usize,
            align: usize,
            s: u16,
        ) -> usize {
            let n = self.alloc(new, align, s);
            if n != 0 && addr != 0 {
                // SAFETY: `addr` is live with `old` bytes (the caller's contract).
                unsafe { self.free(addr, old, s) };
            }
            n
        }
    }

    fn op(seq: u32, slot: u32, ordinal: u32, kind: OpKind, size: u64) -> CompiledOp {
        CompiledOp {
            size,
            seq,
            slot,
            ordinal,
            kind,
            flags: 0,
            stream: 0,
        }
    }

    #[test]
    fn finds_the_peak_of_a_two_thread_trace_to_the_step() {
        // Thread 0 holds 3000 B while thread 1 allocates 5000 B: a peak of 8000 B live,
        // reached only in global order (thread 1's ops come between thread 0's).
        let t0 = vec![
            op(0, 0, 0, OpKind::Alloc, 3000),
            op(3, 0, 1, OpKind::Free, 0),
        ];
        let t1 = vec![
            op(1, 1, 0, OpKind::Alloc, 5000),
            op(2, 1, 1, OpKind::Free, 0),
            op(4, 1, 2, OpKind::Alloc, 6000),
            op(5, 1, 3, OpKind::Free, 0),
        ];
        let trace = CompiledTrace {
            threads: vec![
                ThreadOps {
                    trace_thread: 0,
                    ops: t0,
                    times_ns: None,
                },
                ThreadOps {
                    trace_thread: 1,
                    ops: t1,
                    times_ns: None,
                },
            ],
            slot_count: 2,
            event_count: 6,
            streams: vec![],
            peak_live_bytes: 8000,
        };
        let make = |limit_bytes| {
            Some(Limited {
                limit_bytes,
                live_bytes: AtomicU64::new(0),
                next_addr: AtomicU64::new(4096),
            })
        };
        assert_eq!(min_capacity_bytes(&trace, 512, make), Some(8192));
        assert_eq!(min_capacity_bytes(&trace, 1, make), Some(8000));
        // A backend that can never be made has no capacity that works.
        assert_eq!(min_capacity_bytes(&trace, 512, |_| None::<Limited>), None);
    }
}
