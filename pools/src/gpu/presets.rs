//! GPU presets of `PoolConfig` (the CPU ones live in `config.rs`).

use crate::config::{AllocatorKind, DebugChecks, FitPolicy, MemoryType, PoolConfig, ReturnPolicy};

const MIB: usize = 1024 * 1024;

impl PoolConfig {
    /// Device memory, variable-size best-fit with coalescing, 256 B alignment, no initial
    /// reservation, 2 MiB chunks, or exactly the request when it is larger (no geometric
    /// growth: a doubling chunk overshoots what a training step needs by up to 2x, which is
    /// device memory no one else can use); chunks kept until reset, except that entirely
    /// free chunks are given back rather than let a growth raise the reserved peak.
    pub fn default_gpu() -> Self {
        PoolConfig {
            allocator: AllocatorKind::VariableSize,
            fit: FitPolicy::BestFit,
            initial_size_bytes: 0,
            chunk_size_bytes: 2 * MIB,
            growth_factor: 1.0,
            alignment: 256,
            return_policy: ReturnPolicy::OnReset,
            memory_type: MemoryType::Device,
            ..PoolConfig::default_cpu()
        }
    }

    /// Fewest upstream calls: big first chunk (1 GiB, like RMM's pool reserving up front),
    /// 256 MiB growth chunks, never given back before drop.
    pub fn high_performance_gpu() -> Self {
        PoolConfig {
            initial_size_bytes: 1024 * MIB,
            chunk_size_bytes: 256 * MIB,
            return_policy: ReturnPolicy::Keep,
            ..PoolConfig::default_gpu()
        }
    }

    /// Every check on: poison freed blocks (a device memset of `POISON_BYTE`), track live
    /// blocks and report leaks at drop; chunks go back to the device when empty, so that
    /// use after free of a returned chunk faults.
    pub fn debug_gpu() -> Self {
        PoolConfig {
            debug: DebugChecks {
                check_pointers: true,
                poison_on_free: true,
                track_live: true,
                leak_report: true,
            },
            return_policy: ReturnPolicy::WhenEmpty,
            ..PoolConfig::default_gpu()
        }
    }
}
