//! The replay clock: the one clock every latency sample is read with.
//!
//! On x86_64 with an invariant TSC (`constant_tsc` and `nonstop_tsc` in `/proc/cpuinfo`)
//! it reads `rdtsc` fenced by `lfence` on both sides, so the read neither starts before the
//! instructions ahead of it retire nor lets later ones start before it; elsewhere it falls
//! back to `Instant`. The counter is calibrated against `Instant` once per process.
//!
//! The cost of one read (`overhead_ns`, the floor) is measured at calibration as the mean
//! gap between two back-to-back reads, trimmed of its lowest and highest tenth, over many
//! pairs; [`Clock::sample_ns`] subtracts it (saturating) from every sample, so a latency is
//! the call's own cost as nearly as the clock can tell. A mean, not a median: on virtual
//! machines the counter steps coarsely (about 10 ns here), the gaps take two or three values,
//! and a median flips between them from one process to the next (a 10 ns shift of every
//! latency between two runs of the same code); the trimmed mean is stable to a fraction of
//! a step. The smallest non-zero gap is the clock's resolution (`resolution_ns`), which
//! `replay compare` and `replay gate` use to widen latency margins.

use reports::ClockInfo;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Which counter the clock reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockSource {
    Rdtsc,
    Monotonic,
}

impl ClockSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ClockSource::Rdtsc => "rdtsc",
            ClockSource::Monotonic => "monotonic",
        }
    }
}

/// A calibrated clock. Readings are ticks of the source; convert with [`Clock::sample_ns`].
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    source: ClockSource,
    /// Origin of `Monotonic` readings (ticks are nanoseconds since it).
    origin: Instant,
    ticks_per_ns: f64,
    ns_per_tick: f64,
    /// Cost of one read in nanoseconds (the floor subtracted from samples).
    overhead_ns: f64,
    overhead_ns_int: u64,
    /// Smallest non-zero step between two reads, in nanoseconds.
    resolution_ns: f64,
}

static GLOBAL: OnceLock<Clock> = OnceLock::new();

impl Clock {
    /// The process clock, calibrated on first use (about 20 ms).
    pub fn global() -> &'static Clock {
        GLOBAL.get_or_init(Clock::calibrate)
    }

    /// Calibrate a clock now: pick the source, measure its rate against `Instant` and
    /// the cost of one read.
    pub fn calibrate() -> Clock {
        let origin = Instant::now();
        let source = if tsc_is_invariant() {
            ClockSource::Rdtsc
        } else {
            ClockSource::Monotonic
        };
        let mut clock = Clock {
            source,
            origin,
            ticks_per_ns: 1.0,
            ns_per_tick: 1.0,
            overhead_ns: 0.0,
            overhead_ns_int: 0,
            resolution_ns: 1.0,
        };
        if source == ClockSource::Rdtsc {
            clock.ticks_per_ns = clock.measure_rate(Duration::from_millis(20));
            if !(clock.ticks_per_ns.is_finite() && clock.ticks_per_ns > 0.01) {
                clock.source = ClockSource::Monotonic;
                clock.ticks_per_ns = 1.0;
            }
            clock.ns_per_tick = 1.0 / clock.ticks_per_ns;
        }
        let (overhead_ns, resolution_ns) = clock.measure_overhead_ns();
        clock.overhead_ns = overhead_ns;
        clock.overhead_ns_int = overhead_ns.round() as u64;
        clock.resolution_ns = resolution_ns;
        clock
    }

    /// Ticks per nanosecond over `span` of wall time, read around a busy wait.
    fn measure_rate(&self, span: Duration) -> f64 {
        let wall_start = Instant::now();
        let ticks_start = self.now();
        while wall_start.elapsed() < span {
            std::hint::spin_loop();
        }
        let ticks_end = self.now();
        let wall_ns = wall_start.elapsed().as_nanos() as f64;
        ticks_end.wrapping_sub(ticks_start) as f64 / wall_ns
    }

    /// (Trimmed mean, smallest non-zero) nanoseconds between two back-to-back reads, over
    /// 16 batches of 4096 pairs.
    fn measure_overhead_ns(&self) -> (f64, f64) {
        const PAIRS: usize = 16 * 4096;
        let mut gaps: Vec<u64> = Vec::with_capacity(PAIRS);
        for _ in 0..PAIRS {
            let a = self.now();
            let b = self.now();
            gaps.push(b.wrapping_sub(a));
        }
        gaps.sort_unstable();
        let kept = &gaps[PAIRS / 10..PAIRS - PAIRS / 10];
        let mean_ticks = kept.iter().map(|&g| g as f64).sum::<f64>() / kept.len() as f64;
        let step_ticks = gaps.iter().copied().find(|&g| g > 0).unwrap_or(1);
        (
            mean_ticks * self.ns_per_tick,
            (step_ticks as f64 * self.ns_per_tick).max(1.0),
        )
    }

    /// Read the counter (ticks).
    #[inline(always)]
    pub fn now(&self) -> u64 {
        match self.source {
            ClockSource::Rdtsc => read_tsc(),
            ClockSource::Monotonic => self.origin.elapsed().as_nanos() as u64,
        }
    }

    /// Nanoseconds between two readings with the floor subtracted (saturating at 0).
    #[inline(always)]
    pub fn sample_ns(&self, start: u64, end: u64) -> u64 {
        let ns = (end.wrapping_sub(start) as f64 * self.ns_per_tick) as u64;
        ns.saturating_sub(self.overhead_ns_int)
    }

    /// Nanoseconds between two readings, floor included (for spans, not samples).
    pub fn span_ns(&self, start: u64, end: u64) -> u64 {
        (end.wrapping_sub(start) as f64 * self.ns_per_tick) as u64
    }

    pub fn source(&self) -> ClockSource {
        self.source
    }

    /// Cost of one read in nanoseconds (subtracted from every sample).
    pub fn overhead_ns(&self) -> f64 {
        self.overhead_ns
    }

    pub fn ticks_per_ns(&self) -> f64 {
        self.ticks_per_ns
    }

    /// The clock as results.json describes it.
    pub fn info(&self) -> ClockInfo {
        ClockInfo {
            source: self.source.as_str().to_owned(),
            overhead_ns: self.overhead_ns,
            ticks_per_ns: self.ticks_per_ns,
            resolution_ns: Some(self.resolution_ns),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn read_tsc() -> u64 {
    use std::arch::x86_64::{_mm_lfence, _rdtsc};
    // SAFETY: `lfence` and `rdtsc` are available on every x86_64 CPU (SSE2 is part of the
    // base ISA) and have no memory-safety preconditions.
    unsafe {
        _mm_lfence();
        let ticks = _rdtsc();
        _mm_lfence();
        ticks
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn read_tsc() -> u64 {
    unreachable!("the TSC source is only chosen on x86_64")
}

/// Whether the TSC ticks at a constant rate across frequency changes and idle states.
fn tsc_is_invariant() -> bool {
    if !cfg!(target_arch = "x86_64") {
        return false;
    }
    let Ok(cpuinfo) = std::fs::read_to_string("/proc/cpuinfo") else {
        return false;
    };
    cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .is_some_and(|flags| {
            let has = |w: &str| flags.split_whitespace().any(|f| f == w);
            has("constant_tsc") && has("nonstop_tsc")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibrated_clock_agrees_with_instant() {
        let clock = Clock::calibrate();
        let wall = Instant::now();
        let start = clock.now();
        std::thread::sleep(Duration::from_millis(30));
        let end = clock.now();
        let wall_ns = wall.elapsed().as_nanos() as f64;
        let clock_ns = clock.span_ns(start, end) as f64;
        let error = (clock_ns - wall_ns).abs() / wall_ns;
        assert!(error < 0.05, "clock {clock_ns} ns vs Instant {wall_ns} ns");
    }

    #[test]
    fn floor_is_subtracted_and_saturates() {
        let clock = Clock::calibrate();
        assert!(clock.overhead_ns() >= 0.0 && clock.overhead_ns() < 10_000.0);
        let t = clock.now();
        assert_eq!(clock.sample_ns(t, t), 0);
    }
}
