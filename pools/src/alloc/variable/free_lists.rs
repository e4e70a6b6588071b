//! The segregated free lists: linking, unlinking, the O(1) bitmap search and the fit
//! policies. Each mutation here keeps the invariants written on `Tlsf::fl_bitmap`,
//! `Tlsf::sl_bitmaps`, `Tlsf::free_lists` and `Tlsf::free_block_count`.

use super::block::{BlockHdr, FreeBlockHdr};
use super::mapping::{list_at_least, list_of};
use super::Tlsf;
use crate::config::FitPolicy;
use std::ptr;

/// Blocks of the exact-size list that best fit examines before falling back to good fit;
/// bounds the scan so allocation stays O(1).
pub(super) const BEST_FIT_SCAN_LIMIT: usize = 16;

impl Tlsf {
    /// Put a free block at the head of its list.
    ///
    /// # Safety
    /// `block` is a block of this allocator marked `FREE`, of `size_bytes` bytes, in no list.
    #[inline(always)]
    pub(super) unsafe fn link(&mut self, block: *mut BlockHdr, size_bytes: usize) {
        let (fl, sl) = list_of(size_bytes);
        let block = block.cast::<FreeBlockHdr>();
        let head = self.free_lists[fl][sl];
        // SAFETY: `block` is at least `min_block_bytes >= size_of::<FreeBlockHdr>()` (field
        // invariant) so its links fit; `head`, when non-null, is a free block of ours.
        unsafe {
            (*block).next_free = head;
            (*block).prev_free = ptr::null_mut();
            if !head.is_null() {
                (*head).prev_free = block;
            }
        }
        self.free_lists[fl][sl] = block;
        self.sl_bitmaps[fl] |= 1 << sl;
        self.fl_bitmap |= 1 << fl;
        self.free_block_count += 1;
    }

    /// Take a free block out of its list.
    ///
    /// # Safety
    /// `block` is a free block of this allocator, of `size_bytes` bytes, in its list.
    #[inline(always)]
    pub(super) unsafe fn unlink(&mut self, block: *mut BlockHdr, size_bytes: usize) {
        let block = block.cast::<FreeBlockHdr>();
        // SAFETY: `block` is in a list (caller), so its links are valid free blocks or null.
        let (next, prev) = unsafe { ((*block).next_free, (*block).prev_free) };
        if !next.is_null() {
            // SAFETY: as above.
            unsafe { (*next).prev_free = prev };
        }
        if !prev.is_null() {
            // SAFETY: as above.
            unsafe { (*prev).next_free = next };
        } else {
            let (fl, sl) = list_of(size_bytes);
            debug_assert!(self.free_lists[fl][sl] == block);
            self.free_lists[fl][sl] = next;
            if next.is_null() {
                self.clear_list_bit(fl, sl);
            }
        }
        self.free_block_count -= 1;
    }

    #[inline(always)]
    fn clear_list_bit(&mut self, fl: usize, sl: usize) {
        self.sl_bitmaps[fl] &= !(1 << sl);
        if self.sl_bitmaps[fl] == 0 {
            self.fl_bitmap &= !(1 << fl);
        }
    }

    /// The first non-empty list at or after `(fl, sl)` in size order.
    #[inline(always)]
    fn first_nonempty_from(&self, (fl, sl): (usize, usize)) -> Option<(usize, usize)> {
        let same_level = self.sl_bitmaps[fl] & (!0u32 << sl);
        if same_level != 0 {
            return Some((fl, same_level.trailing_zeros() as usize));
        }
        // `fl + 1 <= FL_COUNT <= 64`; at 64 no level is left.
        let higher_levels = self.fl_bitmap & (!0u64).checked_shl(fl as u32 + 1).unwrap_or(0);
        if higher_levels == 0 {
            return None;
        }
        let fl = higher_levels.trailing_zeros() as usize;
        Some((fl, self.sl_bitmaps[fl].trailing_zeros() as usize))
    }

    /// Remove and return a free block of at least `need_bytes` chosen by the fit policy,
    /// or `None` when no free block is big enough.
    #[inline(always)]
    pub(super) fn take_fitting(&mut self, need_bytes: usize) -> Option<*mut BlockHdr> {
        let (fl, sl) = list_of(need_bytes);
        let head = self.free_lists[fl][sl];
        if !head.is_null() {
            // SAFETY: `head` heads a free list, so it and its successors are free blocks.
            let fit = unsafe { self.fit_in_exact_list(head, need_bytes) };
            if let Some((block, size_bytes)) = fit {
                // SAFETY: `block` is a free block in its list, of `size_bytes`.
                unsafe { self.unlink(block, size_bytes) };
                return Some(block);
            }
        }
        // Good fit: every block of this list and those after it is big enough.
        let (fl, sl) = self.first_nonempty_from(list_at_least(need_bytes))?;
        let block = self.free_lists[fl][sl];
        // SAFETY: the bitmap bit says the list is non-empty, so `block` is a free block at
        // its head; its successor is a free block of the same list or null.
        unsafe {
            let next = (*block).next_free;
            self.free_lists[fl][sl] = next;
            if next.is_null() {
                self.clear_list_bit(fl, sl);
            } else {
                (*next).prev_free = ptr::null_mut();
            }
        }
        self.free_block_count -= 1;
        Some(block.cast())
    }

    /// The block of the exact-size list the policy picks, with its size; `None` if none of
    /// the blocks examined fits.
    ///
    /// # Safety
    /// `head` is the head of a free list of this allocator.
    #[inline(always)]
    unsafe fn fit_in_exact_list(
        &self,
        head: *mut FreeBlockHdr,
        need_bytes: usize,
    ) -> Option<(*mut BlockHdr, usize)> {
        // SAFETY: list members are free blocks of ours (invariant of `free_lists`).
        let head_bytes = unsafe { (*head).common.size() };
        if head_bytes == need_bytes || self.fit == FitPolicy::FirstFit {
            return (head_bytes >= need_bytes).then_some((head.cast(), head_bytes));
        }
        let mut best: Option<(*mut BlockHdr, usize)> = None;
        let mut block = head;
        for _ in 0..BEST_FIT_SCAN_LIMIT {
            if block.is_null() {
                break;
            }
            // SAFETY: as above.
            let size_bytes = unsafe { (*block).common.size() };
            let smaller = match best {
                Some((_, best_bytes)) => size_bytes < best_bytes,
                None => true,
            };
            if size_bytes >= need_bytes && smaller {
                best = Some((block.cast(), size_bytes));
                if size_bytes == need_bytes {
                    break;
                }
            }
            // SAFETY: as above.
            block = unsafe { (*block).next_free };
        }
        best
    }
}
