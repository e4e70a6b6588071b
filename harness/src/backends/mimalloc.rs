//! `mimalloc`: mimalloc's own entry points (`mi_malloc`, `mi_malloc_aligned`, `mi_realloc`,
//! `mi_realloc_aligned`, `mi_free`) called directly; it is not the process's global
//! allocator, so nothing but this backend allocates from it.
//!
//! Reserved bytes: `current_commit` of `mi_process_info` (mimalloc's own statistics: bytes
//! it has committed from the OS, over every thread). Since only this backend uses mimalloc,
//! that is the backend's footprint; memory an earlier run left committed is reused first,
//! and `mi_collect(true)` at creation returns what it can.

use super::{BackendFactory, BackendSetup};
use crate::backends::Backend;
use libc::c_void;
use libmimalloc_sys as mi;

/// Alignment `mi_malloc` guarantees (`MI_MAX_ALIGN_SIZE`).
const MI_MALLOC_ALIGN: usize = 16;

#[derive(Debug)]
pub struct MimallocBackend;

impl MimallocBackend {
    pub fn new() -> Self {
        // SAFETY: `mi_collect` has no preconditions.
        unsafe { mi::mi_collect(true) };
        MimallocBackend
    }
}

impl Default for MimallocBackend {
    fn default() -> Self {
        Self::new()
    }
}

/// mimalloc's committed bytes now.
fn committed_bytes() -> u64 {
    let mut elapsed = 0usize;
    let mut user = 0usize;
    let mut system = 0usize;
    let mut current_rss = 0usize;
    let mut peak_rss = 0usize;
    let mut current_commit = 0usize;
    let mut peak_commit = 0usize;
    let mut page_faults = 0usize;
    // SAFETY: every argument points to a live, writable `usize`.
    unsafe {
        mi::mi_process_info(
            &mut elapsed,
            &mut user,
            &mut system,
            &mut current_rss,
            &mut peak_rss,
            &mut current_commit,
            &mut peak_commit,
            &mut page_faults,
        )
    };
    current_commit as u64
}

impl Backend for MimallocBackend {
    #[inline]
    fn alloc(&self, size: usize, align: usize, _stream: u16) -> usize {
        if align <= MI_MALLOC_ALIGN {
            // SAFETY: `mi_malloc` has no preconditions.
            unsafe { mi::mi_malloc(size) as usize }
        } else {
            // SAFETY: `align` is a power of two (traces carry powers of two).
            unsafe { mi::mi_malloc_aligned(size, align) as usize }
        }
    }

    #[inline]
    unsafe fn free(&self, addr: usize, _size: usize, _stream: u16) {
        // SAFETY: the engine frees only addresses this backend returned, once each.
        unsafe { mi::mi_free(addr as *mut c_void) }
    }

    #[inline]
    unsafe fn realloc(
        &self,
        addr: usize,
        _old_size: usize,
        new_size: usize,
        align: usize,
        _stream: u16,
    ) -> usize {
        // A zero-size realloc must not free the block behind the engine's back (C leaves
        // `realloc(p, 0)` implementation-defined): ask for one byte.
        let new_size = new_size.max(1);
        if align <= MI_MALLOC_ALIGN {
            // SAFETY: `addr` is 0 or a live block of this backend, which mimalloc takes over.
            unsafe { mi::mi_realloc(addr as *mut c_void, new_size) as usize }
        } else {
            // SAFETY: as above; `align` is a power of two.
            unsafe { mi::mi_realloc_aligned(addr as *mut c_void, new_size, align) as usize }
        }
    }

    fn reserved_bytes(&self) -> Option<u64> {
        Some(committed_bytes())
    }
}

pub struct MimallocFactory;

impl BackendFactory for MimallocFactory {
    type Backend = MimallocBackend;

    fn name(&self) -> &'static str {
        "mimalloc"
    }

    fn description(&self) -> &'static str {
        "mimalloc (mi_malloc/mi_free/mi_realloc called directly)"
    }

    fn create(&self, _setup: &BackendSetup) -> Result<MimallocBackend, String> {
        Ok(MimallocBackend::new())
    }

    fn reserved_source(&self) -> &'static str {
        "mimalloc-stats"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_bytes_cover_live_blocks() {
        let _serial = crate::machine::MEMORY_TEST_LOCK
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let b = MimallocBackend::new();
        let blocks: Vec<usize> = (0..32).map(|_| b.alloc(1 << 20, 0, 0)).collect();
        for &p in &blocks {
            // SAFETY: each block is a live 1 MiB host block.
            unsafe { std::ptr::write_bytes(p as *mut u8, 1, 1 << 20) };
        }
        let reserved = b.reserved_bytes().unwrap();
        let aligned = b.alloc(10, 4096, 0);
        assert_eq!(aligned % 4096, 0);
        // SAFETY: `aligned` and every entry of `blocks` are live blocks of `b`, freed once.
        unsafe {
            b.free(aligned, 10, 0);
            for p in blocks {
                b.free(p, 1 << 20, 0);
            }
        }
        assert!(reserved >= 32 << 20, "mimalloc committed {reserved} bytes");
    }
}
