//! results.json, schema 1. Field names are a contract (see docs/formats.md, "results.json"): scripts read them.
//! New fields are welcome; existing ones keep their names and meaning.

use serde::{Deserialize, Serialize};

pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultsFile {
    pub schema: u32,
    pub tool_version: String,
    pub machine: Machine,
    /// The replay clock: what it is and what one read costs (subtracted from latencies).
    #[serde(default)]
    pub clock: Option<ClockInfo>,
    /// Options the run used (threads, runs, touch, pace, capacity, ...), as given.
    #[serde(default)]
    pub options: serde_json::Value,
    /// The deterministic tier (`replay --counts`): how the counts were taken. `None` when the
    /// run took none.
    #[serde(default)]
    pub counts: Option<CountsInfo>,
    pub traces: Vec<TraceResult>,
}

/// How `BackendResult::counts` were measured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountsInfo {
    /// `callgrind`: valgrind's instruction and cache simulator, collecting only inside the
    /// engine's calls into the backend.
    pub source: String,
    /// The counting tool's own version (`valgrind-3.19.0`): counts move with it, as with rustc.
    pub tool_version: String,
    /// The formula of `estimated_cycles`, in callgrind's event names.
    pub estimated_cycles_formula: String,
}

/// Deterministic cost of one backend's calls on one trace, per op kind (one counting pass).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct OpCounts {
    pub alloc: OpCost,
    pub free: OpCost,
    pub realloc: OpCost,
}

impl OpCounts {
    /// Every op kind together.
    pub fn all(&self) -> OpCost {
        let mut total = OpCost::default();
        for cost in [self.alloc, self.free, self.realloc] {
            total.calls += cost.calls;
            total.instructions += cost.instructions;
            total.l1_misses += cost.l1_misses;
            total.ll_misses += cost.ll_misses;
            total.estimated_cycles += cost.estimated_cycles;
        }
        total.with_per_op()
    }
}

/// Totals over every call of one op kind (the backend's own work: the engine is not counted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct OpCost {
    /// Calls made into the backend.
    pub calls: u64,
    /// Instructions executed inside those calls (callgrind `Ir`).
    pub instructions: u64,
    /// Simulated first-level misses: instruction reads, data reads and data writes.
    pub l1_misses: u64,
    /// Simulated last-level misses: instruction reads, data reads and data writes.
    pub ll_misses: u64,
    /// `instructions + 10 * l1_misses + 100 * ll_misses` (see `CountsInfo`).
    pub estimated_cycles: u64,
    /// `instructions / calls` (0 without calls).
    #[serde(default)]
    pub instructions_per_op: f64,
    /// `estimated_cycles / calls` (0 without calls).
    #[serde(default)]
    pub estimated_cycles_per_op: f64,
}

impl OpCost {
    /// Fills the per-op fields from the totals.
    pub fn with_per_op(mut self) -> Self {
        let per = |total: u64| {
            if self.calls == 0 {
                0.0
            } else {
                total as f64 / self.calls as f64
            }
        };
        self.instructions_per_op = per(self.instructions);
        self.estimated_cycles_per_op = per(self.estimated_cycles);
        self
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: u32,
    pub os: String,
    pub rustc: String,
    /// The CUDA device the GPU backends ran on; `null` when there is none (or no driver).
    #[serde(default)]
    pub gpu: Option<GpuDevice>,
}

/// A CUDA device as the driver describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuDevice {
    /// `NVIDIA H200`.
    pub name: String,
    pub total_memory_bytes: u64,
    /// The kernel driver's version (`580.159.04`), when it can be read.
    pub driver_version: Option<String>,
    /// The CUDA version the driver supports (`13.0`, from `cuDriverGetVersion`).
    pub cuda_version: String,
    /// Compute capability (`9.0`).
    #[serde(default)]
    pub compute_capability: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClockInfo {
    /// `rdtsc`, `cntvct` or `monotonic`.
    pub source: String,
    /// Cost of one clock read (the floor subtracted from every latency sample).
    pub overhead_ns: f64,
    /// Ticks per nanosecond of the calibrated counter.
    pub ticks_per_ns: f64,
    /// Smallest step the clock was seen to take between two reads, in nanoseconds: below
    /// it latencies cannot be told apart (virtual machines often step the TSC coarsely).
    #[serde(default)]
    pub resolution_ns: Option<f64>,
}

impl ResultsFile {
    /// Latency resolution of this file's measurements: the clock's step, at least 1 ns.
    pub fn latency_resolution_ns(&self) -> f64 {
        self.clock
            .as_ref()
            .and_then(|c| c.resolution_ns)
            .unwrap_or(1.0)
            .max(1.0)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceResult {
    pub path: String,
    pub events: u64,
    pub threads: u32,
    pub peak_live_bytes: u64,
    pub sanitation: Sanitation,
    pub results: Vec<BackendResult>,
    /// PyTorch memory snapshots: what the snapshot held besides the replayed events (entry
    /// counts, `free_at`, `pre_recording_blocks`, `ooms`, `truncated`, PyTorch's
    /// `peak_reserved_bytes`); absent for other formats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pytorch: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sanitation {
    /// Every repair made (sum of the kinds below and any other).
    pub repaired: u64,
    /// Frees (and reallocs) of pointers never allocated.
    pub unknown_frees: u64,
    /// Blocks live at the end of the trace.
    pub leaks: u64,
    #[serde(default)]
    pub double_frees: u64,
    /// Allocations returning a pointer that was still live (the old block is freed first).
    #[serde(default)]
    pub live_reallocations: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Skipped,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendResult {
    pub backend: String,
    pub status: Status,
    pub reason: Option<String>,
    pub runs: Vec<RunResult>,
    /// Median over runs.
    pub ops_per_sec: f64,
    /// Merged over every run's timed pass, clock floor subtracted.
    pub latency_ns: LatencySet,
    /// Highest over runs.
    pub peak_reserved_bytes: u64,
    /// Highest over runs (a run's count of failed allocations).
    pub alloc_failures: u64,
    /// How `peak_reserved_bytes` was measured: `pool-stats`, `mimalloc-stats`, `rss`,
    /// `device`, `driver-mem-info` (device memory in use, from the driver),
    /// `mempool-reserved-high` (the CUDA memory pool's reserved high watermark),
    /// `pytorch-segments` (PyTorch's own segment events, for `torch-caching`).
    #[serde(default)]
    pub reserved_source: Option<String>,
    /// `1 - live/reserved` at the reserved peak.
    #[serde(default)]
    pub fragmentation: Option<f64>,
    /// One-line description of the configuration (pool backends).
    #[serde(default)]
    pub config: Option<String>,
    /// Simulated device runs: smallest capacity replaying with no failure.
    #[serde(default)]
    pub min_capacity_bytes: Option<u64>,
    /// Sampled memory over time (from the first measured run).
    #[serde(default)]
    pub memory_series: Vec<MemorySample>,
    /// Alloc latency per size bucket (log2 of the request size; not the allocators' size
    /// classes). The JSON name predates the distinction and is a contract.
    #[serde(default, rename = "alloc_latency_by_size_class")]
    pub alloc_latency_by_size_bucket: Vec<SizeBucketLatency>,
    /// A reference row taken from the trace itself, not replayed (`torch-caching`: what
    /// PyTorch's caching allocator reserved while the trace was recorded). It has no runs,
    /// no throughput and no latencies.
    #[serde(default)]
    pub recorded: bool,
    /// The deterministic tier: cost of the backend's calls per op kind (`replay --counts`).
    #[serde(default)]
    pub counts: Option<OpCounts>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// Length of this run's throughput sample: `trace_passes` passes over the trace.
    pub wall_ns: u64,
    pub ops_per_sec: f64,
    pub alloc_failures: u64,
    pub peak_reserved_bytes: u64,
    /// This run's timed-pass percentiles (what `replay compare` resamples).
    #[serde(default)]
    pub alloc_p50_ns: Option<u64>,
    #[serde(default)]
    pub alloc_p99_ns: Option<u64>,
    #[serde(default)]
    pub free_p50_ns: Option<u64>,
    /// Passes over the trace in the throughput sample (repeated until the sample lasts
    /// `--min-sample-ms`; each pass on a fresh backend). `None` in older files: one.
    #[serde(default)]
    pub trace_passes: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySet {
    pub alloc: LatencySummary,
    pub free: LatencySummary,
    pub realloc: LatencySummary,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub count: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MemorySample {
    /// Global sequence number of the event after which the sample was taken.
    pub seq: u64,
    pub live_bytes: u64,
    pub reserved_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SizeBucketLatency {
    /// Requests of `[2^log2, 2^(log2+1))` bytes.
    pub size_log2: u32,
    pub latency: LatencySummary,
}

impl ResultsFile {
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("results always serialise")
    }
}
