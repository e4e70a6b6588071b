//! `CudaUpstream`: a `DeviceUpstream` over the CUDA driver (device, pinned or managed memory).
//!
//! `StreamId(0)` is the legacy default stream; other ids get a non-blocking stream each,
//! created on first use, and every stream one event (re-recorded at every free, like RMM's
//! per-stream event).

use super::driver::{CudaDriver, CudaError, CudaEvent, CudaStream};
use super::upstream::{CopyKind, DeviceUpstream, MemInfo, UpstreamCounts, UpstreamError};
use super::StreamId;
use crate::config::{human_bytes, MemoryType};
use std::collections::HashMap;

/// Alignment `cudaMalloc` guarantees.
const CUDA_GRANULARITY_BYTES: u64 = 256;

pub struct CudaUpstream {
    driver: CudaDriver,
    memory_type: MemoryType,
    /// Indexed by `StreamId`; `None` until first used.
    streams: Vec<Option<CudaStream>>,
    events: Vec<Option<CudaEvent>>,
    /// Live allocations, address -> bytes asked for.
    live: HashMap<u64, u64>,
    counts: UpstreamCounts,
}

fn cuda(e: CudaError) -> UpstreamError {
    UpstreamError::Cuda(e.to_string())
}

impl CudaUpstream {
    /// Device `device_id`, serving `memory_type` (device, host-pinned or managed).
    pub fn new(device_id: u32, memory_type: MemoryType) -> Result<Self, CudaError> {
        if memory_type == MemoryType::Host {
            return Err(CudaError {
                call: "CudaUpstream::new",
                code: None,
                message: "memory_type = host is not CUDA memory (use a CpuPool)".into(),
            });
        }
        Ok(CudaUpstream {
            driver: CudaDriver::open(device_id)?,
            memory_type,
            streams: Vec::new(),
            events: Vec::new(),
            live: HashMap::new(),
            counts: UpstreamCounts::default(),
        })
    }

    /// The driver handle (for callers that need more than the pool does).
    pub fn driver(&self) -> &CudaDriver {
        &self.driver
    }

    fn stream(&mut self, id: StreamId) -> Result<&CudaStream, UpstreamError> {
        let i = id.0 as usize;
        if self.streams.len() <= i {
            self.streams.resize_with(i + 1, || None);
        }
        if self.streams[i].is_none() {
            let s = if i == 0 {
                self.driver.default_stream()
            } else {
                self.driver.create_stream().map_err(cuda)?
            };
            self.streams[i] = Some(s);
        }
        Ok(self.streams[i].as_ref().expect("just created"))
    }

    fn event(&mut self, id: StreamId) -> Result<&CudaEvent, UpstreamError> {
        let i = id.0 as usize;
        if self.events.len() <= i {
            self.events.resize_with(i + 1, || None);
        }
        if self.events[i].is_none() {
            self.events[i] = Some(self.driver.create_event().map_err(cuda)?);
        }
        Ok(self.events[i].as_ref().expect("just created"))
    }

    fn oom_or(&self, e: CudaError, bytes: u64) -> UpstreamError {
        if e.is_out_of_memory() {
            UpstreamError::OutOfMemory {
                requested_bytes: bytes,
                free_bytes: self.driver.mem_info().map_or(0, |(f, _)| f),
            }
        } else {
            cuda(e)
        }
    }
}

impl DeviceUpstream for CudaUpstream {
    fn describe(&self) -> String {
        let total = self.driver.mem_info().map_or(0, |(_, t)| t);
        format!(
            "CUDA device {} ({}, {}), {:?} memory",
            self.driver.ordinal(),
            self.driver.name(),
            human_bytes(total),
            self.memory_type
        )
    }

    fn memory_type(&self) -> MemoryType {
        self.memory_type
    }

    fn granularity_bytes(&self) -> u64 {
        CUDA_GRANULARITY_BYTES
    }

    fn device_id(&self) -> u32 {
        self.driver.ordinal()
    }

    fn set_device(&mut self, device_id: u32) -> Result<(), UpstreamError> {
        if !self.live.is_empty() {
            return Err(UpstreamError::Invalid(format!(
                "cannot switch to device {device_id}: {} allocation(s) still live",
                self.live.len()
            )));
        }
        let driver = CudaDriver::open(device_id).map_err(cuda)?;
        self.streams.clear();
        self.events.clear();
        self.driver = driver;
        Ok(())
    }

    fn alloc(&mut self, bytes: u64) -> Result<u64, UpstreamError> {
        let n = bytes as usize;
        let result = match self.memory_type {
            MemoryType::Device | MemoryType::Host => self.driver.malloc(n),
            MemoryType::HostPinned => self.driver.host_alloc_pinned(n).map(|p| p as usize as u64),
            MemoryType::Managed => self.driver.malloc_managed(n),
        };
        match result {
            Ok(addr) => {
                self.live.insert(addr, bytes);
                self.counts.alloc_calls += 1;
                self.counts.reserved_bytes += bytes;
                self.counts.peak_reserved_bytes = self
                    .counts
                    .peak_reserved_bytes
                    .max(self.counts.reserved_bytes);
                Ok(addr)
            }
            Err(e) => {
                self.counts.failed_allocs += 1;
                Err(self.oom_or(e, bytes))
            }
        }
    }

    fn free(&mut self, addr: u64, _bytes: u64) -> Result<(), UpstreamError> {
        let Some(bytes) = self.live.remove(&addr) else {
            return Err(UpstreamError::Invalid(format!(
                "free of {addr:#x}: not an allocation of this upstream"
            )));
        };
        self.counts.free_calls += 1;
        self.counts.reserved_bytes -= bytes;
        // SAFETY: `addr` is a live allocation of this upstream (checked above) made with the
        // matching call; the pool frees a range only when no block of it is in use.
        unsafe {
            match self.memory_type {
                MemoryType::HostPinned => self.driver.free_host(addr as usize as *mut u8),
                _ => self.driver.free(addr),
            }
        }
        .map_err(cuda)
    }

    fn mem_info(&self) -> Result<MemInfo, UpstreamError> {
        let (free_bytes, total_bytes) = self.driver.mem_info().map_err(cuda)?;
        Ok(MemInfo {
            free_bytes,
            total_bytes,
        })
    }

    fn counts(&self) -> UpstreamCounts {
        self.counts
    }

    fn record_event(&mut self, stream: StreamId) -> Result<(), UpstreamError> {
        self.stream(stream)?;
        self.event(stream)?;
        let (s, e) = (
            self.streams[stream.0 as usize].as_ref().expect("created"),
            self.events[stream.0 as usize].as_ref().expect("created"),
        );
        self.driver.record_event(e, s).map_err(cuda)?;
        self.counts.event_records += 1;
        Ok(())
    }

    fn wait_event(&mut self, waiter: StreamId, owner: StreamId) -> Result<(), UpstreamError> {
        self.stream(waiter)?;
        self.event(owner)?;
        let (s, e) = (
            self.streams[waiter.0 as usize].as_ref().expect("created"),
            self.events[owner.0 as usize].as_ref().expect("created"),
        );
        self.driver.stream_wait_event(s, e).map_err(cuda)?;
        self.counts.event_waits += 1;
        Ok(())
    }

    fn synchronize(&mut self) -> Result<(), UpstreamError> {
        self.driver.synchronize().map_err(cuda)
    }

    fn synchronize_stream(&mut self, stream: StreamId) -> Result<(), UpstreamError> {
        let driver = self.driver.clone();
        let s = self.stream(stream)?;
        driver.synchronize_stream(s).map_err(cuda)
    }

    fn fill(
        &mut self,
        addr: u64,
        bytes: u64,
        value: u8,
        stream: StreamId,
    ) -> Result<(), UpstreamError> {
        let driver = self.driver.clone();
        if self.memory_type == MemoryType::HostPinned {
            // Host memory: order after the stream's work, then write on the host.
            let s = self.stream(stream)?;
            driver.synchronize_stream(s).map_err(cuda)?;
            // SAFETY: the pool passes a range inside one of its blocks of this upstream's
            // pinned (host) memory; the stream's earlier work on it has completed.
            unsafe { std::ptr::write_bytes(addr as usize as *mut u8, value, bytes as usize) };
            return Ok(());
        }
        let s = self.stream(stream)?;
        // SAFETY: the pool passes a range inside one of its blocks of this device, which no
        // one else uses until the fill (ordered on `stream`) is done.
        unsafe { driver.memset_d8(addr, value, bytes as usize, Some(s)) }.map_err(cuda)
    }

    unsafe fn copy(
        &mut self,
        dst: u64,
        src: u64,
        bytes: u64,
        kind: CopyKind,
        stream: Option<StreamId>,
    ) -> Result<(), UpstreamError> {
        let driver = self.driver.clone();
        let n = bytes as usize;
        if self.memory_type == MemoryType::HostPinned {
            // Both sides are host memory: order after the stream's work, copy on the host.
            if let Some(id) = stream {
                let s = self.stream(id)?;
                driver.synchronize_stream(s).map_err(cuda)?;
            }
            // SAFETY: the caller guarantees both ranges valid for `bytes`; blocks of one pool
            // never overlap a caller's slice.
            unsafe { std::ptr::copy(src as usize as *const u8, dst as usize as *mut u8, n) };
            return Ok(());
        }
        let s = match stream {
            Some(id) => Some(self.stream(id)?),
            None => None,
        };
        // SAFETY: forwarded from the caller's contract (host ranges valid until completion,
        // device ranges live allocations of this device).
        unsafe {
            match kind {
                CopyKind::HostToDevice => driver.memcpy_htod(dst, src as usize as *const u8, n, s),
                CopyKind::DeviceToHost => driver.memcpy_dtoh(dst as usize as *mut u8, src, n, s),
                CopyKind::DeviceToDevice => driver.memcpy_dtod(dst, src, n, s),
            }
        }
        .map_err(cuda)
    }
}

impl Drop for CudaUpstream {
    fn drop(&mut self) {
        // Streams and events must go before the driver handle's context is released; the
        // fields drop in declaration order after this, but be explicit.
        self.events.clear();
        self.streams.clear();
    }
}
