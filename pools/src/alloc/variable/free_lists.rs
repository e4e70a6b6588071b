//! The segregated free lists: linking, unlinking, the O(1) bitmap search and the fit
//! policies. Each mutation here keeps the invariants written on `Tlsf::fl_bitmap`,
//! `Tlsf::sl_bitmaps`, `Tlsf::free_lists` and `Tlsf::free_block_count`.

use super::block::{BlockHdr, FreeBlockHdr};
use super::mapping::{list_of, list_of_request};
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
        // SAFETY: forwarded; `list_of(size_bytes)` is the block's list.
        unsafe { self.link_to(block, list_of(size_bytes)) }
    }

    /// Put a free block at the head of list `(fl, sl)`.
    ///
    /// # Safety
    /// `block` is a block of this allocator marked `FREE`, in no list, whose size maps to
    /// `(fl, sl)`.
    #[inline(always)]
    pub(super) unsafe fn link_to(&mut self, block: *mut BlockHdr, (fl, sl): (usize, usize)) {
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
        // SAFETY: forwarded; `list_of(size_bytes)` is the block's list.
        unsafe { self.unlink_from(block, list_of(size_bytes)) }
    }

    /// Take a free block out of list `(fl, sl)`.
    ///
    /// # Safety
    /// `block` is a free block of this allocator in list `(fl, sl)`.
    #[inline(always)]
    pub(super) unsafe fn unlink_from(&mut self, block: *mut BlockHdr, (fl, sl): (usize, usize)) {
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
            debug_assert!(self.free_lists[fl][sl] == block);
            self.free_lists[fl][sl] = next;
            if next.is_null() {
                self.clear_list_bit(fl, sl);
            }
        }
        self.free_block_count -= 1;
    }

    /// Put free block `new` where free block `old` is in list `(fl, sl)`, `old` leaving
    /// it: for a block that changed address or size but not list, with no bitmap work.
    ///
    /// # Safety
    /// `old` is a free block of this allocator in list `(fl, sl)`; `new` is a block of
    /// this allocator marked `FREE`, in no list, whose size maps to `(fl, sl)`; `new` may
    /// overlap `old` only by being the same block.
    #[inline(always)]
    pub(super) unsafe fn replace_in_list(
        &mut self,
        old: *mut BlockHdr,
        new: *mut BlockHdr,
        (fl, sl): (usize, usize),
    ) {
        let (old, new) = (old.cast::<FreeBlockHdr>(), new.cast::<FreeBlockHdr>());
        // SAFETY: `old` is in the list, so its links are free blocks or null; `new` is at
        // least `min_block_bytes`, room for its links.
        unsafe {
            let (next, prev) = ((*old).next_free, (*old).prev_free);
            (*new).next_free = next;
            (*new).prev_free = prev;
            if !next.is_null() {
                (*next).prev_free = new;
            }
            if prev.is_null() {
                self.free_lists[fl][sl] = new;
            } else {
                (*prev).next_free = new;
            }
        }
    }

    #[inline(always)]
    fn clear_list_bit(&mut self, fl: usize, sl: usize) {
        self.sl_bitmaps[fl] &= !(1 << sl);
        if self.sl_bitmaps[fl] == 0 {
            self.fl_bitmap &= !(1 << fl);
        }
    }

    /// The first non-empty list in size order among the lists of level `fl` selected by
    /// `sl_mask` and all lists of the levels above.
    #[inline(always)]
    fn first_nonempty(&self, fl: usize, sl_mask: u32) -> Option<(usize, usize)> {
        let same_level = self.sl_bitmaps[fl] & sl_mask;
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
        let (block, list) = self.find_fitting(need_bytes)?;
        // SAFETY: `find_fitting` returns a free block in list `list`.
        unsafe { self.unlink_from(block, list) };
        Some(block)
    }

    /// A free block of at least `need_bytes` (a multiple of the granularity) chosen by the
    /// fit policy, left in its list, and that list; `None` when no free block is big enough.
    ///
    /// When `need_bytes` is the smallest size of its list, every block of that list fits
    /// and both policies take the head of the first non-empty list from there on: no block
    /// size is read. (In the exact levels 0 and 1, which hold every block under 1 KiB,
    /// that head is also the best fit.)
    #[inline(always)]
    pub(super) fn find_fitting(
        &self,
        need_bytes: usize,
    ) -> Option<(*mut BlockHdr, (usize, usize))> {
        let (exact, whole_list_fits) = list_of_request(need_bytes);
        let sl_mask = if whole_list_fits {
            !0u32 << exact.1
        } else {
            let head = self.free_lists[exact.0][exact.1];
            if !head.is_null() {
                // SAFETY: `head` heads a free list, so it and its successors are free blocks.
                if let Some(block) = unsafe { self.fit_in_exact_list(head, need_bytes) } {
                    return Some((block, exact));
                }
            }
            // Good fit: the lists after `exact`, whose every block is big enough.
            !1u32 << exact.1
        };
        let (fl, sl) = self.first_nonempty(exact.0, sl_mask)?;
        Some((self.free_lists[fl][sl].cast(), (fl, sl)))
    }

    /// The block of the exact-size list the policy picks; `None` if none of the blocks
    /// examined fits.
    ///
    /// # Safety
    /// `head` is the head of a free list of this allocator.
    #[inline(always)]
    unsafe fn fit_in_exact_list(
        &self,
        head: *mut FreeBlockHdr,
        need_bytes: usize,
    ) -> Option<*mut BlockHdr> {
        // SAFETY: list members are free blocks of ours (invariant of `free_lists`).
        let head_bytes = unsafe { (*head).common.size() };
        if head_bytes == need_bytes || self.fit == FitPolicy::FirstFit {
            return (head_bytes >= need_bytes).then_some(head.cast());
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
        best.map(|(block, _)| block)
    }
}
