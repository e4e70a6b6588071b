//! The backends the `replay` command knows, and the registry that names them.
//!
//! A backend is registered as a [`BackendFactory`]: a name, an availability check (an
//! `Err(Unavailable(reason))` makes the backend `skipped` with that reason) and a
//! constructor. The blanket [`RegisteredBackend`] impl turns each factory into an entry
//! of [`registry`] whose `run_once` calls the engine monomorphised for that backend type:
//! dynamic dispatch happens once per run, never per op.
//!
//! The [`Backend`] trait itself (what the engine calls per op) is in `interface.rs`.
//!
//! To add a backend: implement `Backend` for its type, a `BackendFactory` for a unit
//! struct, and append `&ThatFactory` to `REGISTRY` below.

pub mod gpu;
mod interface;
pub mod mimalloc;
pub mod null;
pub mod pool;
pub mod system;

use crate::engine::{self, EngineError, PassOptions, ReplayPlan, RunMeasurement};
pub use interface::{AddressSpace, Backend, Unavailable};
use pools::PoolConfig;
use workloads::CompiledTrace;

/// What every backend of one replay is built from.
#[derive(Debug, Clone)]
pub struct BackendSetup {
    /// The user's `--config` (or the default preset); pool backends override the
    /// allocator kind per backend.
    pub config: PoolConfig,
    /// `--capacity`: pool backends' `max_size_bytes`, the simulated device's size.
    pub capacity_bytes: Option<u64>,
    /// Workers the plan runs on (a backend may size per-thread state by it).
    pub workers: usize,
    /// `--simulate-gpu`: capacity of the simulated device (`sim-gpu-pool`, `sim-upstream`).
    pub simulate_gpu_bytes: Option<u64>,
}

impl Default for BackendSetup {
    fn default() -> Self {
        BackendSetup {
            config: PoolConfig::default_cpu(),
            capacity_bytes: None,
            workers: 1,
            simulate_gpu_bytes: None,
        }
    }
}

/// How a backend is found, checked and made.
pub trait BackendFactory: Sync {
    type Backend: Backend;

    /// The name users type in `--backends`.
    fn name(&self) -> &'static str;

    /// One line for `--help` style listings.
    fn description(&self) -> &'static str;

    /// Part of the set replayed when `--backends` is not given.
    fn in_default_set(&self) -> bool {
        true
    }

    /// Whether the backend can run on this machine with this setup.
    fn check_available(&self, _setup: &BackendSetup) -> Result<(), Unavailable> {
        Ok(())
    }

    /// A fresh backend (one per pass).
    fn create(&self, setup: &BackendSetup) -> Result<Self::Backend, String>;

    /// Where `peak_reserved_bytes` comes from: `pool-stats`, `mimalloc-stats`,
    /// `mallinfo2`, `rss`, `device`, `none`.
    fn reserved_source(&self) -> &'static str;

    /// One-line configuration for tables and results.json (pool backends).
    fn config_summary(&self, _setup: &BackendSetup) -> Option<String> {
        None
    }

    /// For backends whose memory limit is a parameter (a simulated device): the step, in
    /// bytes, in which the limit is searched. `Some` makes the replay report the trace's
    /// `min_capacity_bytes`, found with [`BackendFactory::create_with_capacity`].
    fn capacity_step_bytes(&self) -> Option<u64> {
        None
    }

    /// A fresh backend limited to `capacity_bytes` (called only when
    /// `capacity_step_bytes` is `Some`).
    fn create_with_capacity(
        &self,
        _setup: &BackendSetup,
        _capacity_bytes: u64,
    ) -> Result<Self::Backend, String> {
        Err(format!("{} has no capacity to set", self.name()))
    }

    /// Why `setup` can never run on this backend (a config it would reject at creation),
    /// so that the command refuses it before any replay.
    fn check_setup(&self, _setup: &BackendSetup) -> Result<(), String> {
        Ok(())
    }
}

/// A registry entry: a factory with its backend type erased.
pub trait RegisteredBackend: Sync {
    fn name(&self) -> &'static str;
    fn description(&self) -> &'static str;
    fn in_default_set(&self) -> bool;
    fn check_available(&self, setup: &BackendSetup) -> Result<(), Unavailable>;
    fn reserved_source(&self) -> &'static str;
    fn config_summary(&self, setup: &BackendSetup) -> Option<String>;
    /// The smallest capacity at which the backend replays `trace` with no allocation
    /// failure (see [`BackendFactory::capacity_step_bytes`]); `None` for backends without
    /// a capacity, or when no capacity works.
    fn min_capacity_bytes(&self, setup: &BackendSetup, trace: &CompiledTrace) -> Option<u64>;
    fn check_setup(&self, setup: &BackendSetup) -> Result<(), String>;
    /// One run (throughput pass + timed pass, a fresh backend each) of `plan`.
    fn run_once(
        &self,
        setup: &BackendSetup,
        plan: &ReplayPlan,
        opts: &PassOptions,
    ) -> Result<RunMeasurement, EngineError>;
    /// One untimed pass of `plan` on a fresh backend, every call made through the counting
    /// shims (`crate::counts`). Returns the calls made per op kind (alloc, free, realloc).
    fn run_counted(
        &self,
        setup: &BackendSetup,
        plan: &ReplayPlan,
        touch: engine::Touch,
    ) -> Result<[u64; 3], EngineError>;
}

impl<F: BackendFactory> RegisteredBackend for F {
    fn name(&self) -> &'static str {
        BackendFactory::name(self)
    }
    fn description(&self) -> &'static str {
        BackendFactory::description(self)
    }
    fn in_default_set(&self) -> bool {
        BackendFactory::in_default_set(self)
    }
    fn check_available(&self, setup: &BackendSetup) -> Result<(), Unavailable> {
        BackendFactory::check_available(self, setup)
    }
    fn reserved_source(&self) -> &'static str {
        BackendFactory::reserved_source(self)
    }
    fn config_summary(&self, setup: &BackendSetup) -> Option<String> {
        BackendFactory::config_summary(self, setup)
    }
    fn min_capacity_bytes(&self, setup: &BackendSetup, trace: &CompiledTrace) -> Option<u64> {
        let step_bytes = self.capacity_step_bytes()?;
        engine::capacity::min_capacity_bytes(trace, step_bytes, |capacity_bytes| {
            self.create_with_capacity(setup, capacity_bytes).ok()
        })
    }
    fn check_setup(&self, setup: &BackendSetup) -> Result<(), String> {
        BackendFactory::check_setup(self, setup)
    }
    fn run_once(
        &self,
        setup: &BackendSetup,
        plan: &ReplayPlan,
        opts: &PassOptions,
    ) -> Result<RunMeasurement, EngineError> {
        engine::replay_compiled(|| self.create(setup), plan, opts)
    }
    fn run_counted(
        &self,
        setup: &BackendSetup,
        plan: &ReplayPlan,
        touch: engine::Touch,
    ) -> Result<[u64; 3], EngineError> {
        let workspace = engine::PassWorkspace::new(plan, engine::PassKind::Throughput);
        let backend = self.create(setup).map_err(EngineError::Create)?;
        let counted = crate::counts::CountedBackend::new(&backend);
        workspace
            .run(&counted, plan, touch, engine::Pace::Max)
            .map_err(EngineError::Panicked)?;
        Ok(counted.calls.snapshot())
    }
}

/// Every backend, in the order tables list them.
static REGISTRY: &[&dyn RegisteredBackend] = &[
    &pool::PoolFixedFactory,
    &pool::PoolVariableFactory,
    &pool::PoolLockFreeFactory,
    &pool::PoolAsConfiguredFactory,
    &system::SystemFactory,
    &mimalloc::MimallocFactory,
    &null::NullFactory,
    &gpu::CudaMallocFactory,
    &gpu::CudaAsyncFactory,
    &gpu::GpuPoolFactory,
    &gpu::SimGpuPoolFactory,
    &gpu::SimUpstreamFactory,
];

/// Every registered backend.
pub fn registry() -> &'static [&'static dyn RegisteredBackend] {
    REGISTRY
}

/// The backend called `name`.
pub fn find(name: &str) -> Option<&'static dyn RegisteredBackend> {
    REGISTRY.iter().copied().find(|b| b.name() == name)
}

/// Names of every registered backend, comma separated (for error messages).
pub fn known_names() -> String {
    REGISTRY
        .iter()
        .map(|b| b.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The backends one replay runs: resolved once from their names, at the edge (the command
/// line), and taken as they are by the replay functions.
#[derive(Clone)]
pub struct BackendSelection {
    backends: Vec<&'static dyn RegisteredBackend>,
}

impl BackendSelection {
    /// What `replay` runs when `--backends` is not given: every backend of the default set.
    pub fn default_set() -> Self {
        BackendSelection {
            backends: REGISTRY
                .iter()
                .copied()
                .filter(|b| b.in_default_set())
                .collect(),
        }
    }

    /// `--backends` (empty = the default set), rejecting unknown names and duplicates.
    pub fn resolve(names: &[String]) -> Result<Self, String> {
        if names.is_empty() {
            return Ok(Self::default_set());
        }
        let mut backends: Vec<&'static dyn RegisteredBackend> = Vec::new();
        for name in names {
            let name = name.trim();
            let backend = find(name)
                .ok_or_else(|| format!("unknown backend '{name}' (known: {})", known_names()))?;
            if backends.iter().any(|b| b.name() == backend.name()) {
                return Err(format!("backend '{name}' is listed twice"));
            }
            backends.push(backend);
        }
        Ok(BackendSelection { backends })
    }

    /// Exactly these backends, registered or not (tests, experiments).
    pub fn of(backends: Vec<&'static dyn RegisteredBackend>) -> Self {
        BackendSelection { backends }
    }

    /// Append `backend` unless a backend of that name is selected already.
    pub fn add(&mut self, backend: &'static dyn RegisteredBackend) {
        if !self.backends.iter().any(|b| b.name() == backend.name()) {
            self.backends.push(backend);
        }
    }

    /// The backends, in the order tables list them.
    pub fn backends(&self) -> &[&'static dyn RegisteredBackend] {
        &self.backends
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.backends.iter().map(|b| b.name()).collect()
    }
}

impl Default for BackendSelection {
    fn default() -> Self {
        Self::default_set()
    }
}

impl std::fmt::Debug for BackendSelection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}
