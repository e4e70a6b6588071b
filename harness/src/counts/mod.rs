//! The deterministic tier (`replay --counts`): what each backend's calls cost, in executed
//! instructions and simulated cache misses, per op kind.
//!
//! # How the counts are taken
//! Timings on a shared CI runner move by tens of percent between runs; instruction counts
//! under a simulator do not. [`CallgrindSource`] re-runs this binary (hidden subcommand
//! `counts-child`) under `valgrind --tool=callgrind`, with collection off except inside three
//! `#[inline(never)]` shims the counting pass calls the backend through
//! ([`counted_op_alloc`], [`counted_op_free`], [`counted_op_realloc`]). Each shim's inclusive
//! cost is exactly the backend's work for that op kind: the engine's loop, slot table, waits
//! and the trace loading are never collected. After each (trace, backend) the child calls
//! [`counts_checkpoint`], after which callgrind dumps and zeroes its counters, so each dump
//! file holds one backend's costs; the child's manifest says which.
//!
//! The counting pass is one pass over the trace on a fresh backend, on one worker that runs
//! every op in the trace's global order: valgrind runs one thread at a time anyway, and one
//! worker makes the counts reproducible to the instruction. So contention, scaling and the
//! cross-thread (remote) free paths are not in the counts — the wall-clock tier's business;
//! cache misses are those of callgrind's simulated caches (`--cache-sim=yes`), not of the
//! real machine.
//!
//! Estimated cycles: `Ir + 10 * (I1mr + D1mr + D1mw) + 100 * (ILmr + DLmr + DLmw)`, the
//! weighting callgrind's own tools use for a rough cycle estimate.

mod callgrind;
mod child;

pub use callgrind::{parse_callgrind_dump, CallgrindSource, DumpCosts};
pub use child::{run_child, ChildManifest, CountedEntry, CountsRequest};

use crate::backends::{AddressSpace, Backend};
use reports::{CountsInfo, OpCounts, ResultsFile};
use std::sync::atomic::{AtomicU64, Ordering};

/// The formula of [`reports::OpCost::estimated_cycles`], as written into results.json.
pub const ESTIMATED_CYCLES_FORMULA: &str =
    "Ir + 10*(I1mr + D1mr + D1mw) + 100*(ILmr + DLmr + DLmw)";

/// Somewhere counts come from: valgrind in production, a fake in tests.
pub trait CountsSource {
    /// What results.json records about the source.
    fn info(&self) -> CountsInfo;

    /// Counts for every (trace, backend) the request names. Backends that cannot be counted
    /// come back with `counts: None` and a reason.
    fn collect(&self, request: &CountsRequest) -> anyhow::Result<Vec<CountedEntry>>;
}

/// Fills `results` (made by a replay of the same traces and backends) with the counts of
/// `entries`, and records the source.
pub fn attach_counts(results: &mut ResultsFile, info: CountsInfo, entries: &[CountedEntry]) {
    for entry in entries {
        let Some(trace) = results.traces.get_mut(entry.trace_index) else {
            continue;
        };
        if let Some(result) = trace
            .results
            .iter_mut()
            .find(|r| r.backend == entry.backend)
        {
            result.counts = entry.counts;
        }
    }
    results.counts = Some(info);
}

/// Calls per op kind made by a counting pass.
#[derive(Debug, Default)]
pub struct OpCalls {
    pub alloc: AtomicU64,
    pub free: AtomicU64,
    pub realloc: AtomicU64,
}

impl OpCalls {
    pub fn snapshot(&self) -> [u64; 3] {
        [
            self.alloc.load(Ordering::Relaxed),
            self.free.load(Ordering::Relaxed),
            self.realloc.load(Ordering::Relaxed),
        ]
    }
}

/// A backend seen through the counting shims. The call counters are bumped outside the shims,
/// so they are not part of the counted cost.
pub struct CountedBackend<'a, B> {
    pub inner: &'a B,
    pub calls: OpCalls,
}

impl<'a, B: Backend> CountedBackend<'a, B> {
    pub fn new(inner: &'a B) -> Self {
        CountedBackend {
            inner,
            calls: OpCalls::default(),
        }
    }
}

/// Callgrind collects inside this function only (with its callees): one backend alloc.
#[inline(never)]
pub fn counted_op_alloc<B: Backend>(
    backend: &B,
    size: usize,
    align: usize,
    stream: u16,
) -> *mut u8 {
    backend.alloc_ptr(size, align, stream)
}

/// Callgrind collects inside this function only (with its callees): one backend free.
///
/// # Safety
/// As for [`Backend::free`].
#[inline(never)]
pub unsafe fn counted_op_free<B: Backend>(backend: &B, addr: usize, size: usize, stream: u16) {
    // SAFETY: the caller's contract, forwarded.
    unsafe { backend.free(addr, size, stream) }
}

/// Callgrind collects inside this function only (with its callees): one backend realloc.
///
/// # Safety
/// As for [`Backend::realloc`].
#[inline(never)]
pub unsafe fn counted_op_realloc<B: Backend>(
    backend: &B,
    addr: usize,
    old_size: usize,
    new_size: usize,
    align: usize,
    stream: u16,
) -> *mut u8 {
    // SAFETY: the caller's contract, forwarded.
    unsafe { backend.realloc_ptr(addr, old_size, new_size, align, stream) }
}

/// Callgrind dumps and zeroes its counters when this function returns (`--dump-after`): the
/// end of one (trace, backend). `entry` keeps the call from being folded away.
#[inline(never)]
pub fn counts_checkpoint(entry: usize) {
    std::hint::black_box(entry);
}

impl<B: Backend> Backend for CountedBackend<'_, B> {
    #[inline(always)]
    fn alloc(&self, size: usize, align: usize, stream: u16) -> usize {
        self.calls.alloc.fetch_add(1, Ordering::Relaxed);
        counted_op_alloc(self.inner, size, align, stream) as usize
    }

    #[inline(always)]
    unsafe fn free(&self, addr: usize, size: usize, stream: u16) {
        self.calls.free.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract, forwarded to the inner backend.
        unsafe { counted_op_free(self.inner, addr, size, stream) }
    }

    #[inline(always)]
    unsafe fn realloc(
        &self,
        addr: usize,
        old_size: usize,
        new_size: usize,
        align: usize,
        stream: u16,
    ) -> usize {
        self.calls.realloc.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract, forwarded to the inner backend.
        unsafe { counted_op_realloc(self.inner, addr, old_size, new_size, align, stream) as usize }
    }

    fn address_space(&self) -> AddressSpace {
        self.inner.address_space()
    }

    fn reserved_bytes(&self) -> Option<u64> {
        self.inner.reserved_bytes()
    }

    fn peak_reserved_bytes(&self) -> Option<u64> {
        self.inner.peak_reserved_bytes()
    }

    fn finish(&self) {
        self.inner.finish()
    }
}

/// Per-op-kind counts from a dump's shim costs and the calls the pass made.
pub fn op_counts(costs: &DumpCosts, calls: [u64; 3]) -> OpCounts {
    let cost = |i: usize| {
        let c = &costs.per_kind[i];
        reports::OpCost {
            calls: calls[i],
            instructions: c.instructions,
            l1_misses: c.l1_misses,
            ll_misses: c.ll_misses,
            estimated_cycles: c.instructions + 10 * c.l1_misses + 100 * c.ll_misses,
            ..Default::default()
        }
        .with_per_op()
    };
    OpCounts {
        alloc: cost(0),
        free: cost(1),
        realloc: cost(2),
    }
}
