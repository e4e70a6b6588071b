//! Block headers: the boundary tags in front of every block of a chunk.
//!
//! Every block starts with a [`BlockHdr`]; a free block extends it to a [`FreeBlockHdr`]
//! with its free-list links. The payload of a used block starts right after its
//! `BlockHdr`, so `payload - HDR_BYTES` finds the header again in O(1).

use super::mapping::GRANULE_BYTES;
use std::ptr::NonNull;
// The size word is read without the pool's lock by the thread cache (see
// `usable_bytes_unlocked`); it orders no other memory, so it stays out of `crate::sync`.
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// Flag: the block is free (in a free list). Never set on a sentinel.
pub(super) const FREE: usize = 1;
/// Flag: the physically previous block is free (so `prev_phys` leads to a block to merge).
pub(super) const PREV_FREE: usize = 2;
/// Flag: the zero-size block closing a chunk; it is never free, so nothing merges past it.
pub(super) const SENTINEL: usize = 4;
/// The low bits of `size_and_flags` that hold flags; block sizes are multiples of
/// `GRANULE_BYTES`, so these bits of the size are always zero.
const FLAGS_MASK: usize = GRANULE_BYTES - 1;

/// Where the free hint starts in `size_and_flags` (64-bit targets): the top 16 bits, above
/// every block size (`MAX_BLOCK_BYTES`).
#[cfg(target_pointer_width = "64")]
const HINT_SHIFT: u32 = 48;
/// Largest block (header included): sizes stay below the free hint's bits.
#[cfg(target_pointer_width = "64")]
pub(super) const MAX_BLOCK_BYTES: usize = (1 << HINT_SHIFT) - GRANULE_BYTES;
#[cfg(not(target_pointer_width = "64"))]
pub(super) const MAX_BLOCK_BYTES: usize = usize::MAX - FLAGS_MASK;
/// The bits of `size_and_flags` that hold the size (`MAX_BLOCK_BYTES` is all of them).
const SIZE_MASK: usize = MAX_BLOCK_BYTES;
const _: () = assert!(MAX_BLOCK_BYTES.is_multiple_of(GRANULE_BYTES));

/// The size bits of a size word.
#[inline(always)]
pub(super) const fn size_of_word(word: usize) -> usize {
    word & SIZE_MASK
}

/// Bytes of the header in front of every block (and of every payload).
pub(super) const HDR_BYTES: usize = std::mem::size_of::<BlockHdr>();
/// Bytes a free block needs for its header and links; no block is smaller.
pub(super) const FREE_HDR_BYTES: usize = std::mem::size_of::<FreeBlockHdr>();

const _: () =
    assert!(FREE < GRANULE_BYTES && PREV_FREE < GRANULE_BYTES && SENTINEL < GRANULE_BYTES);
const _: () = assert!(HDR_BYTES <= GRANULE_BYTES && HDR_BYTES.is_power_of_two());
// Usable sizes (size - HDR_BYTES) are multiples of 16 (`usable_bytes_unlocked`).
const _: () = assert!(GRANULE_BYTES.is_multiple_of(16) && HDR_BYTES.is_multiple_of(16));

/// The boundary tag at the start of every block.
#[repr(C)]
pub(super) struct BlockHdr {
    /// The block's size in bytes, header included (a multiple of the allocator's
    /// granularity, at most `MAX_BLOCK_BYTES`; 0 for a sentinel), or-ed with `FREE`,
    /// `PREV_FREE` and `SENTINEL`, and, on 64-bit targets, with a used block's free hint
    /// in the top 16 bits (`free_hint_and_usable`; 0 where none was written). Every
    /// write of a size and flags of its own clears the hint; `set_prev_free` and
    /// `clear_prev_free`, the only writes to another (possibly live) block's word, keep it.
    /// A block held by the front cache carries no flag of its own: it is a used block to
    /// the lists and its neighbours, and only its cache stack knows it (`front_cache`).
    /// Invariant: `PREV_FREE` is set iff `prev_phys` is non-null and that block is free.
    ///
    /// Atomic (relaxed loads and stores, plain moves on x86-64 and AArch64) because the
    /// thread cache reads a live block's size without the lock while the lock holder may
    /// rewrite the word to change `PREV_FREE` (the size bits of a live block never change
    /// but by its owner's `resize_in_place`). Every write is by the lock holder.
    size_and_flags: AtomicUsize,
    /// The physically previous block in the same chunk; null for a chunk's first block.
    /// Invariant: `prev_phys + prev_phys.size == self`.
    pub prev_phys: *mut BlockHdr,
}

/// The header of a free block: the boundary tag plus its links in one free list.
#[repr(C)]
pub(super) struct FreeBlockHdr {
    pub common: BlockHdr,
    /// Next block of the same free list; null at the end.
    pub next_free: *mut FreeBlockHdr,
    /// Previous block of the same free list; null for the list head.
    pub prev_free: *mut FreeBlockHdr,
}

impl BlockHdr {
    /// The size word (size or-ed with the flags).
    #[inline(always)]
    pub fn word(&self) -> usize {
        self.size_and_flags.load(Relaxed)
    }

    /// Write the size word (under the allocator's `&mut`).
    #[inline(always)]
    pub fn set_word(&self, word: usize) {
        self.size_and_flags.store(word, Relaxed);
    }

    /// Replace the word's free hint with `hint` (bits from `hint_bits`), keeping its size
    /// and flags (under the allocator's `&mut`).
    #[inline(always)]
    pub fn set_hint_bits(&self, hint: usize) {
        self.set_word((self.word() & (SIZE_MASK | FLAGS_MASK)) | hint);
    }

    #[inline(always)]
    pub fn set_prev_free(&self) {
        self.set_word(self.word() | PREV_FREE);
    }

    #[inline(always)]
    pub fn clear_prev_free(&self) {
        self.set_word(self.word() & !PREV_FREE);
    }

    /// Size in bytes, header included.
    #[inline(always)]
    pub fn size(&self) -> usize {
        size_of_word(self.word())
    }

    #[inline(always)]
    pub fn is_free(&self) -> bool {
        self.word() & FREE != 0
    }

    #[inline(always)]
    pub fn is_prev_free(&self) -> bool {
        self.word() & PREV_FREE != 0
    }

    #[inline(always)]
    pub fn is_sentinel(&self) -> bool {
        self.word() & SENTINEL != 0
    }
}

/// Usable bytes of a live block of any `Tlsf`, without the allocator: a relaxed load of
/// its size word, whose size bits do not change while the block is live (see the field).
/// Always a multiple of 16 (`GRANULE_BYTES`, `HDR_BYTES`): the thread cache's free fast
/// path finds the class of exactly that size by it (`RequestSlots::exact_slot_of_usable`).
///
/// # Safety
/// `payload` is a live block handed out by a `Tlsf`, whose allocation happens-before this
/// call.
#[inline(always)]
pub(crate) unsafe fn usable_bytes_unlocked(payload: NonNull<u8>) -> usize {
    // SAFETY: a live payload is preceded by its header in the same chunk (contract); the
    // header is only read through the atomic.
    unsafe { (*payload.as_ptr().sub(HDR_BYTES).cast::<BlockHdr>()).size() - HDR_BYTES }
}

/// A live block's free hint and its usable bytes, from one relaxed load of its size word
/// (as `usable_bytes_unlocked`). The hint is 0 or the entry of `Tlsf::set_free_hints`'
/// table that `Tlsf::allocate_batch` wrote when it carved the block at this size (every
/// write of a block's own size clears it); the thread cache takes it as a magazine's
/// slot only after comparing that magazine's block size with the usable bytes
/// (`CpuPool::free_fast_tlsf`).
///
/// # Safety
/// As for `usable_bytes_unlocked`.
#[inline(always)]
pub(crate) unsafe fn free_hint_and_usable(payload: NonNull<u8>) -> (usize, usize) {
    // SAFETY: as in `usable_bytes_unlocked`.
    let word = unsafe { (*payload.as_ptr().sub(HDR_BYTES).cast::<BlockHdr>()).word() };
    #[cfg(target_pointer_width = "64")]
    let hint = word >> HINT_SHIFT;
    #[cfg(not(target_pointer_width = "64"))]
    let hint = 0;
    (hint, size_of_word(word) - HDR_BYTES)
}

/// A free hint (`free_hint_and_usable`) as the bits to or into a size word; 0 on targets
/// narrower than 64 bits, which keep no hints.
#[inline(always)]
pub(super) fn hint_bits(hint: u16) -> usize {
    #[cfg(target_pointer_width = "64")]
    return usize::from(hint) << HINT_SHIFT;
    #[cfg(not(target_pointer_width = "64"))]
    {
        let _ = hint;
        0
    }
}

/// The header `offset_bytes` after `block`.
///
/// # Safety
/// The result must lie inside the same chunk as `block` (typically `offset_bytes` is the
/// size of `block` or of a part of it being split off).
#[inline(always)]
pub(super) unsafe fn header_at(block: *mut BlockHdr, offset_bytes: usize) -> *mut BlockHdr {
    // SAFETY: the caller keeps the result inside the chunk `block` lies in, which is one
    // allocation from the upstream, so the offset stays in bounds of that allocation.
    unsafe { block.byte_add(offset_bytes) }
}

/// The payload address of a block.
#[inline(always)]
pub(super) fn payload_of(block: *mut BlockHdr) -> *mut u8 {
    block.cast::<u8>().wrapping_add(HDR_BYTES)
}
