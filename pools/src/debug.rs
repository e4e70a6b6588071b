//! Debug checks of CPU pools: live-allocation tracking, leak reports, poison fill.
//!
//! Pointer validation itself is `Strategy::block_state` (no heap needed); this module adds
//! the map of live blocks that `debug.track_live` asks for. The map lives on the Rust
//! global heap, so a pool that *is* the global allocator cannot track (see
//! `adapters::PoolGlobalAlloc`).

use crate::config::POISON_BYTE;
use std::collections::HashMap;
use std::ptr::NonNull;
use std::sync::Mutex;

/// Live blocks of a pool: address -> requested size in bytes.
#[derive(Debug, Default)]
pub struct LiveTracker {
    /// Invariant: holds exactly the blocks handed out and not yet freed (or reset).
    live: Mutex<HashMap<usize, usize>>,
}

impl LiveTracker {
    pub fn new() -> Self {
        Self::default()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<usize, usize>> {
        // A panic while holding the lock leaves the map consistent (single inserts and
        // removes), so poisoning is not a reason to stop tracking.
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn on_alloc(&self, addr: usize, size_bytes: usize) {
        self.map().insert(addr, size_bytes);
    }

    /// Forget a block; `None` when it was not live (double free or foreign pointer).
    pub fn on_free(&self, addr: usize) -> Option<usize> {
        self.map().remove(&addr)
    }

    /// The requested size of a live block.
    pub fn size_of(&self, addr: usize) -> Option<usize> {
        self.map().get(&addr).copied()
    }

    pub fn clear(&self) {
        self.map().clear();
    }

    /// `(address, requested size)` of every live block, sorted by address.
    pub fn live_blocks(&self) -> Vec<(usize, usize)> {
        let mut blocks: Vec<(usize, usize)> = self.map().iter().map(|(&a, &s)| (a, s)).collect();
        blocks.sort_unstable();
        blocks
    }
}

/// A human-readable leak report, or `None` when nothing leaked.
pub fn format_leak_report(pool_name: &str, leaks: &[(usize, usize)]) -> Option<String> {
    if leaks.is_empty() {
        return None;
    }
    const SHOWN: usize = 20;
    let total_bytes: usize = leaks.iter().map(|&(_, size)| size).sum();
    let mut report = format!(
        "pool '{pool_name}': {} leaked block(s), {total_bytes} bytes:\n",
        leaks.len()
    );
    for &(addr, size) in leaks.iter().take(SHOWN) {
        report.push_str(&format!("  {addr:#x}: {size} bytes\n"));
    }
    if leaks.len() > SHOWN {
        report.push_str(&format!("  ... and {} more\n", leaks.len() - SHOWN));
    }
    Some(report)
}

/// Fill `len_bytes` at `ptr` with `POISON_BYTE`.
///
/// # Safety
/// `[ptr, ptr + len_bytes)` is writable memory that nothing else reads or writes now.
pub unsafe fn poison(ptr: NonNull<u8>, len_bytes: usize) {
    // SAFETY: forwarded contract.
    unsafe { ptr.as_ptr().write_bytes(POISON_BYTE, len_bytes) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_reports_sorted_leaks_and_detects_unknown_frees() {
        let t = LiveTracker::new();
        t.on_alloc(0x3000, 8);
        t.on_alloc(0x1000, 16);
        assert_eq!(t.on_free(0x2000), None);
        assert_eq!(t.live_blocks(), vec![(0x1000, 16), (0x3000, 8)]);
        assert_eq!(t.on_free(0x1000), Some(16));
        assert_eq!(t.on_free(0x1000), None);
        let report = format_leak_report("p", &t.live_blocks()).unwrap();
        assert!(report.contains("1 leaked block(s), 8 bytes"), "{report}");
        assert!(report.contains("0x3000"));
        t.clear();
        assert!(format_leak_report("p", &t.live_blocks()).is_none());
    }
}
