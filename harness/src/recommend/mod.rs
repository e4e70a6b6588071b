//! `replay recommend`: which `PoolConfig` serves a workload best?
//!
//! The search is successive halving over a structured candidate set:
//! 1. [`space`]: every allocator kind the trace can use, each with variations along one
//!    axis at a time (size-class granularity and limit, chunk size, growth factor, sync
//!    mode, alignment, huge pages, memory-return policy), or the GPU pool's space;
//! 2. [`search`]: all candidates replay a prefix of the trace once; the better half (by the
//!    objective) go on to a prefix four times as long; the last round replays the whole
//!    trace with `--runs` runs and keeps at least [`MIN_FINALISTS`] candidates. The budget
//!    (`--budget`) is checked before every replay against an estimate from the replays so
//!    far; rounds shrink (fewer candidates) to fit it;
//! 3. [`evaluate`]: one replay of one candidate, through the replay engine;
//! 4. [`rank`]: the order, the ties and the Pareto front;
//! 5. [`report`]: the ranking table and why the winner won.
//!
//! Ranking: a configuration that fails allocations ranks below every one that does not
//! (it never wins unless all fail, and the output says so). Among the others, candidates
//! whose score is within [`TIE_MARGIN`] of the best are indistinguishable on a noisy
//! machine, and the simplest of them wins (fixed-size < size-classed < variable-size <
//! lock-free, then smaller chunks): simpler configs have fewer ways to surprise in
//! production.
//!
//! The command line (`commands/recommend.rs`) loads the trace, picks the space and the
//! evaluator's backend, and writes the winner.

pub mod evaluate;
pub mod rank;
pub mod report;
pub mod search;
pub mod space;

pub use evaluate::{Evaluator, Measured, Reference, ReplayEvaluator};
pub use rank::{pareto_front, rank, score, Objective, TIE_MARGIN};
pub use report::{explain, render};
pub use search::{search, Candidate, Search, MIN_FINALISTS};
pub use space::{candidates, gpu_candidates, TraceShape};
