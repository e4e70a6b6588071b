//! Synthetic workloads, deterministic for a seed (same seed, same build: same events).
//!
//! Every generated trace is valid as it stands: no sanitation repairs, no leaks (blocks
//! still live when the event budget is reached are freed at the end), `time_ns` on every
//! event, already in global order.
//!
//! | kind                | shape                                                               |
//! |---------------------|---------------------------------------------------------------------|
//! | `fixed-churn`       | one size, each thread keeps a window of live blocks and churns it   |
//! | `larson`            | server-like: per-thread object arrays passed between threads         |
//! | `producer-consumer` | producers allocate, consumers free in FIFO order (all cross-thread) |
//! | `size-mix`          | log-normal sizes, long- and short-lived objects, reallocs           |
//! | `gpu-training`      | weights once, per-iteration activation waves freed in reverse, streams |

mod emitter;
mod fixed_churn;
mod gpu_training;
mod larson;
mod producer_consumer;
mod size_mix;

use std::fmt;
use std::str::FromStr;

use rand::rngs::SmallRng;
use rand::SeedableRng;

use crate::event::Event;
pub use emitter::Emitter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GenKind {
    FixedChurn,
    Larson,
    ProducerConsumer,
    SizeMix,
    GpuTraining,
}

impl GenKind {
    pub const ALL: [GenKind; 5] = [
        GenKind::FixedChurn,
        GenKind::Larson,
        GenKind::ProducerConsumer,
        GenKind::SizeMix,
        GenKind::GpuTraining,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            GenKind::FixedChurn => "fixed-churn",
            GenKind::Larson => "larson",
            GenKind::ProducerConsumer => "producer-consumer",
            GenKind::SizeMix => "size-mix",
            GenKind::GpuTraining => "gpu-training",
        }
    }
}

impl fmt::Display for GenKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for GenKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        GenKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = GenKind::ALL.iter().map(|k| k.as_str()).collect();
                format!(
                    "unknown workload '{s}' (expected one of {})",
                    names.join(", ")
                )
            })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenParams {
    pub seed: u64,
    /// Event budget: generation stops once the events emitted plus the frees owed to live
    /// blocks reach it, so a trace has this many events or a few more.
    pub events: u64,
    /// Trace threads (at least 1).
    pub threads: u32,
}

impl Default for GenParams {
    fn default() -> Self {
        GenParams {
            seed: 1,
            events: 100_000,
            threads: 4,
        }
    }
}

/// Generate a workload, handing each event to `sink` in global order.
pub fn generate(kind: GenKind, params: &GenParams, sink: &mut dyn FnMut(Event)) {
    let threads = params.threads.max(1);
    // Mixing the kind into the seed keeps workloads of one seed unrelated to each other.
    let mut rng = SmallRng::seed_from_u64(params.seed ^ (kind as u64).wrapping_mul(0x9e37_79b9));
    let mut out = Emitter::new(params.events, sink);
    match kind {
        GenKind::FixedChurn => fixed_churn::run(&mut out, &mut rng, threads),
        GenKind::Larson => larson::run(&mut out, &mut rng, threads),
        GenKind::ProducerConsumer => producer_consumer::run(&mut out, &mut rng, threads),
        GenKind::SizeMix => size_mix::run(&mut out, &mut rng, threads),
        GenKind::GpuTraining => gpu_training::run(&mut out, &mut rng, threads),
    }
}

/// Generate a workload into a vector.
pub fn generate_vec(kind: GenKind, params: &GenParams) -> Vec<Event> {
    let mut events = Vec::with_capacity(params.events as usize + 1);
    generate(kind, params, &mut |e| events.push(e));
    events
}
