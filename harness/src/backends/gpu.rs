//! GPU backends. Device addresses are never touched by the engine (`AddressSpace::Device`).
//!
//! On a CUDA machine (the `cuda` feature, a driver and a device):
//! - `cuda-malloc`: `cuMemAlloc`/`cuMemFree` per op, the raw baseline (both synchronise);
//! - `cuda-async`: `cuMemAllocAsync`/`cuMemFreeAsync` on one CUDA stream per trace stream,
//!   from the device's default memory pool with its release threshold raised (as RMM's
//!   `cuda_async_memory_resource` does);
//! - `gpu-pool`: `pools::gpu::GpuPool` on the device, one CUDA stream per trace stream.
//!
//! Without a driver all three are `skipped` with the probe's reason. Their reserved bytes:
//! `cuda-malloc` from the driver (`cuMemGetInfo`, sampled: `driver-mem-info`), `cuda-async`
//! from its memory pool's attributes (`mempool-reserved-high`), `gpu-pool` from the pool.
//!
//! With `--simulate-gpu CAPACITY` (no GPU needed):
//! - `sim-gpu-pool`: `GpuPool` on a `SimulatedDevice` of that capacity;
//! - `sim-upstream`: the simulated device alone, one upstream call per op (what
//!   `cuda-malloc` does to a real device).
//!
//! Allocations beyond the capacity fail (counted as `alloc_failures`). Both have a capacity
//! (`BackendFactory::capacity_step_bytes`), so the replay also reports their
//! `min_capacity_bytes` (`engine::capacity`).
//!
//! The pool backends use the user's `--config` when it is a GPU config (memory type not
//! `host`), else `PoolConfig::default_gpu()`.

use super::{BackendFactory, BackendSetup};
use crate::backends::{AddressSpace, Backend, Unavailable};
use pools::gpu::{DeviceUpstream, GpuPool, SimulatedDevice, StreamId};
use pools::{AllocFlags, MemoryPool, MemoryType, PoolConfig};
use std::ptr::NonNull;
use std::sync::Mutex;

/// The pool config GPU pool backends use (see the module docs).
pub fn gpu_config(setup: &BackendSetup) -> PoolConfig {
    if setup.config.memory_type == MemoryType::Host {
        PoolConfig::default_gpu()
    } else {
        setup.config.clone()
    }
}

fn simulated_capacity(setup: &BackendSetup) -> Result<u64, Unavailable> {
    setup.simulate_gpu_bytes.ok_or_else(|| {
        Unavailable("needs --simulate-gpu CAPACITY (a simulated device of that size)".into())
    })
}

#[inline]
fn ptr(addr: usize) -> Option<NonNull<u8>> {
    NonNull::new(addr as *mut u8)
}

// ---------------------------------------------------------------- GpuPool (any upstream)

/// A `GpuPool` as a backend; a trace stream index is the pool's `StreamId`.
pub struct GpuPoolBackend {
    pool: GpuPool,
}

impl GpuPoolBackend {
    pub fn new(pool: GpuPool) -> Self {
        GpuPoolBackend { pool }
    }

    pub fn pool(&self) -> &GpuPool {
        &self.pool
    }
}

impl Backend for GpuPoolBackend {
    #[inline]
    fn alloc(&self, size: usize, align: usize, stream: u16) -> usize {
        self.pool
            .allocate_with_on(size, AllocFlags::aligned(align), StreamId(stream))
            .map_or(0, |p| p.as_ptr() as usize)
    }

    #[inline]
    unsafe fn free(&self, addr: usize, _size: usize, stream: u16) {
        if let Some(p) = ptr(addr) {
            // An error is an engine bug (double free); there is no caller to report it to.
            let _ = self.pool.deallocate_on(p, StreamId(stream));
        }
    }

    unsafe fn realloc(
        &self,
        addr: usize,
        old_size: usize,
        new_size: usize,
        align: usize,
        stream: u16,
    ) -> usize {
        let new = self.alloc(new_size, align, stream);
        if new == 0 {
            return 0;
        }
        if let (Some(old), Some(newp)) = (ptr(addr), ptr(new)) {
            let bytes = old_size.min(new_size);
            if bytes > 0 {
                // The simulated device has nothing to move but checks the ranges; on a
                // device the copy is ordered on the stream before the free below.
                let _ = self
                    .pool
                    .copy_device_to_device_on(newp, old, bytes, StreamId(stream));
            }
            // SAFETY: the caller's contract: addr is a live block of this backend, and
            // it is not used after this move.
            unsafe { self.free(addr, old_size, stream) };
        }
        new
    }

    fn address_space(&self) -> AddressSpace {
        AddressSpace::Device
    }

    fn reserved_bytes(&self) -> Option<u64> {
        Some(self.pool.stats().reserved_bytes)
    }

    fn peak_reserved_bytes(&self) -> Option<u64> {
        Some(self.pool.stats().peak_reserved_bytes)
    }

    fn finish(&self) {
        let _ = self.pool.synchronize();
    }
}

// ---------------------------------------------------------------- simulated device

/// The simulated device alone: one upstream call per op.
pub struct SimUpstreamBackend {
    device: Mutex<SimulatedDevice>,
}

impl SimUpstreamBackend {
    pub fn new(capacity_bytes: u64) -> Self {
        SimUpstreamBackend {
            device: Mutex::new(SimulatedDevice::new(capacity_bytes)),
        }
    }

    fn device(&self) -> std::sync::MutexGuard<'_, SimulatedDevice> {
        self.device.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Backend for SimUpstreamBackend {
    fn alloc(&self, size: usize, _align: usize, _stream: u16) -> usize {
        // Ranges are aligned to the granularity (512 B), like cudaMalloc's.
        self.device().alloc(size as u64).map_or(0, |a| a as usize)
    }

    unsafe fn free(&self, addr: usize, size: usize, _stream: u16) {
        let _ = self.device().free(addr as u64, size as u64);
    }

    unsafe fn realloc(
        &self,
        addr: usize,
        old_size: usize,
        new_size: usize,
        align: usize,
        stream: u16,
    ) -> usize {
        let new = self.alloc(new_size, align, stream);
        if new != 0 && addr != 0 {
            // SAFETY: the caller's contract: addr is a live block of this backend, and
            // it is not used after this move.
            unsafe { self.free(addr, old_size, stream) };
        }
        new
    }

    fn address_space(&self) -> AddressSpace {
        AddressSpace::Device
    }

    fn reserved_bytes(&self) -> Option<u64> {
        Some(self.device().counts().reserved_bytes)
    }

    fn peak_reserved_bytes(&self) -> Option<u64> {
        Some(self.device().counts().peak_reserved_bytes)
    }
}

pub struct SimGpuPoolFactory;

impl BackendFactory for SimGpuPoolFactory {
    type Backend = GpuPoolBackend;

    fn name(&self) -> &'static str {
        "sim-gpu-pool"
    }

    fn description(&self) -> &'static str {
        "GpuPool on a simulated device of --simulate-gpu CAPACITY (no GPU needed)"
    }

    fn in_default_set(&self) -> bool {
        false
    }

    fn check_available(&self, setup: &BackendSetup) -> Result<(), Unavailable> {
        simulated_capacity(setup).map(|_| ())
    }

    fn create(&self, setup: &BackendSetup) -> Result<GpuPoolBackend, String> {
        let capacity = simulated_capacity(setup).map_err(|u| u.0)?;
        self.create_with_capacity(setup, capacity)
    }

    fn reserved_source(&self) -> &'static str {
        "pool-stats"
    }

    fn config_summary(&self, setup: &BackendSetup) -> Option<String> {
        Some(gpu_config(setup).summary())
    }

    fn capacity_step_bytes(&self) -> Option<u64> {
        Some(pools::gpu::SIMULATED_GRANULARITY_BYTES)
    }

    fn create_with_capacity(
        &self,
        setup: &BackendSetup,
        capacity_bytes: u64,
    ) -> Result<GpuPoolBackend, String> {
        GpuPool::simulated("sim-gpu-pool", gpu_config(setup), capacity_bytes)
            .map(GpuPoolBackend::new)
            .map_err(|e| e.to_string())
    }
}

pub struct SimUpstreamFactory;

impl BackendFactory for SimUpstreamFactory {
    type Backend = SimUpstreamBackend;

    fn name(&self) -> &'static str {
        "sim-upstream"
    }

    fn description(&self) -> &'static str {
        "the simulated device alone, one upstream call per op (cudaMalloc's baseline)"
    }

    fn in_default_set(&self) -> bool {
        false
    }

    fn check_available(&self, setup: &BackendSetup) -> Result<(), Unavailable> {
        simulated_capacity(setup).map(|_| ())
    }

    fn create(&self, setup: &BackendSetup) -> Result<SimUpstreamBackend, String> {
        simulated_capacity(setup)
            .map(SimUpstreamBackend::new)
            .map_err(|u| u.0)
    }

    fn reserved_source(&self) -> &'static str {
        "device"
    }

    fn capacity_step_bytes(&self) -> Option<u64> {
        Some(pools::gpu::SIMULATED_GRANULARITY_BYTES)
    }

    fn create_with_capacity(
        &self,
        _setup: &BackendSetup,
        capacity_bytes: u64,
    ) -> Result<SimUpstreamBackend, String> {
        Ok(SimUpstreamBackend::new(capacity_bytes))
    }
}

// ---------------------------------------------------------------- CUDA

#[cfg(feature = "cuda")]
mod cuda {
    use super::*;
    use pools::gpu::{CudaDriver, CudaStream};
    use std::sync::OnceLock;

    /// Streams a backend keeps; trace stream indices beyond share them modulo this.
    const MAX_STREAMS: usize = 256;

    pub(super) fn available() -> Result<(), Unavailable> {
        pools::gpu::cuda_available().map_err(Unavailable)
    }

    /// One CUDA stream per trace stream index, created on first use.
    pub(super) struct Streams {
        driver: CudaDriver,
        streams: Vec<OnceLock<Result<CudaStream, String>>>,
    }

    impl Streams {
        pub(super) fn new(driver: CudaDriver) -> Self {
            Streams {
                driver,
                streams: (0..MAX_STREAMS).map(|_| OnceLock::new()).collect(),
            }
        }

        #[inline]
        pub(super) fn get(&self, index: u16) -> Option<&CudaStream> {
            self.streams[index as usize % MAX_STREAMS]
                .get_or_init(|| self.driver.create_stream().map_err(|e| e.to_string()))
                .as_ref()
                .ok()
        }

        pub(super) fn synchronize(&self) {
            for s in self.streams.iter().filter_map(|s| s.get()?.as_ref().ok()) {
                let _ = self.driver.synchronize_stream(s);
            }
        }
    }

    /// `cuMemAlloc`/`cuMemFree` per op. Reserved bytes are the device memory in use as the
    /// driver reports it (`cuMemGetInfo`: total - free), less what was in use when the
    /// backend was created, read at the engine's sample points and at the end.
    pub struct CudaMallocBackend {
        pub(super) driver: CudaDriver,
        pub(super) baseline_used_bytes: u64,
        pub(super) peak_used_bytes: std::sync::atomic::AtomicU64,
    }

    impl CudaMallocBackend {
        pub(super) fn new(driver: CudaDriver) -> Result<Self, String> {
            driver.synchronize().map_err(|e| e.to_string())?;
            let (free, total) = driver.mem_info().map_err(|e| e.to_string())?;
            Ok(CudaMallocBackend {
                driver,
                baseline_used_bytes: total - free,
                peak_used_bytes: std::sync::atomic::AtomicU64::new(0),
            })
        }
    }

    impl Backend for CudaMallocBackend {
        fn alloc(&self, size: usize, _align: usize, _stream: u16) -> usize {
            self.driver.malloc(size.max(1)).map_or(0, |a| a as usize)
        }

        unsafe fn free(&self, addr: usize, _size: usize, _stream: u16) {
            // SAFETY: the engine frees only addresses this backend's `alloc` returned, once,
            // and never touches device memory.
            let _ = unsafe { self.driver.free(addr as u64) };
        }

        unsafe fn realloc(
            &self,
            addr: usize,
            old: usize,
            new: usize,
            align: usize,
            s: u16,
        ) -> usize {
            let n = self.alloc(new, align, s);
            if n != 0 && addr != 0 {
                // SAFETY: both are live allocations of this device, each at least
                // `min(old, new)` bytes.
                let _ = unsafe {
                    self.driver
                        .memcpy_dtod(n as u64, addr as u64, old.min(new), None)
                };
                // SAFETY: the caller's contract: addr is a live block of this backend, and
                // it is not used after this move.
                unsafe { self.free(addr, old, s) };
            }
            n
        }

        fn address_space(&self) -> AddressSpace {
            AddressSpace::Device
        }

        fn reserved_bytes(&self) -> Option<u64> {
            let (free, total) = self.driver.mem_info().ok()?;
            let used = (total - free).saturating_sub(self.baseline_used_bytes);
            self.peak_used_bytes
                .fetch_max(used, std::sync::atomic::Ordering::Relaxed);
            Some(used)
        }

        fn peak_reserved_bytes(&self) -> Option<u64> {
            let now = self.reserved_bytes()?;
            Some(
                self.peak_used_bytes
                    .load(std::sync::atomic::Ordering::Relaxed)
                    .max(now),
            )
        }

        fn finish(&self) {
            let _ = self.driver.synchronize();
        }
    }

    /// `cuMemAllocAsync`/`cuMemFreeAsync` on per-trace-stream streams. Reserved bytes are
    /// the default memory pool's own (`CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT`, and `_HIGH`
    /// for the peak), trimmed and reset when the backend is created.
    pub struct CudaAsyncBackend {
        pub(super) driver: CudaDriver,
        pub(super) streams: Streams,
    }

    impl Backend for CudaAsyncBackend {
        fn alloc(&self, size: usize, _align: usize, stream: u16) -> usize {
            match self.streams.get(stream) {
                Some(s) => self
                    .driver
                    .malloc_async(size.max(1), s)
                    .map_or(0, |a| a as usize),
                None => 0,
            }
        }

        unsafe fn free(&self, addr: usize, _size: usize, stream: u16) {
            if let Some(s) = self.streams.get(stream) {
                // SAFETY: `addr` came from `malloc_async` of this backend and the engine
                // never uses it again; device work on it is ordered on the trace's streams.
                let _ = unsafe { self.driver.free_async(addr as u64, s) };
            }
        }

        unsafe fn realloc(
            &self,
            addr: usize,
            old: usize,
            new: usize,
            align: usize,
            s: u16,
        ) -> usize {
            let n = self.alloc(new, align, s);
            if n != 0 && addr != 0 {
                if let Some(st) = self.streams.get(s) {
                    // SAFETY: both are live allocations of this device, ordered on `st`.
                    let _ = unsafe {
                        self.driver
                            .memcpy_dtod(n as u64, addr as u64, old.min(new), Some(st))
                    };
                }
                // SAFETY: the caller's contract: addr is a live block of this backend, and
                // it is not used after this move.
                unsafe { self.free(addr, old, s) };
            }
            n
        }

        fn address_space(&self) -> AddressSpace {
            AddressSpace::Device
        }

        fn reserved_bytes(&self) -> Option<u64> {
            self.driver.default_pool_reserved_bytes().ok().map(|r| r.0)
        }

        fn peak_reserved_bytes(&self) -> Option<u64> {
            self.driver.default_pool_reserved_bytes().ok().map(|r| r.1)
        }

        fn finish(&self) {
            self.streams.synchronize();
        }
    }

    /// The CUDA version `cuDriverGetVersion` reports (12090 -> `12.9`).
    fn cuda_version(v: i32) -> String {
        format!("{}.{}", v / 1000, (v % 1000) / 10)
    }

    /// The kernel driver's version from `/proc/driver/nvidia/version` (Linux):
    /// `NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.159.04  ...`.
    fn kernel_driver_version() -> Option<String> {
        let text = std::fs::read_to_string("/proc/driver/nvidia/version").ok()?;
        let line = text.lines().find(|l| l.starts_with("NVRM version"))?;
        let after = line.split("Kernel Module").nth(1).unwrap_or(line);
        after
            .split_whitespace()
            .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()) && w.contains('.'))
            .map(str::to_owned)
    }

    pub(super) fn device_info() -> Result<reports::GpuDevice, String> {
        available().map_err(|u| u.0)?;
        let info = pools::gpu::driver::probe().map_err(|e| e.to_string())?;
        let driver = CudaDriver::open(0).map_err(|e| e.to_string())?;
        Ok(reports::GpuDevice {
            name: driver.name().to_owned(),
            total_memory_bytes: driver.total_memory_bytes().map_err(|e| e.to_string())?,
            driver_version: kernel_driver_version(),
            cuda_version: cuda_version(info.driver_version),
            compute_capability: driver
                .compute_capability()
                .ok()
                .map(|(major, minor)| format!("{major}.{minor}")),
        })
    }
}

#[cfg(feature = "cuda")]
pub use cuda::{CudaAsyncBackend, CudaMallocBackend};

#[cfg(not(feature = "cuda"))]
mod cuda {
    use super::*;

    pub(super) fn available() -> Result<(), Unavailable> {
        Err(Unavailable(
            "CUDA was not found: this build has no `cuda` feature".into(),
        ))
    }

    /// Stands for the CUDA backends in a build without CUDA; never created.
    pub enum NoCuda {}

    impl Backend for NoCuda {
        fn alloc(&self, _: usize, _: usize, _: u16) -> usize {
            match *self {}
        }
        unsafe fn free(&self, _: usize, _: usize, _: u16) {
            match *self {}
        }
        unsafe fn realloc(&self, _: usize, _: usize, _: usize, _: usize, _: u16) -> usize {
            match *self {}
        }
    }

    pub type CudaMallocBackend = NoCuda;
    pub type CudaAsyncBackend = NoCuda;

    pub(super) fn device_info() -> Result<reports::GpuDevice, String> {
        Err(available().unwrap_err().0)
    }
}

/// The CUDA device the GPU backends use (device 0): name, memory, driver and CUDA
/// versions. `Err` says why there is none (no `cuda` feature, no driver, no device).
pub fn device_info() -> Result<reports::GpuDevice, String> {
    cuda::device_info()
}

/// Whether a backend runs on a real CUDA device.
pub fn is_cuda_backend(name: &str) -> bool {
    matches!(name, "cuda-malloc" | "cuda-async" | "gpu-pool")
}

#[cfg(not(feature = "cuda"))]
pub use cuda::{CudaAsyncBackend, CudaMallocBackend};

fn skipped_reason(u: Unavailable) -> Unavailable {
    Unavailable(format!("CUDA not found: {}", u.0))
}

pub struct CudaMallocFactory;

impl BackendFactory for CudaMallocFactory {
    type Backend = CudaMallocBackend;

    fn name(&self) -> &'static str {
        "cuda-malloc"
    }

    fn description(&self) -> &'static str {
        "cuMemAlloc/cuMemFree per op on device 0 (the raw baseline)"
    }

    fn check_available(&self, _setup: &BackendSetup) -> Result<(), Unavailable> {
        cuda::available().map_err(skipped_reason)
    }

    fn create(&self, _setup: &BackendSetup) -> Result<CudaMallocBackend, String> {
        #[cfg(feature = "cuda")]
        {
            let driver = pools::gpu::CudaDriver::open(0).map_err(|e| e.to_string())?;
            CudaMallocBackend::new(driver)
        }
        #[cfg(not(feature = "cuda"))]
        {
            Err(cuda::available().unwrap_err().0)
        }
    }

    fn reserved_source(&self) -> &'static str {
        "driver-mem-info"
    }
}

pub struct CudaAsyncFactory;

impl BackendFactory for CudaAsyncFactory {
    type Backend = CudaAsyncBackend;

    fn name(&self) -> &'static str {
        "cuda-async"
    }

    fn description(&self) -> &'static str {
        "cuMemAllocAsync/cuMemFreeAsync per op, one stream per trace stream, release threshold raised"
    }

    fn check_available(&self, _setup: &BackendSetup) -> Result<(), Unavailable> {
        cuda::available().map_err(skipped_reason)
    }

    fn create(&self, _setup: &BackendSetup) -> Result<CudaAsyncBackend, String> {
        #[cfg(feature = "cuda")]
        {
            let driver = pools::gpu::CudaDriver::open(0).map_err(|e| e.to_string())?;
            driver
                .raise_default_pool_release_threshold()
                .map_err(|e| e.to_string())?;
            // The default pool outlives this backend: give back what earlier runs left in
            // it and restart its watermark, so this run's peak is its own.
            driver.synchronize().map_err(|e| e.to_string())?;
            driver
                .reset_default_pool_watermarks()
                .map_err(|e| e.to_string())?;
            Ok(CudaAsyncBackend {
                streams: cuda::Streams::new(driver.clone()),
                driver,
            })
        }
        #[cfg(not(feature = "cuda"))]
        {
            Err(cuda::available().unwrap_err().0)
        }
    }

    fn reserved_source(&self) -> &'static str {
        "mempool-reserved-high"
    }
}

pub struct GpuPoolFactory;

impl BackendFactory for GpuPoolFactory {
    type Backend = GpuPoolBackend;

    fn name(&self) -> &'static str {
        "gpu-pool"
    }

    fn description(&self) -> &'static str {
        "pools::gpu::GpuPool on CUDA device 0, stream-ordered, one stream per trace stream"
    }

    fn check_available(&self, _setup: &BackendSetup) -> Result<(), Unavailable> {
        cuda::available().map_err(skipped_reason)
    }

    fn create(&self, setup: &BackendSetup) -> Result<GpuPoolBackend, String> {
        GpuPool::cuda("gpu-pool", gpu_config(setup))
            .map(GpuPoolBackend::new)
            .map_err(|e| e.to_string())
    }

    fn reserved_source(&self) -> &'static str {
        "pool-stats"
    }

    fn config_summary(&self, setup: &BackendSetup) -> Option<String> {
        Some(gpu_config(setup).summary())
    }
}
