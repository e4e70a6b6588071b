//! One pass of a plan against one backend: every worker runs its ops in global order.
//!
//! # Why this cannot deadlock
//! Each worker runs its ops in ascending `seq`; an op waits only for its slot's executed-op
//! count to reach its `ordinal`, i.e. for the ops on its slot with smaller `seq`. Take the
//! globally smallest unexecuted op `x` at any moment. Its worker has executed every op of
//! its own with smaller `seq` (they are smaller than `x`, hence executed), so the worker is
//! at `x`; every op before `x` on `x`'s slot has a smaller `seq`, hence has executed, so
//! the count equals `x.ordinal` and `x` runs. So some op always makes progress, provided
//! every worker is running at once: the plan's thread pool has exactly one thread per
//! worker and the pass is a `broadcast`, and a waiting worker yields its core. A worker
//! that panics sets `abort`, which every wait checks, so the others return instead of
//! waiting for ops that will never run.
//!
//! # Memory ordering
//! A slot's `addr`, `size` and `stream` are written only by the op that holds the slot
//! (the one whose turn it is), then published by the `Release` store of
//! `done = ordinal + 1`, which the plan asks for (`PUBLISH`) exactly where the slot's
//! next op runs on another worker. An op whose predecessor ran on another worker reads `done` with
//! `Acquire` before touching the slot; an op whose predecessor ran on the same worker is
//! ordered after it by program order. So `Relaxed` suffices for the fields themselves.

use super::latency::LatencyHistograms;
use super::plan::{ReplayPlan, WorkerPlan, PUBLISH};
use super::{Pace, Touch};
use crate::backends::{AddressSpace, Backend};
use crate::clock::Clock;
use reports::MemorySample;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use workloads::{CompiledOp, OpKind};

/// Engine state of one slot. Lives in the Rust global allocator, allocated before the
/// pass starts, never in the allocator under test.
#[derive(Debug, Default)]
struct Slot {
    /// Address of the slot's live block; 0 when none (never allocated, freed, or the
    /// allocation failed).
    addr: AtomicUsize,
    /// Requested bytes of the live block.
    size: AtomicU64,
    /// `ordinal + 1` of the last op on the slot that published (`PUBLISH`): when the
    /// slot's next op runs on another worker than its predecessor, it may run once this
    /// equals its ordinal. Only grows (the slot's ops run one after another).
    done: AtomicU32,
    stream: AtomicU16,
}

/// Which of the two passes of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassKind {
    /// No clock read per op: ops/s = events / wall.
    Throughput,
    /// Every call timed with the calibrated clock; memory sampled.
    Timed,
}

/// What one pass measured.
#[derive(Debug)]
pub struct PassOutcome {
    /// From the first worker starting to the last one finishing (after `finish`).
    pub wall_ns: u64,
    /// Allocations (and reallocs) that returned 0.
    pub alloc_failures: u64,
    /// Timed pass only.
    pub latency: Option<LatencyHistograms>,
    /// Timed pass only: (seq, live, reserved) at the plan's sample points, ascending.
    pub memory_series: Vec<MemorySample>,
    /// Reserved bytes when every worker had finished (before leaked blocks are freed).
    pub final_reserved_bytes: Option<u64>,
    /// The backend's own high-water mark, when it keeps one.
    pub backend_peak_reserved_bytes: Option<u64>,
    /// Blocks still live at the end of the trace (freed by the engine, untimed).
    pub leaked_blocks: u64,
}

/// Per-worker results, written by the worker that owns them.
struct WorkerOutput {
    started: Option<Instant>,
    finished: Option<Instant>,
    alloc_failures: u64,
    latency: Option<LatencyHistograms>,
    memory_series: Vec<MemorySample>,
    panic: Option<String>,
}

/// Everything a worker reads, shared by all of them.
struct PassContext<'a, B> {
    backend: &'a B,
    slots: &'a [Slot],
    touch: Touch,
    pace: Pace,
    first_time_ns: u64,
    clock: &'a Clock,
    abort: &'a AtomicBool,
    arrived: &'a AtomicUsize,
    workers: usize,
}

/// A worker stopped because another one panicked.
struct Aborted;

/// Run one pass (see [`PassWorkspace::run`]).
pub fn run_pass<B: Backend>(
    backend: &B,
    plan: &ReplayPlan,
    kind: PassKind,
    touch: Touch,
    pace: Pace,
) -> Result<PassOutcome, String> {
    PassWorkspace::new(plan, kind).run(backend, plan, touch, pace)
}

/// Everything a pass writes (slot table, per-worker histograms and samples), allocated
/// up front: make it before the backend, so that the backend's memory readings (RSS,
/// heap statistics) see none of the engine's own allocations.
pub struct PassWorkspace {
    kind: PassKind,
    slots: Vec<Slot>,
    outputs: Vec<Mutex<WorkerOutput>>,
}

impl PassWorkspace {
    pub fn new(plan: &ReplayPlan, kind: PassKind) -> Self {
        let slots: Vec<Slot> = (0..plan.slot_count).map(|_| Slot::default()).collect();
        let outputs = plan
            .workers
            .iter()
            .map(|w| {
                Mutex::new(WorkerOutput {
                    started: None,
                    finished: None,
                    alloc_failures: 0,
                    latency: (kind == PassKind::Timed)
                        .then(|| LatencyHistograms::new(&plan.size_buckets)),
                    memory_series: Vec::with_capacity(w.samples.len()),
                    panic: None,
                })
            })
            .collect();
        PassWorkspace {
            kind,
            slots,
            outputs,
        }
    }

    /// Run the pass. Blocks still live at the end are freed afterwards (untimed) so that
    /// the next pass starts from a clean process. A panic in the backend, on any worker,
    /// is returned as `Err(message)` after every worker has stopped.
    ///
    /// `plan` must be the plan the workspace was made for, and only one pass may run on a
    /// plan at a time: the workers of a pass spin at a start barrier on the plan's thread
    /// pool, so two passes broadcast onto the same pool at once could each hold a worker
    /// the other waits for. (Every caller in this crate runs passes one after another.)
    pub fn run<B: Backend>(
        self,
        backend: &B,
        plan: &ReplayPlan,
        touch: Touch,
        pace: Pace,
    ) -> Result<PassOutcome, String> {
        assert_eq!(
            self.slots.len(),
            plan.slot_count as usize,
            "a workspace runs the plan it was made for"
        );
        assert_eq!(self.outputs.len(), plan.workers.len());
        let PassWorkspace {
            kind,
            slots,
            outputs,
        } = self;
        let clock = Clock::global();
        let touch = if backend.address_space() == AddressSpace::Device {
            Touch::None
        } else {
            touch
        };
        let pace = if plan.has_times() { pace } else { Pace::Max };
        let abort = AtomicBool::new(false);
        let arrived = AtomicUsize::new(0);
        let ctx = PassContext {
            backend,
            slots: &slots,
            touch,
            pace,
            first_time_ns: plan.first_time_ns.unwrap_or(0),
            clock,
            abort: &abort,
            arrived: &arrived,
            workers: plan.workers.len(),
        };

        plan.pool.broadcast(|b| {
            let index = b.index();
            let worker = &plan.workers[index];
            let mut out = outputs[index].lock().unwrap_or_else(|e| e.into_inner());
            let result = catch_unwind(AssertUnwindSafe(|| match kind {
                PassKind::Throughput => run_worker::<B, false>(&ctx, worker, &mut out),
                PassKind::Timed => run_worker::<B, true>(&ctx, worker, &mut out),
            }));
            if let Err(payload) = result {
                out.panic = Some(panic_message(payload.as_ref()));
                abort.store(true, Ordering::Relaxed);
            }
        });

        let outputs: Vec<WorkerOutput> = outputs
            .into_iter()
            .map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
            .collect();
        if let Some(message) = outputs.iter().find_map(|o| o.panic.clone()) {
            // Give back what the aborted pass still holds, so that the process-wide memory
            // readings of the backends measured after this one are not inflated by it.
            let _ = free_leftovers(backend, &slots);
            return Err(message);
        }
        let started = outputs.iter().filter_map(|o| o.started).min();
        let finished = outputs.iter().filter_map(|o| o.finished).max();
        let wall_ns = match (started, finished) {
            (Some(s), Some(f)) => f.saturating_duration_since(s).as_nanos() as u64,
            _ => 0,
        };
        let final_reserved_bytes = backend.reserved_bytes();
        let backend_peak_reserved_bytes = backend.peak_reserved_bytes();

        let mut latency: Option<LatencyHistograms> = None;
        let mut memory_series = Vec::new();
        let mut alloc_failures = 0;
        for out in outputs {
            alloc_failures += out.alloc_failures;
            memory_series.extend(out.memory_series);
            if let Some(h) = out.latency {
                match &mut latency {
                    None => latency = Some(h),
                    Some(total) => total.add(&h),
                }
            }
        }
        memory_series.sort_by_key(|s| s.seq);

        let leaked_blocks = free_leftovers(backend, &slots)?;
        Ok(PassOutcome {
            wall_ns,
            alloc_failures,
            latency,
            memory_series,
            final_reserved_bytes,
            backend_peak_reserved_bytes,
            leaked_blocks,
        })
    }
}

/// Free the blocks the trace left live, so the process does not carry them into the
/// next pass.
fn free_leftovers<B: Backend>(backend: &B, slots: &[Slot]) -> Result<u64, String> {
    catch_unwind(AssertUnwindSafe(|| {
        let mut leaked = 0;
        for slot in slots {
            let addr = slot.addr.load(Ordering::Relaxed);
            if addr != 0 {
                leaked += 1;
                // SAFETY: a slot's non-zero address is a live block of this backend: set by
                // the alloc/realloc that returned it, zeroed by the op that freed it.
                unsafe {
                    backend.free(
                        addr,
                        slot.size.load(Ordering::Relaxed) as usize,
                        slot.stream.load(Ordering::Relaxed),
                    )
                };
            }
        }
        leaked
    }))
    .map_err(|payload| panic_message(payload.as_ref()))
}

pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        format!("panicked: {s}")
    } else if let Some(s) = payload.downcast_ref::<String>() {
        format!("panicked: {s}")
    } else {
        "panicked".to_owned()
    }
}

/// Wait until every worker has arrived, so the wall clock starts with all of them.
fn start_barrier<B>(ctx: &PassContext<'_, B>) {
    ctx.arrived.fetch_add(1, Ordering::AcqRel);
    let mut spins = 0u32;
    while ctx.arrived.load(Ordering::Acquire) < ctx.workers {
        backoff(&mut spins);
    }
}

/// Spin briefly with exponential backoff, then yield the core (the machine may have
/// fewer free cores than workers).
#[inline]
fn backoff(spins: &mut u32) {
    const SPIN_ROUNDS: u32 = 10;
    if *spins < SPIN_ROUNDS {
        for _ in 0..(1u32 << *spins) {
            std::hint::spin_loop();
        }
        *spins += 1;
    } else {
        std::thread::yield_now();
    }
}

/// Wait for `slot.done == ordinal`: the slot's predecessor, on another worker, has run
/// and published (every earlier op on the slot ran before it).
#[cold]
#[inline(never)]
fn wait_for_slot(slot: &Slot, ordinal: u32, abort: &AtomicBool) -> Result<(), Aborted> {
    let mut spins = 0u32;
    loop {
        let done = slot.done.load(Ordering::Acquire);
        if done == ordinal {
            return Ok(());
        }
        debug_assert!(done < ordinal, "slot ran past op ordinal {ordinal}: {done}");
        if abort.load(Ordering::Relaxed) {
            return Err(Aborted);
        }
        backoff(&mut spins);
    }
}

/// Sleep or spin until `elapsed >= target` (pacing).
fn pace_until(start: Instant, target: Duration) {
    const SPIN_BELOW: Duration = Duration::from_micros(200);
    loop {
        let elapsed = start.elapsed();
        if elapsed >= target {
            return;
        }
        let left = target - elapsed;
        if left > SPIN_BELOW {
            std::thread::sleep(left - SPIN_BELOW / 2);
        } else {
            std::hint::spin_loop();
        }
    }
}

/// Write the block as a program would: its first byte, or all of it.
#[inline(always)]
fn touch_block(touch: Touch, addr: usize, size_bytes: u64) {
    match touch {
        Touch::None => {}
        Touch::First if size_bytes > 0 => {
            // SAFETY: `touch` is only `First`/`All` for `AddressSpace::Host` backends, which
            // promise (`Backend::address_space`) that a returned block is writable for its
            // requested size until freed; `addr` was just returned (non-zero) for
            // `size_bytes > 0` bytes and no other op touches the slot meanwhile.
            unsafe { std::ptr::write_volatile(addr as *mut u8, 0xA5) }
        }
        Touch::All => {
            // SAFETY: as above, the whole `size_bytes` range is the live block's.
            unsafe { std::ptr::write_bytes(addr as *mut u8, 0xA5, size_bytes as usize) }
        }
        Touch::First => {}
    }
}

fn run_worker<B: Backend, const TIMED: bool>(
    ctx: &PassContext<'_, B>,
    plan: &WorkerPlan,
    out: &mut WorkerOutput,
) {
    start_barrier(ctx);
    let started = Instant::now();
    out.started = Some(started);
    // Only the timed (latency) pass is paced: throughput comes from a pass with no clock
    // read per op, and pacing needs one.
    let paced = TIMED && matches!(ctx.pace, Pace::Scaled(_)) && plan.times_ns.is_some();
    let result = if paced {
        run_ops::<B, TIMED, true>(ctx, plan, out, started)
    } else {
        run_ops::<B, TIMED, false>(ctx, plan, out, started)
    };
    ctx.backend.finish();
    out.finished = Some(Instant::now());
    if result.is_err() {
        // Another worker panicked; its message is the one reported.
        out.finished = None;
    }
}

#[inline(always)]
fn run_ops<B: Backend, const TIMED: bool, const PACED: bool>(
    ctx: &PassContext<'_, B>,
    plan: &WorkerPlan,
    out: &mut WorkerOutput,
    started: Instant,
) -> Result<(), Aborted> {
    let backend = ctx.backend;
    let clock = ctx.clock;
    let mut failures = 0u64;
    let mut next_sample = 0usize;
    let next_sample_at = |n: usize| plan.samples.get(n).map_or(u32::MAX, |s| s.op_index);
    let mut sample_at = next_sample_at(0);
    let mut latency = out.latency.take();
    for (index, op) in plan.ops.iter().enumerate() {
        if PACED {
            if let (Pace::Scaled(speed), Some(times)) = (ctx.pace, plan.times_ns.as_ref()) {
                let trace_ns = times[index].saturating_sub(ctx.first_time_ns);
                pace_until(
                    started,
                    Duration::from_nanos((trace_ns as f64 / speed) as u64),
                );
            }
        }
        debug_assert!((op.slot as usize) < ctx.slots.len());
        // SAFETY: `ReplayPlan::new` checked `op.slot < slot_count` for every op, and
        // `run_pass` made `slots` exactly `slot_count` long.
        let slot = unsafe { ctx.slots.get_unchecked(op.slot as usize) };
        if op.flags & CompiledOp::CROSS_THREAD != 0
            && slot.done.load(Ordering::Acquire) != op.ordinal
        {
            wait_for_slot(slot, op.ordinal, ctx.abort)?;
        }
        match op.kind {
            OpKind::Alloc => {
                let t0 = if TIMED { clock.now() } else { 0 };
                let addr = backend.alloc(op.size as usize, op.align(), op.stream);
                if TIMED {
                    let ns = clock.sample_ns(t0, clock.now());
                    if let Some(h) = latency.as_mut() {
                        h.record_alloc(op.size, ns);
                    }
                }
                if addr == 0 {
                    failures += 1;
                } else {
                    touch_block(ctx.touch, addr, op.size);
                }
                slot.addr.store(addr, Ordering::Relaxed);
                slot.size.store(op.size, Ordering::Relaxed);
                slot.stream.store(op.stream, Ordering::Relaxed);
            }
            OpKind::Free => {
                let addr = slot.addr.load(Ordering::Relaxed);
                // A block whose allocation failed is not freed.
                if addr != 0 {
                    let size = slot.size.load(Ordering::Relaxed) as usize;
                    let t0 = if TIMED { clock.now() } else { 0 };
                    // SAFETY: the slot's address is a live block of this backend (slot
                    // invariant: set by the op that allocated it, cleared when freed), and
                    // this op is the one that ends it.
                    unsafe { backend.free(addr, size, op.stream) };
                    if TIMED {
                        let ns = clock.sample_ns(t0, clock.now());
                        if let Some(h) = latency.as_mut() {
                            h.record_free(ns);
                        }
                    }
                    slot.addr.store(0, Ordering::Relaxed);
                }
            }
            OpKind::Realloc => {
                let old_addr = slot.addr.load(Ordering::Relaxed);
                let old_size = if old_addr == 0 {
                    0
                } else {
                    slot.size.load(Ordering::Relaxed) as usize
                };
                let t0 = if TIMED { clock.now() } else { 0 };
                // SAFETY: `old_addr` is 0 or the slot's live block of `old_size` bytes (slot
                // invariant), and this op is the one that moves it.
                let addr = unsafe {
                    backend.realloc(old_addr, old_size, op.size as usize, op.align(), op.stream)
                };
                if TIMED {
                    let ns = clock.sample_ns(t0, clock.now());
                    if let Some(h) = latency.as_mut() {
                        h.record_realloc(ns);
                    }
                }
                if addr == 0 {
                    // C semantics: the old block (if any) is still live.
                    failures += 1;
                } else {
                    touch_block(ctx.touch, addr, op.size);
                    slot.addr.store(addr, Ordering::Relaxed);
                    slot.size.store(op.size, Ordering::Relaxed);
                    slot.stream.store(op.stream, Ordering::Relaxed);
                }
            }
        }
        if op.flags & PUBLISH != 0 {
            slot.done.store(op.ordinal + 1, Ordering::Release);
        }
        if TIMED && index as u32 == sample_at {
            let point = plan.samples[next_sample];
            out.memory_series.push(MemorySample {
                seq: u64::from(point.seq),
                live_bytes: point.live_bytes,
                reserved_bytes: backend.reserved_bytes().unwrap_or(0),
            });
            next_sample += 1;
            sample_at = next_sample_at(next_sample);
        }
    }
    out.alloc_failures = failures;
    out.latency = latency;
    Ok(())
}
