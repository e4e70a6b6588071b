//! A thread cache's hot part in one allocation: a head line with the counters both fast
//! paths touch, then the magazines, one line each.
//!
//! ```text
//! rack ──> ┌ head: room, room_limit, slow-path counts ┐  64 B
//!          ├ magazine 0: top, bottom, limit, ...      ┤  64 B
//!          ├ ...                                      ┤
//!          └ magazine n: no capacity (blocks of no cached class)
//! ```
//!
//! The thread's last-used entry (`tls::LastUsed`) holds the rack's address, so a fast path
//! reaches the counters and class `c`'s magazine from that one pointer without loading the
//! magazines' address first. The magazine lies at the class's *slot*, `64 * (c + 1)`
//! bytes in: the fast paths' class tables hold slots, not classes (the allocation's
//! request table, `CacheClasses`, and the free's page-class map, `SegmentGeometry::slot_of`),
//! so the rack's address plus the table's entry is the magazine, with no scaling.

use super::Magazine;
use crate::alloc::segment::CLASS_SLOT_BYTES;
use std::alloc::{self, Layout};
use std::cell::UnsafeCell;
use std::marker::PhantomData;
use std::mem::{align_of, size_of};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// The counters of a thread cache that its fast paths touch (the slow paths' counts too,
/// beside them). Field meanings are `ThreadCache`'s (`room`, `room_limit`); the writer
/// rule is `ThreadCache`'s: single-writer atomics, plain loads and stores.
#[repr(C, align(64))]
pub(crate) struct RackHead {
    pub(super) room: AtomicI64,
    /// Plain memory, not an atomic: only the counters' writer reads it (readers in other
    /// threads read `room` and the counts, never this), so the free fast path compares
    /// with it in place instead of loading it first.
    room_limit: UnsafeCell<i64>,
    /// Counts of the slow paths (and of reallocations kept in place); the fast paths'
    /// are in the magazines.
    pub(super) allocation_count: AtomicU64,
    /// Always 0, at a magazine's `block_bytes` offset: a free hint of 0 (none written,
    /// `Rack::hinted_block_bytes`) names the head, whose "block size" then matches no
    /// block.
    no_block_bytes: usize,
    pub(super) free_count: AtomicU64,
    pub(super) total_allocated_bytes: AtomicU64,
}

impl RackHead {
    pub(super) fn new(room_limit: i64) -> RackHead {
        RackHead {
            room: AtomicI64::new(0),
            room_limit: UnsafeCell::new(room_limit),
            allocation_count: AtomicU64::new(0),
            no_block_bytes: 0,
            free_count: AtomicU64::new(0),
            total_allocated_bytes: AtomicU64::new(0),
        }
    }

    /// `room_limit`.
    ///
    /// # Safety
    /// The caller is the cache's counters' writer (`ThreadCache`'s rule: its owner in a
    /// pool call, or a thread holding the strategy lock while the owner is in none, with
    /// the pool's contract ordering the two).
    #[inline(always)]
    pub(super) unsafe fn room_limit(&self) -> i64 {
        // SAFETY: the caller's contract: no write races this read.
        unsafe { *self.room_limit.get() }
    }

    /// Set `room_limit`.
    ///
    /// # Safety
    /// As for `room_limit`.
    pub(super) unsafe fn set_room_limit(&self, limit: i64) {
        // SAFETY: the caller's contract: no other access races this write.
        unsafe { *self.room_limit.get() = limit };
    }
}

// A hint of 0 reads the head's `no_block_bytes` where a magazine's `block_bytes` is.
const _: () = assert!(
    std::mem::offset_of!(RackHead, no_block_bytes) == std::mem::offset_of!(Magazine, block_bytes)
);

// The magazines start right after the head, each on its own line, one slot apart.
const _: () = assert!(size_of::<RackHead>() == align_of::<Magazine>());
const _: () = assert!(size_of::<Magazine>() == align_of::<Magazine>());
const _: () = assert!(size_of::<Magazine>() == CLASS_SLOT_BYTES);

/// The slot of `class`: its magazine's byte offset in the rack (the page-class map's
/// `alloc::segment::class_slot`).
#[inline(always)]
pub(crate) const fn slot_of_class(class: usize) -> usize {
    (class + 1) * CLASS_SLOT_BYTES
}

/// `counter = counter + delta` by its single writer: a plain load and store.
#[inline(always)]
pub(super) fn bump(counter: &AtomicU64, delta: u64) {
    counter.store(counter.load(Relaxed).wrapping_add(delta), Relaxed);
}

/// The allocation: a head and `len` magazines. Owned by its `ThreadCache`.
///
/// Invariant: `head` points to an allocation of `layout(len)` bytes holding an initialised
/// head followed by `len` initialised magazines; the owner frees it on drop.
pub(super) struct RackBox {
    head: NonNull<RackHead>,
    len: usize,
}

// SAFETY: the rack holds atomics, `room_limit` and the magazines' raw pointers (addresses
// of pool blocks and of the cache's slot storage); access follows `ThreadCache`'s
// invariant, and only the counters' writer touches `room_limit` (readers in other threads
// read the atomics alone).
unsafe impl Send for RackBox {}
// SAFETY: as above.
unsafe impl Sync for RackBox {}

/// A rack's alignment and size unit: two lines (adjacent-line prefetch), so that the racks
/// of two threads, written on every operation, never share a line pair.
const RACK_ALIGN: usize = 128;
const _: () = assert!(RACK_ALIGN.is_multiple_of(align_of::<RackHead>()));

impl RackBox {
    fn layout(len: usize) -> Layout {
        let bytes = size_of::<Magazine>()
            .checked_mul(len)
            .and_then(|m| m.checked_add(size_of::<RackHead>()))
            .and_then(|b| b.checked_next_multiple_of(RACK_ALIGN))
            .expect("thread-cache rack size overflows");
        Layout::from_size_align(bytes, RACK_ALIGN).expect("thread-cache rack layout")
    }

    pub(super) fn new(head: RackHead, magazines: Vec<Magazine>) -> RackBox {
        let len = magazines.len();
        let layout = Self::layout(len);
        // SAFETY: the layout is never zero-sized (it has the head).
        let raw = unsafe { alloc::alloc(layout) };
        let Some(raw) = NonNull::new(raw) else {
            alloc::handle_alloc_error(layout)
        };
        let head_ptr = raw.cast::<RackHead>();
        // SAFETY: the allocation holds the head and then `len` magazines, each at its own
        // alignment (the head's size is the magazines' alignment, and the allocation's is
        // a multiple of both); nothing is there yet.
        unsafe {
            head_ptr.as_ptr().write(head);
            let first = head_ptr.as_ptr().add(1).cast::<Magazine>();
            for (i, magazine) in magazines.into_iter().enumerate() {
                first.add(i).write(magazine);
            }
        }
        RackBox {
            head: head_ptr,
            len,
        }
    }

    /// A handle for the fast paths, with the allocation's provenance.
    #[inline(always)]
    pub(super) fn rack(&self) -> Rack<'_> {
        Rack {
            head: self.head.as_ptr(),
            _owner: PhantomData,
        }
    }

    pub(super) fn head(&self) -> &RackHead {
        // SAFETY: the type's invariant: an initialised head, alive with `self`.
        unsafe { self.head.as_ref() }
    }

    /// Every magazine, the one of no capacity included.
    pub(super) fn magazines(&self) -> &[Magazine] {
        // SAFETY: the type's invariant: `len` initialised magazines right after the head.
        unsafe {
            std::slice::from_raw_parts(self.head.as_ptr().add(1).cast::<Magazine>(), self.len)
        }
    }

    /// The address the thread's last-used entry keeps (`Rack::from_raw` takes it back).
    pub(super) fn as_raw(&self) -> *const RackHead {
        self.head.as_ptr()
    }
}

impl Drop for RackBox {
    fn drop(&mut self) {
        // SAFETY: the type's invariant: allocated with this layout (the head and the
        // magazines hold atomics and raw pointers: nothing to drop).
        unsafe { alloc::dealloc(self.head.as_ptr().cast(), Self::layout(self.len)) };
    }
}

/// A thread cache's rack, for its fast paths: the head's counters and the magazines, by
/// address arithmetic from one pointer.
///
/// Invariant: `head` is a `RackBox`'s (not null), alive for `'a`. A raw pointer, not
/// `NonNull`: `Option<Rack>` then has a tag of its own, which the fast paths' lookup
/// (`tls::last_used_rack`) sets from its id compare alone; with a null niche the
/// optimiser tested the pointer too.
#[derive(Clone, Copy)]
pub(crate) struct Rack<'a> {
    head: *const RackHead,
    _owner: PhantomData<&'a RackBox>,
}

impl<'a> Rack<'a> {
    /// The rack at `raw` (a `RackBox::as_raw`).
    ///
    /// # Safety
    /// `raw` came from `RackBox::as_raw` of a rack that outlives `'a` (as `tls::LastUsed`
    /// keeps them).
    #[inline(always)]
    pub(crate) unsafe fn from_raw(raw: *const RackHead) -> Rack<'a> {
        Rack {
            head: raw,
            _owner: PhantomData,
        }
    }

    #[inline(always)]
    pub(super) fn head(self) -> &'a RackHead {
        // SAFETY: the type's invariant: a live rack's initialised head.
        unsafe { &*self.head }
    }

    /// The magazine of `class`.
    ///
    /// # Safety
    /// `class` is below the rack's magazine count (a class of the pool, or the class
    /// count: the magazine of no capacity).
    #[inline(always)]
    pub(super) unsafe fn magazine(self, class: usize) -> &'a Magazine {
        // SAFETY: forwarded contract.
        unsafe { self.magazine_at(slot_of_class(class)) }
    }

    /// The magazine at `slot` (`slot_of_class`).
    ///
    /// # Safety
    /// `slot` is the slot of a class below the rack's magazine count (a class of the pool,
    /// or the class count: the magazine of no capacity).
    #[inline(always)]
    pub(super) unsafe fn magazine_at(self, slot: usize) -> &'a Magazine {
        // SAFETY: the caller's contract and `RackBox`'s invariant: an initialised magazine
        // of this allocation (`slot` bytes from the head), alive for `'a`.
        unsafe { &*self.head.cast::<u8>().add(slot).cast::<Magazine>() }
    }

    /// The usable bytes of the blocks of the magazine at `hint`, a TLSF block's free hint
    /// (`alloc::variable::free_hint_and_usable`): for the slot of a class, that class's
    /// block size; for 0 (no hint), 0. A plain read of that word, not a reference to a
    /// magazine, since 0 is the head's address.
    ///
    /// # Safety
    /// `hint` is 0 or a slot of a class below the rack's magazine count (`slot_of_class`):
    /// an entry of the cache's exact-size table, the hints the pool's TLSF writes
    /// (`Tlsf::set_free_hints`).
    #[inline(always)]
    pub(crate) unsafe fn hinted_block_bytes(self, hint: usize) -> usize {
        let at = hint + std::mem::offset_of!(Magazine, block_bytes);
        // SAFETY: the caller's contract and `RackBox`'s invariant: `hint` bytes from the
        // head is the head or a magazine of this allocation, and `at` is its
        // `no_block_bytes` or `block_bytes` (the same offset, asserted above), an
        // initialised `usize` that nothing writes after the rack is made.
        unsafe { self.head.cast::<u8>().add(at).cast::<usize>().read() }
    }

    /// Count a reallocation that kept its block and its usable size (one free and one
    /// allocation of the same bytes: the used bytes do not change, so no cold part), by
    /// the owner.
    #[inline(always)]
    pub(crate) fn count_same_block(self, usable: usize) {
        let head = self.head();
        bump(&head.allocation_count, 1);
        bump(&head.free_count, 1);
        bump(&head.total_allocated_bytes, usable as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::super::{CacheClasses, ThreadCache};
    use super::*;
    use crate::config::PoolConfig;

    #[test]
    fn slots_address_the_magazines_and_racks_own_their_line_pairs() {
        let config = PoolConfig::default_cpu();
        let classes = CacheClasses::for_table(&config);
        let caches: Vec<ThreadCache> = (0..4)
            .map(|_| ThreadCache::new(&classes, 256 << 10))
            .collect();
        for cache in &caches {
            let raw = cache.rack_raw() as usize;
            assert_eq!(raw % RACK_ALIGN, 0, "rack at {raw:#x}");
            let rack = cache.rack();
            let magazines = cache.rack.magazines();
            // One magazine per class and the one of no capacity past them.
            assert_eq!(magazines.len(), classes.class_count() + 1);
            for (class, magazine) in magazines.iter().enumerate() {
                // SAFETY: `class` is below the rack's magazine count.
                let at = unsafe { rack.magazine_at(slot_of_class(class)) };
                assert!(std::ptr::eq(at, magazine), "class {class}");
                let bytes = classes.class_bytes.get(class).copied().unwrap_or(0);
                // SAFETY: as above.
                assert_eq!(unsafe { rack.block_bytes_at(slot_of_class(class)) }, bytes);
                // A free hint naming the slot reads the same size.
                // SAFETY: as above.
                let hinted = unsafe { rack.hinted_block_bytes(slot_of_class(class)) };
                assert_eq!(hinted, bytes);
            }
            // No hint (0) reads the head's zero: no block's size.
            // SAFETY: 0 is a hint the cache may meet.
            assert_eq!(unsafe { rack.hinted_block_bytes(0) }, 0);
            // Every entry of the exact table (the hints TLSF writes) is a magazine's slot.
            for &hint in classes.exact_slots() {
                let hint = usize::from(hint);
                assert!(hint >= slot_of_class(0) && hint <= slot_of_class(classes.class_count()));
                assert_eq!(hint % CLASS_SLOT_BYTES, 0);
            }
            // Aligned and padded to whole line pairs: no other allocation shares one.
            let layout = RackBox::layout(magazines.len());
            assert_eq!(layout.size() % RACK_ALIGN, 0);
            assert!(layout.size() >= size_of::<RackHead>() + magazines.len() * CLASS_SLOT_BYTES);
        }
    }
}
