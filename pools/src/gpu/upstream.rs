//! `DeviceUpstream`: where a `GpuPool` gets its address ranges from, and the stream/event
//! operations stream-ordered reuse needs.
//!
//! Two implementations: [`SimulatedDevice`](super::SimulatedDevice) (address ranges only, any
//! capacity, logical events) and, with the `cuda` feature, [`CudaUpstream`](super::CudaUpstream)
//! (the CUDA driver). The pool holds its upstream behind its mutex, so methods take `&mut self`.

use super::StreamId;
use crate::config::MemoryType;
use std::fmt;

/// Why an upstream call failed. `GpuPool` turns these into `PoolError`s naming the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamError {
    /// The device cannot supply `requested_bytes`; `free_bytes` is what it reported free.
    OutOfMemory {
        requested_bytes: u64,
        free_bytes: u64,
    },
    /// A driver call failed (or the driver is missing); the message names the call.
    Cuda(String),
    /// The call is not valid for this upstream (unknown address, copy on a simulated device, ...).
    Invalid(String),
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamError::OutOfMemory {
                requested_bytes,
                free_bytes,
            } => write!(
                f,
                "device out of memory: requested {requested_bytes} bytes, {free_bytes} bytes free"
            ),
            UpstreamError::Cuda(m) => write!(f, "{m}"),
            UpstreamError::Invalid(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for UpstreamError {}

/// Free and total bytes of the device (`cuMemGetInfo`, or the simulated capacity).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemInfo {
    pub free_bytes: u64,
    pub total_bytes: u64,
}

/// What an upstream has been asked to do: the figures that show what a pool saves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UpstreamCounts {
    /// Successful `alloc` calls.
    pub alloc_calls: u64,
    /// `free` calls.
    pub free_calls: u64,
    /// `alloc` calls that failed (out of memory).
    pub failed_allocs: u64,
    /// Bytes handed out and not yet freed (after rounding to the granularity).
    pub reserved_bytes: u64,
    /// Highest `reserved_bytes` seen.
    pub peak_reserved_bytes: u64,
    /// Events recorded (one per stream-ordered free).
    pub event_records: u64,
    /// Stream waits on another stream's event (cross-stream reuse).
    pub event_waits: u64,
}

/// Direction of a copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyKind {
    HostToDevice,
    DeviceToHost,
    DeviceToDevice,
}

/// The memory source of a `GpuPool`: device address ranges plus the stream and event
/// operations that stream-ordered reuse needs.
///
/// Addresses are `u64` device addresses (host addresses for pinned memory); 0 is never a
/// valid address. Every address and size an upstream hands out is a multiple of
/// [`granularity_bytes`](DeviceUpstream::granularity_bytes).
pub trait DeviceUpstream: Send {
    /// One line for reports: `simulated device, 80 GiB` or `CUDA device 0 (NVIDIA H100)`.
    fn describe(&self) -> String;

    /// Device, pinned host or managed memory.
    fn memory_type(&self) -> MemoryType;

    /// Alignment and size rounding of every range handed out (a power of two, >= 256).
    fn granularity_bytes(&self) -> u64;

    /// The device ordinal this upstream allocates on.
    fn device_id(&self) -> u32;

    /// Switch to another device. Only valid while nothing is allocated.
    fn set_device(&mut self, device_id: u32) -> Result<(), UpstreamError>;

    /// A range of at least `bytes` bytes (rounded up to the granularity).
    fn alloc(&mut self, bytes: u64) -> Result<u64, UpstreamError>;

    /// Give back a range from `alloc`; `bytes` is the size asked for there.
    fn free(&mut self, addr: u64, bytes: u64) -> Result<(), UpstreamError>;

    /// Free and total bytes now.
    fn mem_info(&self) -> Result<MemInfo, UpstreamError>;

    /// Counters since creation.
    fn counts(&self) -> UpstreamCounts;

    /// Record `stream`'s event at the current point of its work (called on every free: the
    /// block may be reused by another stream once this event has completed).
    fn record_event(&mut self, stream: StreamId) -> Result<(), UpstreamError>;

    /// Make `waiter`'s later work wait for the event last recorded on `owner`.
    fn wait_event(&mut self, waiter: StreamId, owner: StreamId) -> Result<(), UpstreamError>;

    /// Wait on the host until all work on every stream has finished.
    fn synchronize(&mut self) -> Result<(), UpstreamError>;

    /// Wait on the host until all work on `stream` has finished.
    fn synchronize_stream(&mut self, stream: StreamId) -> Result<(), UpstreamError>;

    /// Set `bytes` bytes at `addr` to `value` (zeroing, poisoning), ordered on `stream`.
    fn fill(
        &mut self,
        addr: u64,
        bytes: u64,
        value: u8,
        stream: StreamId,
    ) -> Result<(), UpstreamError>;

    /// Copy `bytes` bytes from `src` to `dst`. Host addresses are process addresses.
    /// With `stream` the copy is ordered on that stream and may still run after return;
    /// without, it has completed when this returns.
    ///
    /// # Safety
    /// Host ranges are valid for the access (`src` readable, `dst` writable) for `bytes`
    /// bytes until the copy has completed: at return when `stream` is `None`, else until
    /// the stream has been synchronized. Device ranges are live allocations of this device.
    unsafe fn copy(
        &mut self,
        dst: u64,
        src: u64,
        bytes: u64,
        kind: CopyKind,
        stream: Option<StreamId>,
    ) -> Result<(), UpstreamError>;
}

/// A shared upstream: the pool uses it through the mutex while its owner can still look at
/// it (a `SimulatedDevice`'s fragmentation or vector clocks, for example).
impl<U: DeviceUpstream> DeviceUpstream for std::sync::Arc<std::sync::Mutex<U>> {
    fn describe(&self) -> String {
        lock(self).describe()
    }
    fn memory_type(&self) -> MemoryType {
        lock(self).memory_type()
    }
    fn granularity_bytes(&self) -> u64 {
        lock(self).granularity_bytes()
    }
    fn device_id(&self) -> u32 {
        lock(self).device_id()
    }
    fn set_device(&mut self, device_id: u32) -> Result<(), UpstreamError> {
        lock(self).set_device(device_id)
    }
    fn alloc(&mut self, bytes: u64) -> Result<u64, UpstreamError> {
        lock(self).alloc(bytes)
    }
    fn free(&mut self, addr: u64, bytes: u64) -> Result<(), UpstreamError> {
        lock(self).free(addr, bytes)
    }
    fn mem_info(&self) -> Result<MemInfo, UpstreamError> {
        lock(self).mem_info()
    }
    fn counts(&self) -> UpstreamCounts {
        lock(self).counts()
    }
    fn record_event(&mut self, stream: StreamId) -> Result<(), UpstreamError> {
        lock(self).record_event(stream)
    }
    fn wait_event(&mut self, waiter: StreamId, owner: StreamId) -> Result<(), UpstreamError> {
        lock(self).wait_event(waiter, owner)
    }
    fn synchronize(&mut self) -> Result<(), UpstreamError> {
        lock(self).synchronize()
    }
    fn synchronize_stream(&mut self, stream: StreamId) -> Result<(), UpstreamError> {
        lock(self).synchronize_stream(stream)
    }
    fn fill(
        &mut self,
        addr: u64,
        bytes: u64,
        value: u8,
        stream: StreamId,
    ) -> Result<(), UpstreamError> {
        lock(self).fill(addr, bytes, value, stream)
    }
    unsafe fn copy(
        &mut self,
        dst: u64,
        src: u64,
        bytes: u64,
        kind: CopyKind,
        stream: Option<StreamId>,
    ) -> Result<(), UpstreamError> {
        // SAFETY: forwarded from the caller's contract.
        unsafe { lock(self).copy(dst, src, bytes, kind, stream) }
    }
}

fn lock<U>(m: &std::sync::Mutex<U>) -> std::sync::MutexGuard<'_, U> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
