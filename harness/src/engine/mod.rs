//! The replay engine: a compiled trace, laid out per worker ([`ReplayPlan`]), replayed
//! against one backend by rayon workers with real concurrency ([`pass`]).
//!
//! Generic over `B: Backend` all the way down to the op loop, so each backend gets its own
//! monomorphised loop with direct calls. A run ([`replay_compiled`]) is a throughput sample
//! (one or more untimed passes, no clock read per op) and a timed pass (every call timed,
//! memory sampled), each pass on a fresh backend. [`capacity`] replays a trace
//! sequentially at different memory limits to find the smallest one it fits in.

pub mod capacity;
pub mod latency;
pub mod pass;
pub mod plan;

pub use latency::{size_bucket_log2, summarize, LatencyHistograms};
pub use pass::{run_pass, PassKind, PassOutcome, PassWorkspace};
pub use plan::{ReplayPlan, MEMORY_SAMPLES};

use crate::backends::Backend;
use reports::MemorySample;
use std::fmt;
use std::str::FromStr;
use thiserror::Error;

/// What the engine writes into blocks it gets (host backends only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Touch {
    /// Never write: measures the allocator alone.
    None,
    /// Write the first byte of each block (the default: what nearly every program does).
    #[default]
    First,
    /// Write every byte (memset), as a program filling its buffers would.
    All,
}

impl Touch {
    pub const ALL: [Touch; 3] = [Touch::None, Touch::First, Touch::All];

    pub fn as_str(self) -> &'static str {
        match self {
            Touch::None => "none",
            Touch::First => "first",
            Touch::All => "all",
        }
    }
}

/// Replay speed relative to the trace's recorded times.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Pace {
    /// As fast as possible (times ignored).
    #[default]
    Max,
    /// Recorded gaps divided by this factor (`1x` = real time, `2x` = twice as fast).
    Scaled(f64),
}

impl FromStr for Pace {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim().to_ascii_lowercase();
        if t == "max" {
            return Ok(Pace::Max);
        }
        let factor = t.strip_suffix('x').unwrap_or(&t);
        match factor.parse::<f64>() {
            Ok(k) if (MIN_PACE_FACTOR..=MAX_PACE_FACTOR).contains(&k) => Ok(Pace::Scaled(k)),
            Ok(k) if k.is_finite() && k > 0.0 => Err(format!(
                "--pace {s}: the factor must be between {MIN_PACE_FACTOR}x and {MAX_PACE_FACTOR}x \
                 (a 1 ms gap would last {} at this pace; use max for no pacing)",
                human_duration(1e6 / k)
            )),
            _ => Err(format!(
                "'{s}' is not a pace: use max, 1x (recorded speed) or <k>x with k > 0"
            )),
        }
    }
}

/// Slowest pace: recorded gaps stretched a thousandfold.
pub const MIN_PACE_FACTOR: f64 = 1e-3;
/// Fastest pace other than `max`.
pub const MAX_PACE_FACTOR: f64 = 1e6;
/// Longest paced replay of one trace: a longer one is refused before it starts.
pub const MAX_PACED_NS: u64 = 3_600_000_000_000;

/// `3.2 s`, `41 min`, `31.7 years`: a duration for a message.
pub fn human_duration(ns: f64) -> String {
    const MIN: f64 = 60e9;
    const YEAR: f64 = 365.25 * 24.0 * 3600e9;
    if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e9 {
        format!("{:.1} ms", ns / 1e6)
    } else if ns < MIN {
        format!("{:.1} s", ns / 1e9)
    } else if ns < 2.0 * 24.0 * 60.0 * MIN {
        format!("{:.0} min", ns / MIN)
    } else {
        format!("{:.1} years", ns / YEAR)
    }
}

impl Pace {
    /// Refuse a paced replay of a trace spanning `span_ns` that would take longer than
    /// `MAX_PACED_NS` (a trace with a 10^18 ns gap would otherwise sleep for decades).
    pub fn check_span(self, span_ns: u64) -> Result<(), String> {
        let Pace::Scaled(k) = self else {
            return Ok(());
        };
        let paced_ns = span_ns as f64 / k;
        if paced_ns > MAX_PACED_NS as f64 {
            return Err(format!(
                "--pace {self}: the trace spans {} of recorded time, so the replay would take \
                 {} (the limit is {}); use a faster pace (at least {:.3}x) or --pace max",
                human_duration(span_ns as f64),
                human_duration(paced_ns),
                human_duration(MAX_PACED_NS as f64),
                span_ns as f64 / MAX_PACED_NS as f64
            ));
        }
        Ok(())
    }
}

impl fmt::Display for Pace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pace::Max => f.write_str("max"),
            Pace::Scaled(k) => write!(f, "{k}x"),
        }
    }
}

/// Options of one run's passes.
#[derive(Debug, Clone, Copy, Default)]
pub struct PassOptions {
    pub touch: Touch,
    pub pace: Pace,
    /// Shortest throughput sample: passes over the trace (each on a fresh backend) repeat
    /// until their walls add up to this, so a short trace's sample outlasts scheduler noise.
    /// 0 = one pass.
    pub min_sample_ns: u64,
}

/// Most passes one throughput sample repeats (a trace of a few events stays bounded).
pub const MAX_SAMPLE_PASSES: u32 = 100_000;

#[derive(Debug, Error)]
pub enum EngineError {
    #[error("invalid compiled trace: {0}")]
    InvalidTrace(String),
    #[error("{0}")]
    InvalidOptions(String),
    /// The backend could not be created (the run is reported `failed`).
    #[error("cannot create backend: {0}")]
    Create(String),
    /// The backend panicked on some worker.
    #[error("backend {0}")]
    Panicked(String),
}

/// What one run (throughput sample + timed pass) measured.
#[derive(Debug)]
pub struct RunMeasurement {
    /// Wall time of the throughput sample: the sum of its passes' walls.
    pub wall_ns: u64,
    pub events: u64,
    /// `events * throughput_passes / wall` of the throughput sample.
    pub ops_per_sec: f64,
    /// Passes over the trace in the throughput sample.
    pub throughput_passes: u32,
    /// The higher of the two passes' counts (they replay the same trace).
    pub alloc_failures: u64,
    /// Timed pass, clock floor subtracted.
    pub latency: LatencyHistograms,
    /// Highest of: the timed pass's samples, its final reading, the backend's own peak.
    pub peak_reserved_bytes: u64,
    /// `1 - live/reserved` at the highest sampled reserved bytes (None when unknown).
    pub fragmentation: Option<f64>,
    pub memory_series: Vec<MemorySample>,
    /// Whether the backend reported reserved bytes at all.
    pub reserved_known: bool,
    /// Blocks the trace left live (freed by the engine afterwards).
    pub leaked_blocks: u64,
}

/// One run of `plan` against backends made by `new_backend` (called once per pass, so each
/// pass starts from a fresh allocator).
pub fn replay_compiled<B, F>(
    mut new_backend: F,
    plan: &ReplayPlan,
    opts: &PassOptions,
) -> Result<RunMeasurement, EngineError>
where
    B: Backend,
    F: FnMut() -> Result<B, String>,
{
    // Each workspace is made before its backend, so the backend's memory readings do not
    // include the engine's own allocations.
    // The sample's wall time sums its passes' own walls: making each pass's workspace and
    // backend is not part of it. Every sample lasts at least `min_sample_ns` (the sample
    // decides its own length, so a slow first pass cannot leave later samples short).
    let mut passes = 0u32;
    let mut sample_wall_ns = 0u64;
    let mut sample_failures = 0u64;
    while passes == 0 || (sample_wall_ns < opts.min_sample_ns && passes < MAX_SAMPLE_PASSES) {
        let workspace = PassWorkspace::new(plan, PassKind::Throughput);
        let backend = new_backend().map_err(EngineError::Create)?;
        let pass = workspace
            .run(&backend, plan, opts.touch, opts.pace)
            .map_err(EngineError::Panicked)?;
        sample_wall_ns += pass.wall_ns;
        sample_failures = sample_failures.max(pass.alloc_failures);
        passes += 1;
    }
    let (timed, latency) = {
        let workspace = PassWorkspace::new(plan, PassKind::Timed);
        let backend = new_backend().map_err(EngineError::Create)?;
        let mut timed = workspace
            .run(&backend, plan, opts.touch, opts.pace)
            .map_err(EngineError::Panicked)?;
        let latency = timed
            .latency
            .take()
            .unwrap_or_else(|| LatencyHistograms::new(&plan.size_buckets));
        (timed, latency)
    };

    let sampled_peak = timed
        .memory_series
        .iter()
        .max_by_key(|s| (s.reserved_bytes, std::cmp::Reverse(s.seq)))
        .copied();
    let reserved_known =
        timed.final_reserved_bytes.is_some() || timed.backend_peak_reserved_bytes.is_some();
    let peak_reserved_bytes = sampled_peak
        .map_or(0, |s| s.reserved_bytes)
        .max(timed.final_reserved_bytes.unwrap_or(0))
        .max(timed.backend_peak_reserved_bytes.unwrap_or(0));
    let fragmentation = sampled_peak
        .filter(|s| reserved_known && s.reserved_bytes > 0)
        .map(|s| (1.0 - s.live_bytes as f64 / s.reserved_bytes as f64).max(0.0));
    let memory_series = if reserved_known {
        timed.memory_series
    } else {
        Vec::new()
    };
    let ops_per_sec = if sample_wall_ns == 0 {
        0.0
    } else {
        plan.event_count as f64 * f64::from(passes) * 1e9 / sample_wall_ns as f64
    };
    Ok(RunMeasurement {
        wall_ns: sample_wall_ns,
        events: plan.event_count,
        ops_per_sec,
        throughput_passes: passes,
        alloc_failures: sample_failures.max(timed.alloc_failures),
        latency,
        peak_reserved_bytes,
        fragmentation,
        memory_series,
        reserved_known,
        leaked_blocks: timed.leaked_blocks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pace_parses_max_and_factors() {
        assert_eq!("max".parse::<Pace>(), Ok(Pace::Max));
        assert_eq!("1x".parse::<Pace>(), Ok(Pace::Scaled(1.0)));
        assert_eq!("2.5X".parse::<Pace>(), Ok(Pace::Scaled(2.5)));
        assert!("0x".parse::<Pace>().is_err());
        let err = "1e-300x".parse::<Pace>().unwrap_err();
        assert!(err.contains("between 0.001x and 1000000x"), "{err}");
        assert!("1e7x".parse::<Pace>().is_err());
        assert_eq!("0.001x".parse::<Pace>(), Ok(Pace::Scaled(0.001)));
        let err = Pace::Scaled(1.0)
            .check_span(1_000_000_000_000_000_000)
            .unwrap_err();
        assert!(err.contains("31.7 years"), "{err}");
        assert!(Pace::Scaled(1.0).check_span(3_000_000_000_000).is_ok());
        assert!(Pace::Max.check_span(u64::MAX).is_ok());
        assert!("fast".parse::<Pace>().is_err());
        assert_eq!(Pace::Scaled(2.0).to_string(), "2x");
    }
}
