//! `system`: the C library's `malloc`/`free`/`realloc`, and `posix_memalign` when the
//! trace asks for more alignment than `malloc` guarantees.
//!
//! Reserved bytes: the larger of two growths since the backend was created (after a
//! `malloc_trim(0)` that hands free heap pages back to the OS), both free of the harness's
//! own data (the engine allocates its pass workspace before the backend, nothing during
//! the pass):
//! - resident memory (`/proc/self/statm`): the pages malloc's heaps and mmapped blocks
//!   occupy, free space it holds included; but a page no one writes is not resident, and
//!   blocks landing in pages still resident from an earlier run count nothing;
//! - on glibc, bytes in chunks handed out (`mallinfo2()`: `uordblks + hblkhd`): every
//!   live block with its header and rounding, and the chunks parked in thread caches.
//!
//! Each is a lower bound of what malloc holds; `reserved_source` says `rss+mallinfo2`
//! (`rss` where there is no `mallinfo2`).
//!
//! `mallinfo2` walks every free chunk of every arena: with a fragmented heap one call
//! takes milliseconds (a trace with a million thread ids spent 49 s of a 56 s run in it).
//! So its cost is measured at each call, and the next call waits until `MALLINFO_SHARE`
//! times that cost has passed; samples in between reuse its last figure. Its share of the
//! run stays under 1/`MALLINFO_SHARE` whatever the heap; a cheap call (microseconds, the
//! usual case) is still made at every sample. RSS, a cheap read, is taken at every sample.

use super::{BackendFactory, BackendSetup};
use crate::backends::Backend;
use libc::c_void;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// `mallinfo2` is called again only after this many times its last cost has passed.
pub const MALLINFO_SHARE: u64 = 50;

/// Alignment `malloc` guarantees (16 on 64-bit glibc and musl).
const MALLOC_ALIGN: usize = 2 * std::mem::size_of::<usize>();

#[derive(Debug)]
pub struct SystemBackend {
    baseline_rss_bytes: u64,
    baseline_in_use_bytes: u64,
    /// Time origin of the two fields below.
    created: Instant,
    /// When `mallinfo2` may be called again (ns after `created`): its last call's end
    /// plus `MALLINFO_SHARE` times that call's duration.
    next_mallinfo_ns: AtomicU64,
    /// `mallinfo2`'s growth at its last call.
    last_in_use_bytes: AtomicU64,
}

impl SystemBackend {
    pub fn new() -> Self {
        trim();
        SystemBackend {
            baseline_rss_bytes: crate::machine::rss_bytes().unwrap_or(0),
            baseline_in_use_bytes: in_use_bytes().unwrap_or(0),
            created: Instant::now(),
            next_mallinfo_ns: AtomicU64::new(0),
            last_in_use_bytes: AtomicU64::new(0),
        }
    }
}

impl Default for SystemBackend {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: `malloc_trim` has no preconditions; it only returns free heap memory.
    unsafe { libc::malloc_trim(0) };
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

/// Bytes in chunks malloc has handed out, over every arena, mmapped blocks included.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn in_use_bytes() -> Option<u64> {
    // SAFETY: `mallinfo2` has no preconditions and returns a plain struct by value.
    let info = unsafe { libc::mallinfo2() };
    Some((info.uordblks + info.hblkhd) as u64)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn in_use_bytes() -> Option<u64> {
    None
}

/// `reserved_source` of this backend.
const RESERVED_SOURCE: &str = if cfg!(all(target_os = "linux", target_env = "gnu")) {
    "rss+mallinfo2"
} else {
    "rss"
};

fn aligned_alloc(size: usize, align: usize) -> usize {
    let mut out: *mut c_void = std::ptr::null_mut();
    let align = align.max(std::mem::size_of::<usize>());
    // SAFETY: `out` is a valid place for the result; `align` is a power of two (traces
    // carry powers of two, raised here to a multiple of `sizeof(void*)`).
    let rc = unsafe { libc::posix_memalign(&mut out, align, size) };
    if rc == 0 {
        out as usize
    } else {
        0
    }
}

impl Backend for SystemBackend {
    #[inline]
    fn alloc(&self, size: usize, align: usize, _stream: u16) -> usize {
        if align <= MALLOC_ALIGN {
            // SAFETY: `malloc` has no preconditions.
            unsafe { libc::malloc(size) as usize }
        } else {
            aligned_alloc(size, align)
        }
    }

    #[inline]
    unsafe fn free(&self, addr: usize, _size: usize, _stream: u16) {
        // SAFETY: the engine frees only addresses this backend returned, once each.
        unsafe { libc::free(addr as *mut c_void) }
    }

    #[inline]
    unsafe fn realloc(
        &self,
        addr: usize,
        old_size: usize,
        new_size: usize,
        align: usize,
        stream: u16,
    ) -> usize {
        // glibc's `realloc(p, 0)` frees `p` and returns NULL, which the engine would read as
        // a failure that kept `p` live (and free it again): ask for one byte instead.
        let new_size = new_size.max(1);
        if align <= MALLOC_ALIGN {
            // SAFETY: `addr` is 0 or a live block of this backend, which `realloc` takes over.
            return unsafe { libc::realloc(addr as *mut c_void, new_size) as usize };
        }
        // `realloc` keeps only malloc's alignment: move by hand.
        let new = aligned_alloc(new_size, align);
        if new != 0 && addr != 0 {
            // SAFETY: both are live, distinct host blocks of at least the bytes copied.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    addr as *const u8,
                    new as *mut u8,
                    old_size.min(new_size),
                )
            };
            // SAFETY: the caller's contract: addr is a live block of this backend, and
            // it is not used after this move.
            unsafe { self.free(addr, old_size, stream) };
        }
        new
    }

    fn reserved_bytes(&self) -> Option<u64> {
        let rss =
            crate::machine::rss_bytes().map(|now| now.saturating_sub(self.baseline_rss_bytes));
        let in_use = self.sampled_in_use_bytes();
        match (rss, in_use) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0).max(b.unwrap_or(0))),
        }
    }
}

impl SystemBackend {
    /// `mallinfo2`'s growth since creation: fresh unless the last call was too recent
    /// for its cost (see the module doc), else the last fresh figure.
    fn sampled_in_use_bytes(&self) -> Option<u64> {
        if !cfg!(all(target_os = "linux", target_env = "gnu")) {
            return None;
        }
        let elapsed_ns = |at: Instant| at.duration_since(self.created).as_nanos() as u64;
        let started = Instant::now();
        if elapsed_ns(started) < self.next_mallinfo_ns.load(Ordering::Relaxed) {
            return Some(self.last_in_use_bytes.load(Ordering::Relaxed));
        }
        let grown = in_use_bytes()?.saturating_sub(self.baseline_in_use_bytes);
        let ended = Instant::now();
        let cost_ns = elapsed_ns(ended) - elapsed_ns(started);
        self.last_in_use_bytes.store(grown, Ordering::Relaxed);
        self.next_mallinfo_ns.store(
            elapsed_ns(ended).saturating_add(cost_ns.saturating_mul(MALLINFO_SHARE)),
            Ordering::Relaxed,
        );
        Some(grown)
    }
}

pub struct SystemFactory;

impl BackendFactory for SystemFactory {
    type Backend = SystemBackend;

    fn name(&self) -> &'static str {
        "system"
    }

    fn description(&self) -> &'static str {
        "the C library's malloc/free/realloc (posix_memalign for large alignments)"
    }

    fn create(&self, _setup: &BackendSetup) -> Result<SystemBackend, String> {
        Ok(SystemBackend::new())
    }

    fn reserved_source(&self) -> &'static str {
        RESERVED_SOURCE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_requests_are_aligned_and_realloc_keeps_bytes() {
        let b = SystemBackend::new();
        let a = b.alloc(100, 4096, 0);
        assert!(a != 0 && a.is_multiple_of(4096));
        // SAFETY: `a` is a live 100-byte host block.
        unsafe { std::ptr::write_bytes(a as *mut u8, 7, 100) };
        // SAFETY: `a` is a live 100-byte block of `b`.
        let r = unsafe { b.realloc(a, 100, 10_000, 4096, 0) };
        assert!(r != 0 && r.is_multiple_of(4096));
        // SAFETY: `r` is a live block of 10 000 bytes whose first 100 were copied.
        let first = unsafe { std::slice::from_raw_parts(r as *const u8, 100) };
        assert!(first.iter().all(|&x| x == 7));
        // SAFETY: `r` is a live block of `b`, freed once.
        unsafe { b.free(r, 10_000, 0) };
    }

    #[test]
    fn mallinfo2_waits_for_its_cost_and_its_figure_is_reused_meanwhile() {
        let _serial = crate::machine::MEMORY_TEST_LOCK
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let b = SystemBackend::new();
        // As if the last call had been very slow: the next samples reuse its figure.
        b.last_in_use_bytes.store(12_345, Ordering::Relaxed);
        b.next_mallinfo_ns.store(u64::MAX, Ordering::Relaxed);
        for _ in 0..10 {
            assert_eq!(b.sampled_in_use_bytes(), in_use_bytes().map(|_| 12_345));
        }
        // Once its time has come, the call is fresh and sets the next wait.
        b.next_mallinfo_ns.store(0, Ordering::Relaxed);
        let live: Vec<usize> = (0..16).map(|_| b.alloc(1 << 20, 0, 0)).collect();
        let fresh = b.sampled_in_use_bytes();
        if cfg!(all(target_os = "linux", target_env = "gnu")) {
            assert!(fresh.unwrap() >= 16 << 20, "{fresh:?}");
            assert!(b.next_mallinfo_ns.load(Ordering::Relaxed) > 0);
        }
        for p in live {
            // SAFETY: each block is a live block of `b`, freed once.
            unsafe { b.free(p, 1 << 20, 0) };
        }
    }

    #[test]
    fn reserved_bytes_grow_with_live_memory() {
        let _serial = crate::machine::MEMORY_TEST_LOCK
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let b = SystemBackend::new();
        let blocks: Vec<usize> = (0..64).map(|_| b.alloc(64 * 1024, 0, 0)).collect();
        for &p in &blocks {
            // SAFETY: each block is a live 64 KiB host block.
            unsafe { std::ptr::write_bytes(p as *mut u8, 1, 64 * 1024) };
        }
        let reserved = b.reserved_bytes().unwrap();
        for p in blocks {
            // SAFETY: each block is a live block of `b`, freed once.
            unsafe { b.free(p, 64 * 1024, 0) };
        }
        assert!(reserved >= 2 * 1024 * 1024, "reserved {reserved}");
    }
}
