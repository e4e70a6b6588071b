//! `SimulatedDevice`: a device of any capacity made of address ranges only.
//!
//! It reproduces what a trace recorded on an 80 GB GPU does to the device allocator
//! (out-of-memory points, fragmentation, the number of upstream calls) on a machine with no
//! GPU. Nothing is behind the addresses: they are never dereferenced, copies between host
//! and device are refused (there is nothing to read back), device-to-device copies and fills
//! only check their ranges.
//!
//! Placement models `cudaMalloc`: every range is rounded up to the granularity (512 B by
//! default, the granularity `cudaMalloc` shows for small requests; use
//! [`SimulatedDevice::with_granularity`] with 2 MiB to model physical page granularity),
//! taken best-fit (lowest address among equal sizes) from an address-ordered free map that
//! coalesces on free. Both operations are `O(log n)` in the number of free ranges. Like
//! `cudaFree`, `free` synchronises the device (every stream is then ordered after all work).
//!
//! Streams and events are logical: recorded events and waits are counted, and each stream
//! carries a vector clock (its own component advances at every recorded event, a wait takes
//! the element-wise maximum with the event's snapshot), so
//! [`SimulatedDevice::ordered_after`] tells whether a stream's work is ordered after a given
//! point of another stream — transitively, as on a real device. Tests use it to prove that a
//! pool never hands a block to a stream before that stream is ordered after the block's free.

use super::upstream::{CopyKind, DeviceUpstream, MemInfo, UpstreamCounts, UpstreamError};
use super::StreamId;
use crate::config::{human_bytes, MemoryType};
use std::collections::{BTreeMap, BTreeSet};

/// First simulated address: high, 2 MiB aligned and far from 0 like real device addresses.
const BASE_ADDR: u64 = 0x7000_0000_0000;

/// Default rounding and alignment of every simulated allocation.
pub const SIMULATED_GRANULARITY_BYTES: u64 = 512;

/// A device of `capacity_bytes` made of address ranges only. See the module docs.
#[derive(Debug)]
pub struct SimulatedDevice {
    capacity_bytes: u64,
    granularity_bytes: u64,
    memory_type: MemoryType,
    device_id: u32,
    device_count: u32,
    /// Free ranges, start -> length. Invariant: ranges are disjoint, non-adjacent (adjacent
    /// ranges are merged at once) and inside `[BASE_ADDR, BASE_ADDR + capacity_bytes)`.
    free_by_addr: BTreeMap<u64, u64>,
    /// The same ranges as `(length, start)`: the best-fit index. Invariant: holds exactly
    /// the entries of `free_by_addr`.
    free_by_size: BTreeSet<(u64, u64)>,
    /// Live ranges, start -> rounded length.
    live: BTreeMap<u64, u64>,
    counts: UpstreamCounts,
    /// `clocks[t][s]`: the latest epoch of stream `s` that work on stream `t` is ordered
    /// after. Invariant: `clocks[s][s]` is the number of events recorded on `s`.
    clocks: Vec<Vec<u64>>,
    /// `events[s]`: snapshot of `clocks[s]` when `s` last recorded its event.
    events: Vec<Vec<u64>>,
    /// Every stream's position at the last device-wide synchronisation: the clock of a
    /// stream first seen later starts here.
    synced: Vec<u64>,
}

impl SimulatedDevice {
    /// A device with `capacity_bytes` (rounded down to the granularity) of device memory.
    pub fn new(capacity_bytes: u64) -> Self {
        let mut device = SimulatedDevice {
            capacity_bytes: 0,
            granularity_bytes: SIMULATED_GRANULARITY_BYTES,
            memory_type: MemoryType::Device,
            device_id: 0,
            device_count: 1,
            free_by_addr: BTreeMap::new(),
            free_by_size: BTreeSet::new(),
            live: BTreeMap::new(),
            counts: UpstreamCounts::default(),
            clocks: Vec::new(),
            events: Vec::new(),
            synced: Vec::new(),
        };
        device.reformat(capacity_bytes);
        device
    }

    /// Round and align to `granularity_bytes` (a power of two, at least 256) instead of 512 B.
    /// Drops anything allocated so far: call it right after `new`.
    pub fn with_granularity(mut self, granularity_bytes: u64) -> Self {
        assert!(
            granularity_bytes.is_power_of_two() && granularity_bytes >= 256,
            "granularity must be a power of two >= 256, got {granularity_bytes}"
        );
        self.granularity_bytes = granularity_bytes;
        let capacity = self.capacity_bytes;
        self.reformat(capacity);
        self
    }

    /// Label the ranges as pinned host or managed memory instead of device memory.
    pub fn with_memory_type(mut self, memory_type: MemoryType) -> Self {
        self.memory_type = memory_type;
        self
    }

    /// Simulate `device_count` devices of the same capacity (ordinals `0..device_count`).
    pub fn with_device_count(mut self, device_count: u32) -> Self {
        self.device_count = device_count.max(1);
        self
    }

    /// Usable capacity (the requested one rounded down to the granularity).
    pub fn capacity_bytes(&self) -> u64 {
        self.capacity_bytes
    }

    /// The largest range an `alloc` could return now.
    pub fn largest_free_bytes(&self) -> u64 {
        self.free_by_size.last().map_or(0, |&(len, _)| len)
    }

    /// Number of free ranges (1 on an empty device: fragmentation shows as more).
    pub fn free_range_count(&self) -> usize {
        self.free_by_addr.len()
    }

    /// Events recorded on `stream` so far: the epoch of its latest event. The free that
    /// recorded it is "point `epoch` of `stream`".
    pub fn epoch(&self, stream: StreamId) -> u64 {
        self.clocks
            .get(stream.0 as usize)
            .map_or(0, |c| c.get(stream.0 as usize).copied().unwrap_or(0))
    }

    /// Whether work issued on `waiter` from now on is ordered after point `epoch` of `owner`
    /// (always for the same stream: a stream is ordered by itself).
    pub fn ordered_after(&self, waiter: StreamId, owner: StreamId, epoch: u64) -> bool {
        let row = self.clocks.get(waiter.0 as usize).unwrap_or(&self.synced);
        waiter == owner || row.get(owner.0 as usize).copied().unwrap_or(0) >= epoch
    }

    /// Grow the clock tables to cover `stream`.
    fn ensure_stream(&mut self, stream: StreamId) {
        let n = stream.0 as usize + 1;
        if self.clocks.len() < n {
            let synced = self.synced.clone();
            self.clocks.resize_with(n, || synced.clone());
            self.events.resize_with(n, Vec::new);
        }
        let width = self.clocks.len();
        for row in self.clocks.iter_mut().chain(self.events.iter_mut()) {
            if row.len() < width {
                row.resize(width, 0);
            }
        }
    }

    fn reformat(&mut self, capacity_bytes: u64) {
        let g = self.granularity_bytes;
        self.capacity_bytes = capacity_bytes / g * g;
        self.free_by_addr.clear();
        self.free_by_size.clear();
        self.live.clear();
        if self.capacity_bytes > 0 {
            self.insert_free(BASE_ADDR, self.capacity_bytes);
        }
    }

    fn insert_free(&mut self, start: u64, len: u64) {
        self.free_by_addr.insert(start, len);
        self.free_by_size.insert((len, start));
    }

    fn remove_free(&mut self, start: u64, len: u64) {
        self.free_by_addr.remove(&start);
        self.free_by_size.remove(&(len, start));
    }
}

impl DeviceUpstream for SimulatedDevice {
    fn describe(&self) -> String {
        format!(
            "simulated device {}, {} ({} granularity)",
            self.device_id,
            human_bytes(self.capacity_bytes),
            human_bytes(self.granularity_bytes)
        )
    }

    fn memory_type(&self) -> MemoryType {
        self.memory_type
    }

    fn granularity_bytes(&self) -> u64 {
        self.granularity_bytes
    }

    fn device_id(&self) -> u32 {
        self.device_id
    }

    fn set_device(&mut self, device_id: u32) -> Result<(), UpstreamError> {
        if device_id >= self.device_count {
            return Err(UpstreamError::Invalid(format!(
                "device {device_id} does not exist: the simulation has {} device(s)",
                self.device_count
            )));
        }
        if !self.live.is_empty() {
            return Err(UpstreamError::Invalid(format!(
                "cannot switch to device {device_id}: {} range(s) still allocated on device {}",
                self.live.len(),
                self.device_id
            )));
        }
        self.device_id = device_id;
        Ok(())
    }

    fn alloc(&mut self, bytes: u64) -> Result<u64, UpstreamError> {
        let g = self.granularity_bytes;
        let oom = |this: &mut Self| {
            this.counts.failed_allocs += 1;
            Err(UpstreamError::OutOfMemory {
                requested_bytes: bytes,
                free_bytes: this.capacity_bytes - this.counts.reserved_bytes,
            })
        };
        let Some(len) = bytes.max(1).checked_next_multiple_of(g) else {
            return oom(self);
        };
        let Some(&(free_len, start)) = self.free_by_size.range((len, 0)..).next() else {
            return oom(self);
        };
        self.remove_free(start, free_len);
        if free_len > len {
            self.insert_free(start + len, free_len - len);
        }
        self.live.insert(start, len);
        self.counts.alloc_calls += 1;
        self.counts.reserved_bytes += len;
        self.counts.peak_reserved_bytes = self
            .counts
            .peak_reserved_bytes
            .max(self.counts.reserved_bytes);
        Ok(start)
    }

    fn free(&mut self, addr: u64, bytes: u64) -> Result<(), UpstreamError> {
        let Some(&len) = self.live.get(&addr) else {
            return Err(UpstreamError::Invalid(format!(
                "free of {addr:#x}: not an allocation of this simulated device"
            )));
        };
        let expected = bytes.max(1).next_multiple_of(self.granularity_bytes);
        if expected != len {
            return Err(UpstreamError::Invalid(format!(
                "free of {addr:#x} with {bytes} bytes: it was allocated with {len} bytes (rounded)"
            )));
        }
        self.live.remove(&addr);
        // `cudaFree` synchronises the device before it returns the range; so does this.
        self.synchronize()?;
        self.counts.free_calls += 1;
        self.counts.reserved_bytes -= len;
        let (mut start, mut end) = (addr, addr + len);
        if let Some((&prev, &prev_len)) = self.free_by_addr.range(..addr).next_back() {
            if prev + prev_len == start {
                self.remove_free(prev, prev_len);
                start = prev;
            }
        }
        if let Some(&next_len) = self.free_by_addr.get(&end) {
            self.remove_free(end, next_len);
            end += next_len;
        }
        self.insert_free(start, end - start);
        Ok(())
    }

    fn mem_info(&self) -> Result<MemInfo, UpstreamError> {
        Ok(MemInfo {
            free_bytes: self.capacity_bytes - self.counts.reserved_bytes,
            total_bytes: self.capacity_bytes,
        })
    }

    fn counts(&self) -> UpstreamCounts {
        self.counts
    }

    fn record_event(&mut self, stream: StreamId) -> Result<(), UpstreamError> {
        self.ensure_stream(stream);
        let i = stream.0 as usize;
        self.clocks[i][i] += 1;
        self.events[i].clone_from(&self.clocks[i]);
        self.counts.event_records += 1;
        Ok(())
    }

    fn wait_event(&mut self, waiter: StreamId, owner: StreamId) -> Result<(), UpstreamError> {
        self.ensure_stream(waiter.max(owner));
        let (w, o) = (waiter.0 as usize, owner.0 as usize);
        for k in 0..self.clocks.len() {
            let seen = self.events[o][k];
            if self.clocks[w][k] < seen {
                self.clocks[w][k] = seen;
            }
        }
        self.counts.event_waits += 1;
        Ok(())
    }

    fn synchronize(&mut self) -> Result<(), UpstreamError> {
        // After a device-wide synchronisation every stream is ordered after all work so far.
        let n = self.clocks.len();
        let all: Vec<u64> = (0..n)
            .map(|k| self.clocks.iter().map(|c| c[k]).max().unwrap_or(0))
            .collect();
        for clock in &mut self.clocks {
            clock.clone_from(&all);
        }
        self.synced = all;
        Ok(())
    }

    fn synchronize_stream(&mut self, _stream: StreamId) -> Result<(), UpstreamError> {
        // Logical streams have no pending work for the host to wait on.
        Ok(())
    }

    fn fill(
        &mut self,
        addr: u64,
        bytes: u64,
        _value: u8,
        _stream: StreamId,
    ) -> Result<(), UpstreamError> {
        // No bytes exist to be written; check the range so that a bad fill still fails.
        let inside = self
            .live
            .range(..=addr)
            .next_back()
            .is_some_and(|(&start, &len)| addr.saturating_add(bytes) <= start + len);
        if inside {
            Ok(())
        } else {
            Err(UpstreamError::Invalid(format!(
                "fill of {bytes} bytes at {addr:#x}: not inside a live simulated range"
            )))
        }
    }

    unsafe fn copy(
        &mut self,
        dst: u64,
        src: u64,
        bytes: u64,
        kind: CopyKind,
        _stream: Option<StreamId>,
    ) -> Result<(), UpstreamError> {
        if kind == CopyKind::DeviceToDevice {
            // Simulated ranges have no content, so a device-to-device copy has nothing to
            // move (it keeps "no content"); it still fails on ranges that are not live.
            for (addr, what) in [(dst, "destination"), (src, "source")] {
                let inside = self
                    .live
                    .range(..=addr)
                    .next_back()
                    .is_some_and(|(&start, &len)| addr.saturating_add(bytes) <= start + len);
                if !inside {
                    return Err(UpstreamError::Invalid(format!(
                        "copy {what} {addr:#x}+{bytes} is not inside a live simulated range"
                    )));
                }
            }
            return Ok(());
        }
        Err(UpstreamError::Invalid(format!(
            "{kind:?} copy of {bytes} bytes: the simulated device has address ranges only, no \
             memory behind them (copies need a CUDA device)"
        )))
    }
}
