//! Measuring one candidate: the [`Evaluator`] trait and the real one, a replay through the
//! engine.

use crate::backends::{BackendSelection, RegisteredBackend};
use crate::engine::{Pace, Touch};
use crate::runner::{replay_inputs, ReplayOptions, TraceInput};
use anyhow::bail;
use pools::PoolConfig;
use workloads::CompiledTrace;

/// What one replay of one candidate measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measured {
    pub ops_per_sec: f64,
    pub alloc_p99_ns: u64,
    pub peak_reserved_bytes: u64,
    pub alloc_failures: u64,
    /// Events of the prefix replayed.
    pub events: u64,
    pub runs: u32,
}

/// A backend replayed beside the candidates (on the prefix they are ranked on, with the
/// same runs), shown unranked so that their figures have a scale.
#[derive(Debug, Clone)]
pub struct Reference {
    pub backend: &'static str,
    /// What it measured, or why it did not run (`skipped: …`, `failed: …`).
    pub measured: Result<Measured, String>,
}

/// Replays `trace` against one configuration.
pub trait Evaluator {
    fn evaluate(
        &mut self,
        config: &PoolConfig,
        trace: &CompiledTrace,
        runs: u32,
    ) -> anyhow::Result<Measured>;
}

/// The real evaluator: the `pool` backend through the replay engine.
pub struct ReplayEvaluator {
    pub path: String,
    pub sanitation: reports::Sanitation,
    pub threads: Option<usize>,
    /// `pool` (CPU), `gpu-pool` (real device) or `sim-gpu-pool` (simulated device).
    pub backend: &'static dyn RegisteredBackend,
    /// Size of the simulated device for `sim-gpu-pool`.
    pub simulate_gpu_bytes: Option<u64>,
}

impl ReplayEvaluator {
    /// One replay of `backend` (pool backends with `config`): what it measured, or the
    /// status and reason of a backend that did not run.
    fn replay(
        &self,
        backend: &'static dyn RegisteredBackend,
        config: &PoolConfig,
        trace: &CompiledTrace,
        runs: u32,
    ) -> anyhow::Result<Result<Measured, (reports::Status, String)>> {
        let opts = ReplayOptions {
            backends: BackendSelection::of(vec![backend]),
            simulate_gpu_bytes: self.simulate_gpu_bytes,
            config: config.clone(),
            config_source: "recommend candidate".into(),
            threads: self.threads,
            runs: runs as usize,
            warmup: 0,
            touch: Touch::First,
            pace: Pace::Max,
            quiet: true,
            ..ReplayOptions::default()
        };
        let input = TraceInput {
            path: &self.path,
            compiled: trace,
            sanitation: &self.sanitation,
        };
        let artifacts = replay_inputs(&[input], &opts)?;
        let r = &artifacts.results.traces[0].results[0];
        if r.status != reports::Status::Ok {
            let reason = r.reason.as_deref().unwrap_or("no reason given").to_owned();
            return Ok(Err((r.status, reason)));
        }
        Ok(Ok(Measured {
            ops_per_sec: r.ops_per_sec,
            alloc_p99_ns: r.latency_ns.alloc.p99,
            peak_reserved_bytes: r.peak_reserved_bytes,
            alloc_failures: r.alloc_failures,
            events: trace.event_count,
            runs,
        }))
    }

    /// `backend` replayed on `trace` as a reference row.
    pub fn reference(
        &self,
        backend: &'static dyn RegisteredBackend,
        trace: &CompiledTrace,
        runs: u32,
    ) -> Reference {
        let measured = match self.replay(backend, &PoolConfig::default_cpu(), trace, runs) {
            Ok(Ok(m)) => Ok(m),
            Ok(Err((reports::Status::Skipped, reason))) => Err(format!("skipped: {reason}")),
            Ok(Err((_, reason))) => Err(format!("failed: {reason}")),
            Err(e) => Err(format!("failed: {e:#}")),
        };
        Reference {
            backend: backend.name(),
            measured,
        }
    }
}

impl Evaluator for ReplayEvaluator {
    fn evaluate(
        &mut self,
        config: &PoolConfig,
        trace: &CompiledTrace,
        runs: u32,
    ) -> anyhow::Result<Measured> {
        match self.replay(self.backend, config, trace, runs)? {
            Ok(m) => Ok(m),
            Err((_, reason)) => bail!(
                "configuration [{}] could not be replayed: {reason}",
                config.summary()
            ),
        }
    }
}
