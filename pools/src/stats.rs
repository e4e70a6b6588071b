//! `MemoryStats`: a plain struct of counters (the snapshot) and `StatsCounters`, the atomics
//! a pool updates on its paths.

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A snapshot of a pool's counters. Block byte figures (`total_allocated_bytes`,
/// `*_used_bytes`) are usable sizes of the blocks handed out (at least what the caller
/// asked for: the size class or block size that served it); `*reserved_bytes` are bytes
/// taken from the upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryStats {
    /// Sum of the usable sizes of every successful allocation ever made.
    pub total_allocated_bytes: u64,
    /// Sum of the usable sizes of the blocks live now.
    pub current_used_bytes: u64,
    /// Highest `current_used_bytes` seen.
    pub peak_used_bytes: u64,
    /// Bytes taken from the upstream (OS or device) and not yet returned.
    pub reserved_bytes: u64,
    /// Highest `reserved_bytes` seen.
    pub peak_reserved_bytes: u64,
    pub allocation_count: u64,
    pub free_count: u64,
    /// Allocations that returned an error (out of memory or invalid request).
    pub failure_count: u64,
    /// Allocations served by the large-object path (above the largest size class).
    pub large_object_count: u64,
    /// Number of chunk (upstream) allocations made.
    pub chunk_count: u64,
}

impl MemoryStats {
    /// Live blocks now.
    pub fn live_count(&self) -> u64 {
        self.allocation_count.saturating_sub(self.free_count)
    }

    /// `1 - used / reserved` now (0 when nothing is reserved).
    pub fn fragmentation(&self) -> f64 {
        if self.reserved_bytes == 0 {
            0.0
        } else {
            1.0 - self.current_used_bytes as f64 / self.reserved_bytes as f64
        }
    }

    /// Sum of several pools' stats (for `PoolManager::aggregate_stats`).
    pub fn merge(&mut self, other: &MemoryStats) {
        self.total_allocated_bytes += other.total_allocated_bytes;
        self.current_used_bytes += other.current_used_bytes;
        self.peak_used_bytes += other.peak_used_bytes;
        self.reserved_bytes += other.reserved_bytes;
        self.peak_reserved_bytes += other.peak_reserved_bytes;
        self.allocation_count += other.allocation_count;
        self.free_count += other.free_count;
        self.failure_count += other.failure_count;
        self.large_object_count += other.large_object_count;
        self.chunk_count += other.chunk_count;
    }
}

/// The atomics behind `MemoryStats`. Relaxed ordering throughout: counters are statistics,
/// not synchronisation, and a snapshot taken while other threads run is approximate.
#[derive(Debug, Default)]
pub struct StatsCounters {
    total_allocated_bytes: AtomicU64,
    current_used_bytes: AtomicU64,
    peak_used_bytes: AtomicU64,
    reserved_bytes: AtomicU64,
    peak_reserved_bytes: AtomicU64,
    allocation_count: AtomicU64,
    free_count: AtomicU64,
    failure_count: AtomicU64,
    large_object_count: AtomicU64,
    chunk_count: AtomicU64,
}

impl StatsCounters {
    pub fn new() -> Self {
        Self::default()
    }

    #[inline]
    pub fn on_alloc(&self, size_bytes: usize) {
        let size = size_bytes as u64;
        self.total_allocated_bytes.fetch_add(size, Relaxed);
        self.allocation_count.fetch_add(1, Relaxed);
        let now = self.current_used_bytes.fetch_add(size, Relaxed) + size;
        if now > self.peak_used_bytes.load(Relaxed) {
            self.peak_used_bytes.fetch_max(now, Relaxed);
        }
    }

    #[inline]
    pub fn on_free(&self, size_bytes: usize) {
        self.free_count.fetch_add(1, Relaxed);
        self.current_used_bytes
            .fetch_sub(size_bytes as u64, Relaxed);
    }

    /// `on_alloc` for a caller that serialises every writer of these counters (a pool
    /// updating them only while holding its lock): plain loads and stores instead of
    /// read-modify-writes, which are most of the cost of a pool's fast path. Readers
    /// (`snapshot`) may run concurrently.
    #[inline]
    pub fn on_alloc_serialized(&self, size_bytes: usize) {
        let size = size_bytes as u64;
        let add = |c: &AtomicU64, v: u64| c.store(c.load(Relaxed) + v, Relaxed);
        add(&self.total_allocated_bytes, size);
        add(&self.allocation_count, 1);
        add(&self.current_used_bytes, size);
        let now = self.current_used_bytes.load(Relaxed);
        if now > self.peak_used_bytes.load(Relaxed) {
            self.peak_used_bytes.store(now, Relaxed);
        }
    }

    /// `on_free` for a caller that serialises every writer (see `on_alloc_serialized`).
    #[inline]
    pub fn on_free_serialized(&self, size_bytes: usize) {
        self.free_count
            .store(self.free_count.load(Relaxed) + 1, Relaxed);
        self.current_used_bytes.store(
            self.current_used_bytes
                .load(Relaxed)
                .saturating_sub(size_bytes as u64),
            Relaxed,
        );
    }

    #[inline]
    pub fn on_failure(&self) {
        self.failure_count.fetch_add(1, Relaxed);
    }

    #[inline]
    pub fn on_large_object(&self) {
        self.large_object_count.fetch_add(1, Relaxed);
    }

    /// A chunk of `bytes` was taken from the upstream.
    pub fn on_reserve(&self, bytes: usize) {
        self.chunk_count.fetch_add(1, Relaxed);
        let now = self.reserved_bytes.fetch_add(bytes as u64, Relaxed) + bytes as u64;
        self.peak_reserved_bytes.fetch_max(now, Relaxed);
    }

    /// A chunk of `bytes` went back to the upstream.
    pub fn on_release(&self, bytes: usize) {
        self.reserved_bytes.fetch_sub(bytes as u64, Relaxed);
    }

    /// Every block was released at once by `reset()`.
    pub fn on_reset(&self) {
        let live = self.allocation_count.load(Relaxed) - self.free_count.load(Relaxed);
        self.free_count.fetch_add(live, Relaxed);
        self.current_used_bytes.store(0, Relaxed);
    }

    pub fn snapshot(&self) -> MemoryStats {
        MemoryStats {
            total_allocated_bytes: self.total_allocated_bytes.load(Relaxed),
            current_used_bytes: self.current_used_bytes.load(Relaxed),
            peak_used_bytes: self.peak_used_bytes.load(Relaxed),
            reserved_bytes: self.reserved_bytes.load(Relaxed),
            peak_reserved_bytes: self.peak_reserved_bytes.load(Relaxed),
            allocation_count: self.allocation_count.load(Relaxed),
            free_count: self.free_count.load(Relaxed),
            failure_count: self.failure_count.load(Relaxed),
            large_object_count: self.large_object_count.load(Relaxed),
            chunk_count: self.chunk_count.load(Relaxed),
        }
    }
}
