//! Memory pools for CPU and GPU memory.
//!
//! - [`MemoryPool`] is the API every pool implements; [`CpuPool`] and (with the `cuda`
//!   feature or the simulated device) `GpuPool` are the pools.
//! - [`PoolConfig`] chooses the allocator strategy and everything else; presets such as
//!   [`PoolConfig::default_cpu`] are a good start, and configs round-trip through TOML.
//! - [`PoolManager::global`] keeps named pools.

pub mod adapters;
pub mod config;
pub mod cpu_pool;
pub mod debug;
pub mod error;
pub mod manager;
#[cfg(unix)]
pub mod os;
pub mod pool;
pub mod stats;
pub mod sync;
mod thread_cache;

pub use adapters::{PoolAllocator, PoolGlobalAlloc};
pub use alloc::fixed::FixedSizeAllocator;
pub use alloc::size_class::SizeClassTable;
pub use alloc::size_classed::SizeClassedAllocator;
pub use alloc::{BlockState, Chunk, ChunkSource, Strategy, Upstream};
pub use config::{
    AllocatorKind, DebugChecks, FitPolicy, HugePages, MemoryType, PoolConfig, ReturnPolicy,
    SizeClasses, SyncMode, ThreadCacheConfig,
};
pub use cpu_pool::CpuPool;
pub use error::{ConfigError, PoolError};
pub use manager::PoolManager;
#[cfg(unix)]
pub use os::OsChunks;
pub use pool::{AllocFlags, MemoryPool};
pub use stats::{MemoryStats, StatsCounters};

pub mod alloc;
pub mod gpu;
