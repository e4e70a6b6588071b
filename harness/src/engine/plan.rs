//! `ReplayPlan`: a compiled trace laid out for a number of workers, built once, outside
//! every timed region, and reused by every pass of every backend.
//!
//! Building it
//! - assigns trace threads to workers (largest first, onto the least loaded worker) and
//!   merges each worker's trace threads into one op vector in global `seq` order;
//! - checks the trace's slot ordinals (op `k` on a slot has ordinal `k`, in global order),
//!   so that a malformed trace is an error here instead of a hang in the replay;
//! - narrows `CROSS_THREAD` to the ops whose slot predecessor runs on *another worker*:
//!   a predecessor on the same worker has a smaller `seq`, so it has already run;
//! - sets [`PUBLISH`] on the ops whose slot successor runs on another worker: only they
//!   need to store the slot's executed-op count (a waiter checks its immediate
//!   predecessor's store; every earlier op on the slot ran before that predecessor);
//! - computes the trace's live requested bytes at ~500 evenly spaced `seq`s, the points
//!   where the timed pass samples the backend's reserved bytes.

use super::EngineError;
use workloads::{CompiledOp, CompiledTrace, OpKind};

/// `CompiledOp::flags` bit set by the plan: the op's slot successor runs on another
/// worker, so the op publishes `done = ordinal + 1` (bits 1..=6 hold the alignment,
/// bit 0 `CROSS_THREAD`).
pub(crate) const PUBLISH: u8 = 0x80;

/// Memory samples per pass, at most.
pub const MEMORY_SAMPLES: u64 = 500;

/// Ops one worker runs, in global order.
#[derive(Debug)]
pub(crate) struct WorkerPlan {
    /// Indices into `CompiledTrace::threads` of the trace threads merged here.
    pub trace_threads: Vec<usize>,
    pub ops: Vec<CompiledOp>,
    /// `time_ns` of each op (parallel to `ops`), when the trace kept them.
    pub times_ns: Option<Vec<u64>>,
    /// Where this worker samples memory: ascending op indices.
    pub samples: Vec<SamplePoint>,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct SamplePoint {
    /// Index into the worker's `ops`: sample after running it.
    pub op_index: u32,
    pub seq: u32,
    /// The trace's live requested bytes after this op.
    pub live_bytes: u64,
}

/// A compiled trace prepared for `workers` rayon workers (and the thread pool itself).
pub struct ReplayPlan {
    pub(crate) workers: Vec<WorkerPlan>,
    pub(crate) slot_count: u32,
    pub(crate) event_count: u64,
    pub(crate) peak_live_bytes: u64,
    /// Log2 size buckets of the trace's alloc/realloc requests, ascending.
    pub(crate) size_buckets: Vec<u32>,
    /// Smallest `time_ns` of the trace (pacing origin), when times were kept.
    pub(crate) first_time_ns: Option<u64>,
    /// Exactly one thread per worker: `broadcast` runs every worker at once, which the
    /// deadlock-freedom argument needs (a worker waiting must not hold back another).
    pub(crate) pool: rayon::ThreadPool,
    cross_worker_ops: u64,
}

impl ReplayPlan {
    /// Lay `trace` out for `workers` workers (at least 1; more than the trace's threads
    /// leaves some idle). Fails on an inconsistent trace or when threads cannot start.
    pub fn new(trace: &CompiledTrace, workers: usize) -> Result<Self, EngineError> {
        if workers == 0 {
            return Err(EngineError::InvalidOptions(
                "workers must be at least 1".into(),
            ));
        }
        let event_count: u64 = trace.threads.iter().map(|t| t.ops.len() as u64).sum();
        if event_count > u32::MAX as u64 {
            return Err(EngineError::InvalidTrace(format!(
                "{event_count} events: at most {} can be replayed",
                u32::MAX
            )));
        }
        let assignment = assign_threads(trace, workers);
        let worker_of_thread = {
            let mut w = vec![0usize; trace.threads.len()];
            for (worker, threads) in assignment.iter().enumerate() {
                for &t in threads {
                    w[t] = worker;
                }
            }
            w
        };
        let walk = GlobalWalk::run(trace, &worker_of_thread, event_count)?;

        let keep_times = !trace.threads.is_empty()
            && trace.threads.iter().all(|t| {
                t.times_ns
                    .as_ref()
                    .is_some_and(|times| times.len() == t.ops.len())
            });
        let mut plans: Vec<WorkerPlan> = assignment
            .into_iter()
            .map(|threads| merge_worker(trace, threads, &walk.cross_worker, keep_times))
            .collect();
        place_samples(&mut plans, &walk.live_at, event_count);

        let first_time_ns = if keep_times {
            plans
                .iter()
                .filter_map(|w| w.times_ns.as_ref().and_then(|t| t.iter().min().copied()))
                .min()
        } else {
            None
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(workers)
            .thread_name(|i| format!("replay-worker-{i}"))
            .build()
            .map_err(|e| EngineError::InvalidOptions(format!("cannot start workers: {e}")))?;
        Ok(ReplayPlan {
            workers: plans,
            slot_count: trace.slot_count,
            event_count,
            peak_live_bytes: trace.peak_live_bytes.max(walk.peak_live_bytes),
            size_buckets: walk.size_buckets,
            first_time_ns,
            pool,
            cross_worker_ops: walk.cross_worker_count,
        })
    }

    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    pub fn event_count(&self) -> u64 {
        self.event_count
    }

    /// Peak live requested bytes of the trace (the ideal footprint).
    pub fn peak_live_bytes(&self) -> u64 {
        self.peak_live_bytes
    }

    /// Ops that wait for a slot predecessor on another worker.
    pub fn cross_worker_ops(&self) -> u64 {
        self.cross_worker_ops
    }

    /// Whether the plan carries recorded times (needed for `--pace` other than `max`).
    pub fn has_times(&self) -> bool {
        self.first_time_ns.is_some()
    }

    /// For each worker, the indices of the trace threads it runs.
    pub fn assignment(&self) -> Vec<Vec<usize>> {
        self.workers
            .iter()
            .map(|w| w.trace_threads.clone())
            .collect()
    }
}

/// Largest trace thread first, onto the worker with the fewest ops (ties: lowest index).
fn assign_threads(trace: &CompiledTrace, workers: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..trace.threads.len()).collect();
    order.sort_by_key(|&t| std::cmp::Reverse(trace.threads[t].ops.len()));
    let mut load = vec![0usize; workers];
    let mut assignment = vec![Vec::new(); workers];
    for t in order {
        let w = (0..workers).min_by_key(|&w| (load[w], w)).unwrap_or(0);
        load[w] += trace.threads[t].ops.len();
        assignment[w].push(t);
    }
    for threads in &mut assignment {
        threads.sort_unstable();
    }
    assignment
}

/// What one pass over the trace in global order finds.
struct GlobalWalk {
    /// Per trace thread, per op: `CROSS_THREAD` (predecessor on another worker) and
    /// `PUBLISH` (successor on another worker) bits.
    cross_worker: Vec<Vec<u8>>,
    cross_worker_count: u64,
    /// Live requested bytes after each `seq`.
    live_at: Vec<u64>,
    peak_live_bytes: u64,
    size_buckets: Vec<u32>,
}

impl GlobalWalk {
    fn run(
        trace: &CompiledTrace,
        worker_of_thread: &[usize],
        event_count: u64,
    ) -> Result<Self, EngineError> {
        const NONE: (u32, u32) = (u32::MAX, u32::MAX);
        let bad = |msg: String| Err(EngineError::InvalidTrace(msg));
        // order[seq] = (trace thread, op index)
        let mut order = vec![NONE; event_count as usize];
        for (t, thread) in trace.threads.iter().enumerate() {
            let mut last_seq: Option<u32> = None;
            for (i, op) in thread.ops.iter().enumerate() {
                if u64::from(op.seq) >= event_count {
                    return bad(format!(
                        "trace thread {} op {i}: seq {} beyond the {event_count} events",
                        thread.trace_thread, op.seq
                    ));
                }
                if op.slot >= trace.slot_count {
                    return bad(format!(
                        "seq {}: slot {} beyond slot_count {}",
                        op.seq, op.slot, trace.slot_count
                    ));
                }
                if last_seq.is_some_and(|s| s >= op.seq) {
                    return bad(format!(
                        "trace thread {}: seq {} after {} (ops must ascend)",
                        thread.trace_thread,
                        op.seq,
                        last_seq.unwrap_or(0)
                    ));
                }
                last_seq = Some(op.seq);
                if order[op.seq as usize] != NONE {
                    return bad(format!("seq {} appears twice", op.seq));
                }
                order[op.seq as usize] = (t as u32, i as u32);
            }
        }

        let slots = trace.slot_count as usize;
        let mut next_ordinal = vec![0u32; slots];
        let mut last_op = vec![(u32::MAX, u32::MAX); slots];
        let mut live_size = vec![0u64; slots];
        let mut cross_worker: Vec<Vec<u8>> = trace
            .threads
            .iter()
            .map(|t| vec![0u8; t.ops.len()])
            .collect();
        let mut cross_worker_count = 0;
        let mut live_at = Vec::with_capacity(event_count as usize);
        let mut live: u64 = 0;
        let mut peak_live_bytes = 0;
        let mut bucket_seen = [false; 64];
        for (seq, &(t, i)) in order.iter().enumerate() {
            let op = &trace.threads[t as usize].ops[i as usize];
            let slot = op.slot as usize;
            if op.ordinal != next_ordinal[slot] {
                return bad(format!(
                    "seq {seq}: slot {slot} op has ordinal {} but {} ops on the slot precede it",
                    op.ordinal, next_ordinal[slot]
                ));
            }
            let (previous, previous_index) = last_op[slot];
            if previous != u32::MAX {
                if previous != t && !op.cross_thread() {
                    return bad(format!(
                        "seq {seq}: slot {slot}'s previous op ran on trace thread {} but \
                         this op (trace thread {}) is not flagged CROSS_THREAD",
                        trace.threads[previous as usize].trace_thread,
                        trace.threads[t as usize].trace_thread
                    ));
                }
                if worker_of_thread[previous as usize] != worker_of_thread[t as usize] {
                    cross_worker[t as usize][i as usize] |= CompiledOp::CROSS_THREAD;
                    cross_worker[previous as usize][previous_index as usize] |= PUBLISH;
                    cross_worker_count += 1;
                }
            }
            next_ordinal[slot] += 1;
            last_op[slot] = (t, i);
            match op.kind {
                OpKind::Alloc => {
                    live = live - live_size[slot] + op.size;
                    live_size[slot] = op.size;
                    bucket_seen[super::latency::size_bucket_log2(op.size) as usize] = true;
                }
                OpKind::Free => {
                    live -= live_size[slot];
                    live_size[slot] = 0;
                }
                OpKind::Realloc => {
                    live = live - live_size[slot] + op.size;
                    live_size[slot] = op.size;
                }
            }
            peak_live_bytes = peak_live_bytes.max(live);
            live_at.push(live);
        }
        Ok(GlobalWalk {
            cross_worker,
            cross_worker_count,
            live_at,
            peak_live_bytes,
            size_buckets: (0..64u32).filter(|&c| bucket_seen[c as usize]).collect(),
        })
    }
}

/// One worker's ops: its trace threads merged by `seq`, `CROSS_THREAD` narrowed to
/// cross-worker predecessors, `PUBLISH` set.
fn merge_worker(
    trace: &CompiledTrace,
    trace_threads: Vec<usize>,
    cross_worker: &[Vec<u8>],
    keep_times: bool,
) -> WorkerPlan {
    let total: usize = trace_threads
        .iter()
        .map(|&t| trace.threads[t].ops.len())
        .sum();
    let mut merged: Vec<(CompiledOp, u64)> = Vec::with_capacity(total);
    for &t in &trace_threads {
        let thread = &trace.threads[t];
        for (i, op) in thread.ops.iter().enumerate() {
            let mut op = *op;
            op.flags = (op.flags & !(CompiledOp::CROSS_THREAD | PUBLISH)) | cross_worker[t][i];
            let time = thread.times_ns.as_ref().map_or(0, |times| times[i]);
            merged.push((op, time));
        }
    }
    merged.sort_unstable_by_key(|(op, _)| op.seq);
    let times_ns = keep_times.then(|| merged.iter().map(|(_, t)| *t).collect());
    WorkerPlan {
        trace_threads,
        ops: merged.into_iter().map(|(op, _)| op).collect(),
        times_ns,
        samples: Vec::new(),
    }
}

/// Spread `MEMORY_SAMPLES` sample points evenly over the global order and hand each to
/// the worker that runs its `seq`.
fn place_samples(plans: &mut [WorkerPlan], live_at: &[u64], event_count: u64) {
    let count = MEMORY_SAMPLES.min(event_count);
    for j in 0..count {
        let seq = ((j + 1) * event_count / count - 1) as u32;
        for plan in plans.iter_mut() {
            if let Ok(op_index) = plan.ops.binary_search_by_key(&seq, |op| op.seq) {
                plan.samples.push(SamplePoint {
                    op_index: op_index as u32,
                    seq,
                    live_bytes: live_at[seq as usize],
                });
                break;
            }
        }
    }
}
