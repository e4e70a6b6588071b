//! The shadow model shared by the allocator model tests (rlsf-style): every operation is
//! mirrored in a `BTreeMap` of live address ranges, which panics on overlap; each block is
//! filled with a pattern that is checked when it is freed; statistics are compared with
//! the model after every operation.

#![allow(dead_code)]

use pools::{AllocFlags, MemoryPool, PoolError};
use std::collections::BTreeMap;
use std::ptr::NonNull;

/// One step of a random program.
#[derive(Debug, Clone)]
pub enum Op {
    /// Allocate `size` bytes aligned to `1 << align_shift` (0 = the pool's alignment).
    Alloc {
        size: usize,
        align_shift: u8,
    },
    /// Free the live block at `index % live` (no-op when nothing is live).
    Free {
        index: usize,
    },
    /// Resize the live block at `index % live`.
    Realloc {
        index: usize,
        size: usize,
    },
    Reset,
}

struct Live {
    len: usize,
    usable: usize,
    pattern: u8,
}

/// Bytes of each block filled and checked (the whole block up to this).
const PATTERN_BYTES: usize = 4096;

/// The model: live blocks by address.
#[derive(Default)]
pub struct Model {
    live: BTreeMap<usize, Live>,
    next_pattern: u8,
    pub ops: usize,
    pub failures: usize,
}

impl Model {
    fn insert(&mut self, addr: usize, len: usize, usable: usize) -> u8 {
        assert!(usable >= len, "usable {usable} < requested {len}");
        if let Some((&prev, block)) = self.live.range(..=addr).next_back() {
            assert!(
                prev + block.usable <= addr,
                "block {addr:#x}+{usable} overlaps live {prev:#x}+{}",
                block.usable
            );
        }
        if let Some((&next, _)) = self.live.range(addr..).next() {
            assert!(
                addr + usable <= next,
                "block {addr:#x}+{usable} overlaps live {next:#x}"
            );
        }
        self.next_pattern = self.next_pattern.wrapping_add(1) | 1;
        let pattern = self.next_pattern;
        self.live.insert(
            addr,
            Live {
                len,
                usable,
                pattern,
            },
        );
        pattern
    }

    fn nth(&self, index: usize) -> Option<usize> {
        if self.live.is_empty() {
            None
        } else {
            self.live.keys().nth(index % self.live.len()).copied()
        }
    }

    /// Run one op against `pool`; `checked` pools must reject double frees.
    pub fn step(&mut self, pool: &dyn MemoryPool, op: &Op, checked: bool) {
        self.ops += 1;
        match *op {
            Op::Alloc { size, align_shift } => {
                let align = if align_shift == 0 {
                    0
                } else {
                    1usize << align_shift
                };
                // Every other unzeroed allocation through `allocate_or_none` (the replay's
                // entry point, with its own fast and miss paths); `Err(None)` is its
                // failure.
                let zeroed = size % 3 == 0;
                let result = if !zeroed && self.ops % 2 == 1 {
                    pool.allocate_or_none(size, align).ok_or(None)
                } else {
                    pool.allocate_with(size, AllocFlags { align, zeroed })
                        .map_err(Some)
                };
                match result {
                    Ok(ptr) => {
                        let addr = ptr.as_ptr() as usize;
                        let want_align = align.max(pool.config().alignment);
                        assert_eq!(
                            addr % want_align,
                            0,
                            "{addr:#x} not aligned to {want_align}"
                        );
                        // SAFETY: ptr was just handed out by this pool.
                        let usable =
                            unsafe { pool.usable_size(ptr) }.expect("usable_size of a live block");
                        let fill = size.clamp(1, PATTERN_BYTES);
                        if size % 3 == 0 {
                            // SAFETY: the block is live and at least `size` bytes.
                            let bytes = unsafe { std::slice::from_raw_parts(ptr.as_ptr(), fill) };
                            assert!(bytes.iter().all(|&b| b == 0), "zeroed block is not zero");
                        }
                        let pattern = self.insert(addr, size.max(1), usable);
                        // SAFETY: the block is live, ours, and at least `fill` bytes.
                        unsafe { ptr.as_ptr().write_bytes(pattern, fill) };
                    }
                    Err(None)
                    | Err(Some(PoolError::OutOfMemory { .. }))
                    | Err(Some(PoolError::InvalidOperation { .. })) => {
                        self.failures += 1;
                    }
                    Err(Some(e)) => panic!("unexpected error {e}"),
                }
            }
            Op::Free { index } => {
                let Some(addr) = self.nth(index) else { return };
                let block = self.live.remove(&addr).unwrap();
                let ptr = NonNull::new(addr as *mut u8).unwrap();
                check_pattern(ptr, &block);
                // The frees rotate over the entry points: `deallocate`,
                // `deallocate_or_false` (the replay's), and `deallocate_sized` with the
                // block's size (`GlobalAlloc`'s) and with a wrong size, which is only a
                // hint and must change nothing but the speed.
                match self.ops % 4 {
                    0 => {
                        // SAFETY: the model holds exactly the live blocks; ptr was one.
                        unsafe { pool.deallocate(ptr) }.expect("free of a live block");
                    }
                    1 => {
                        // SAFETY: as above.
                        let freed = unsafe { pool.deallocate_or_false(ptr) };
                        assert!(freed, "free of a live block");
                    }
                    2 => {
                        // SAFETY: as above.
                        unsafe { pool.deallocate_sized(ptr, block.len) }
                            .expect("sized free of a live block");
                    }
                    _ => {
                        let wrong = block.len.wrapping_mul(7).wrapping_add(index) % 70_000;
                        // SAFETY: as above; the size is a hint, any value allowed.
                        unsafe { pool.deallocate_sized(ptr, wrong) }
                            .expect("sized free of a live block, wrong size");
                    }
                }
                if checked {
                    let again = pool.deallocate_checked(ptr);
                    assert!(
                        matches!(again, Err(PoolError::InvalidPointer { .. })),
                        "double free not detected: {again:?}"
                    );
                }
            }
            Op::Realloc { index, size } => {
                let Some(addr) = self.nth(index) else { return };
                let block = self.live.remove(&addr).unwrap();
                let ptr = NonNull::new(addr as *mut u8).unwrap();
                check_pattern(ptr, &block);
                // Every other reallocation through `reallocate_or_none` (the replay's
                // entry point, with its own fast paths); `Err(None)` is its failure.
                let outcome = if self.ops % 2 == 1 {
                    // SAFETY: the model holds exactly the live blocks; ptr was one of them.
                    unsafe { pool.reallocate_or_none(ptr, size) }.ok_or(None)
                } else {
                    // SAFETY: as above.
                    unsafe { pool.reallocate(ptr, size) }.map_err(Some)
                };
                match outcome {
                    Ok(new) => {
                        let kept = block.len.min(size.max(1)).min(PATTERN_BYTES);
                        // SAFETY: the new block is live and at least `size` bytes.
                        let bytes = unsafe { std::slice::from_raw_parts(new.as_ptr(), kept) };
                        assert!(
                            bytes.iter().all(|&b| b == block.pattern),
                            "realloc lost contents"
                        );
                        // SAFETY: `new` was just handed out by this pool.
                        let usable = unsafe { pool.usable_size(new) }.unwrap();
                        let pattern = self.insert(new.as_ptr() as usize, size.max(1), usable);
                        let fill = size.clamp(1, PATTERN_BYTES);
                        // SAFETY: as above.
                        unsafe { new.as_ptr().write_bytes(pattern, fill) };
                    }
                    Err(None)
                    | Err(Some(PoolError::OutOfMemory { .. }))
                    | Err(Some(PoolError::InvalidOperation { .. })) => {
                        self.failures += 1;
                        // The old block is still live and unchanged.
                        self.live.insert(addr, block);
                    }
                    Err(Some(e)) => panic!("unexpected error {e}"),
                }
            }
            Op::Reset => {
                // SAFETY: the model forgets every block at once; none is used afterwards.
                unsafe { pool.reset() }.expect("reset");
                self.live.clear();
            }
        }
        self.check_stats(pool);
    }

    pub fn check_stats(&self, pool: &dyn MemoryPool) {
        let stats = pool.stats();
        let used: u64 = self.live.values().map(|b| b.usable as u64).sum();
        assert_eq!(
            stats.current_used_bytes, used,
            "current_used_bytes vs model"
        );
        assert_eq!(
            stats.live_count(),
            self.live.len() as u64,
            "live count vs model"
        );
        assert!(stats.peak_used_bytes >= stats.current_used_bytes);
        assert!(
            stats.reserved_bytes >= used,
            "reserved {} < used {used}",
            stats.reserved_bytes
        );
        assert!(stats.peak_reserved_bytes >= stats.reserved_bytes);
    }

    /// Free everything still live (checking patterns).
    pub fn drain(&mut self, pool: &dyn MemoryPool) {
        while let Some(addr) = self.nth(0) {
            self.step(pool, &Op::Free { index: 0 }, false);
            assert!(!self.live.contains_key(&addr));
        }
        assert_eq!(pool.stats().current_used_bytes, 0);
    }
}

fn check_pattern(ptr: NonNull<u8>, block: &Live) {
    let fill = block.len.min(PATTERN_BYTES);
    // SAFETY: the block is live (per the model) and at least `len` bytes.
    let bytes = unsafe { std::slice::from_raw_parts(ptr.as_ptr(), fill) };
    if let Some(i) = bytes.iter().position(|&b| b != block.pattern) {
        panic!(
            "block {:p} byte {i} is {:#x}, expected {:#x}: overlapping blocks",
            ptr.as_ptr(),
            bytes[i],
            block.pattern
        );
    }
}
