//! Memory pools for CPU and GPU memory.
//!
//! - [`MemoryPool`] is the API every pool implements; [`CpuPool`] and (with the `cuda`
//!   feature or the simulated device) `GpuPool` are the pools.
//! - [`PoolConfig`] chooses the allocator strategy and everything else; presets such as
//!   [`PoolConfig::default_cpu`] are a good start, and configs round-trip through TOML.
//! - [`PoolManager::global`] keeps named pools.

pub mod config;
pub mod error;
pub mod pool;
pub mod stats;

pub use config::{
    AllocatorKind, DebugChecks, FitPolicy, HugePages, MemoryType, PoolConfig, ReturnPolicy,
    SizeClasses, SyncMode,
};
pub use error::{ConfigError, PoolError};
pub use pool::{AllocFlags, MemoryPool};
pub use stats::{MemoryStats, StatsCounters};

pub mod alloc;
