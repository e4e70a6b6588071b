//! GPU memory pools: [`GpuPool`] over a [`DeviceUpstream`], the CUDA driver wrapper
//! ([`driver`], with the `cuda` feature) and the [`SimulatedDevice`].
//!
//! ```text
//!   GpuPool ── host metadata: live blocks, chunks, per-stream free lists (FreeBlocks)
//!      │          ├─ CoalescingBlocks  (variable-size, best/first fit, coalescing)
//!      │          └─ FixedBlocks       (uniform blocks, a stack per stream)
//!      ▼
//!   DeviceUpstream ── CudaUpstream (cuMemAlloc / cuMemHostAlloc / cuMemAllocManaged,
//!                  │                streams, events)
//!                  └─ SimulatedDevice (address ranges, capacity, logical events)
//! ```
//! Design notes: `docs/gpu.md`.

pub mod blocks;
pub mod coalescing;
pub mod pool;
pub mod presets;
pub mod simulated;
pub mod uniform_blocks;
pub mod upstream;

#[cfg(feature = "cuda")]
pub mod cuda_upstream;
#[cfg(feature = "cuda")]
pub mod driver;

pub use blocks::{FreeBlocks, FreeExtent};
#[cfg(feature = "cuda")]
pub use cuda_upstream::CudaUpstream;
#[cfg(feature = "cuda")]
pub use driver::{CudaDriver, CudaError, CudaEvent, CudaStream, DriverInfo};
pub use pool::{GpuPool, GpuPoolStats, GPU_MIN_ALIGNMENT};
pub use simulated::{SimulatedDevice, SIMULATED_GRANULARITY_BYTES};
pub use upstream::{CopyKind, DeviceUpstream, MemInfo, UpstreamCounts, UpstreamError};

/// A stream of one device, as a small dense index: `StreamId(0)` is the default stream;
/// the harness maps a trace's `stream` column onto `0..n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StreamId(pub u16);

/// Whether CUDA can be used here; `Err` says why not ("CUDA driver not found (libcuda.so):
/// ..."). Never panics. Always `Err` without the `cuda` feature.
pub fn cuda_available() -> Result<(), String> {
    #[cfg(feature = "cuda")]
    {
        driver::probe().map(|_| ()).map_err(|e| e.to_string())
    }
    #[cfg(not(feature = "cuda"))]
    {
        Err("this build of `pools` has no CUDA support (enable the `cuda` feature)".into())
    }
}
