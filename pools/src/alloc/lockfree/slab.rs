//! A slab: a span of whole pages of a region, holding blocks of one size class for one
//! heap, with its header at the start (the region's page map leads from any block to it).
//!
//! ```text
//! +--------------------------------------+-----------------+------------------------------+
//! | Slab header (owner line, remote line) | live bitmap (*) | area_offset: b0 | b1 | ... bN-1 |
//! +--------------------------------------+-----------------+------------------------------+
//!   (*) one AtomicU64 per 64 blocks, only with `check_pointers`
//! ```
//!
//! Blocks are handed out from the owner's free list, else carved in address order by a bump
//! index, so pages of a slab are touched only when used.

use super::heap::Heap;
use super::stack::{Linked, PushOutcome, RemoteFreeStack};
use crate::sync::{AtomicPtr, AtomicU64, AtomicUsize, Ordering, UnsafeCell};
use std::mem::size_of;
use std::ptr::{self, NonNull};

/// `Slab::kind` of a slab, and of a large object's header (both sit at a span's base).
pub const SPAN_SLAB: usize = 0x51AB_51AB;
pub const SPAN_LARGE: usize = 0x1A26_E0B7;
/// The first word of a region (its header page).
pub const SPAN_REGION: usize = 0x2E61_0E00;

/// Largest block alignment the slab layout provides (the block area starts at a multiple
/// of `min(class alignment, MAX_SLAB_ALIGN_BYTES)`).
pub const MAX_SLAB_ALIGN_BYTES: usize = 4096;

/// The first word of every span (slab or large object), read to tell them apart.
#[repr(C)]
pub struct SpanKind {
    pub kind: AtomicUsize,
}

/// Owner-only bookkeeping of a slab.
///
/// Invariants: `free` is a null-terminated list of distinct free blocks of this slab, each
/// holding the next pointer in its first word; `used_blocks` = blocks carved minus blocks
/// on `free` (so it counts live blocks plus remote-freed blocks not yet collected);
/// `listed` iff the slab is on its bin's list (`prev`/`next` valid only then); an unlisted
/// slab with live blocks is FULL or queued on its heap's `reclaimed` stack; an unlisted slab
/// with `used_blocks == 0` is on the heap's empty list (linked through `next`).
#[derive(Debug)]
pub struct SlabOwned {
    free: *mut u8,
    used_blocks: usize,
    /// Next never-carved block, and the end of the block area.
    bump: *mut u8,
    bump_end: *mut u8,
    pub prev: *mut Slab,
    pub next: *mut Slab,
    pub listed: bool,
}

/// The remote side of a slab, on its own cache line so that remote frees do not bounce
/// the owner's line.
#[repr(C, align(128))]
struct RemoteLine {
    stack: RemoteFreeStack,
    /// Link on the owning heap's `reclaimed` stack.
    reclaim_link: UnsafeCell<*mut Slab>,
}

/// A slab header. Every field is valid when all-zero or left over from an earlier format
/// of the same slab, so fresh (zeroed) and recycled memory can both be formatted with
/// stores, and `block_state` may read the atomics from any thread without a data race.
#[repr(C, align(128))]
pub struct Slab {
    /// `SPAN_SLAB` once formatted.
    kind: AtomicUsize,
    // Immutable while any block of the slab is live (set by `format`); relaxed atomics.
    class: AtomicUsize,
    block_bytes: AtomicUsize,
    area_offset_bytes: AtomicUsize,
    capacity_blocks: AtomicUsize,
    /// The owning heap; compared with the freeing thread's heap to choose local or remote.
    owner_heap: AtomicPtr<Heap>,
    /// Pages of the span (fixed from its carving on; `format` stores the same value).
    span_pages: AtomicUsize,
    /// Number of `AtomicU64` live-bitmap words after the header (0 without checking).
    bitmap_words: AtomicUsize,
    /// Blocks carved so far (the owner stores, `block_state` loads).
    carved_blocks: AtomicUsize,
    owner: UnsafeCell<SlabOwned>,
    remote: RemoteLine,
}

// SAFETY: `reclaim_link` is the slab's only `reclaimed`-stack link and nothing else uses it.
unsafe impl Linked for Slab {
    fn link(&self) -> &UnsafeCell<*mut Slab> {
        &self.remote.reclaim_link
    }
}

impl Slab {
    /// The layout of a slab of `span_bytes` for blocks of `block_bytes` aligned to
    /// `block_align_bytes`: (bitmap words, offset of block 0, block capacity).
    pub fn layout(
        span_bytes: usize,
        block_bytes: usize,
        block_align_bytes: usize,
        checking: bool,
    ) -> (usize, usize, usize) {
        let bitmap_words = if checking {
            (span_bytes / block_bytes).div_ceil(64)
        } else {
            0
        };
        let header_bytes = size_of::<Slab>() + bitmap_words * size_of::<u64>();
        let area_align = block_align_bytes.clamp(16, MAX_SLAB_ALIGN_BYTES);
        let area_offset = header_bytes.next_multiple_of(area_align);
        let capacity = span_bytes.saturating_sub(area_offset) / block_bytes;
        (bitmap_words, area_offset, capacity)
    }

    /// Format the slab at `base` (a span of `span_pages` pages of `span_bytes` in all) for
    /// `class` (blocks of `block_bytes`, aligned to `block_align_bytes`) owned by `heap`.
    ///
    /// # Safety
    /// `base` is a carved span of `span_bytes` inside a live region, holding zeros
    /// or an earlier slab header, with no live block; the caller owns `heap` and nobody
    /// else uses this slab.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn format<'a>(
        base: NonNull<u8>,
        span_pages: usize,
        span_bytes: usize,
        class: usize,
        block_bytes: usize,
        block_align_bytes: usize,
        heap: *const Heap,
        checking: bool,
    ) -> &'a Slab {
        // SAFETY: by the contract the memory is a valid `Slab` (every field accepts zero
        // and its own old values) and page-aligned (>= 8 KiB, above the header's 128).
        let slab = unsafe { &*base.as_ptr().cast::<Slab>() };
        let (bitmap_words, area_offset, capacity) =
            Self::layout(span_bytes, block_bytes, block_align_bytes, checking);
        debug_assert!(capacity >= 1, "slab classes hold at least one block");
        slab.span_pages.store(span_pages, Ordering::Relaxed);
        slab.class.store(class, Ordering::Relaxed);
        slab.block_bytes.store(block_bytes, Ordering::Relaxed);
        slab.area_offset_bytes.store(area_offset, Ordering::Relaxed);
        slab.capacity_blocks.store(capacity, Ordering::Relaxed);
        slab.owner_heap.store(heap.cast_mut(), Ordering::Relaxed);
        slab.bitmap_words.store(bitmap_words, Ordering::Relaxed);
        slab.carved_blocks.store(0, Ordering::Relaxed);
        for word in slab.bitmap() {
            word.store(0, Ordering::Relaxed);
        }
        slab.remote.stack.clear();
        // SAFETY: `area_offset + capacity * block_bytes <= span_bytes`.
        let (bump, bump_end) = unsafe {
            let start = base.as_ptr().add(area_offset);
            (start, start.add(capacity * block_bytes))
        };
        // SAFETY: the caller owns the slab; nobody else reads the owner part.
        slab.owner.with_mut(|owned| unsafe {
            owned.write(SlabOwned {
                free: ptr::null_mut(),
                used_blocks: 0,
                bump,
                bump_end,
                prev: ptr::null_mut(),
                next: ptr::null_mut(),
                listed: false,
            })
        });
        slab.kind.store(SPAN_SLAB, Ordering::Relaxed);
        slab
    }

    #[inline]
    pub fn base(&self) -> usize {
        self as *const Slab as usize
    }

    #[inline]
    pub fn is_formatted(&self) -> bool {
        self.kind.load(Ordering::Relaxed) == SPAN_SLAB
    }

    #[inline]
    pub fn class(&self) -> usize {
        self.class.load(Ordering::Relaxed)
    }

    #[inline]
    pub fn span_pages(&self) -> usize {
        self.span_pages.load(Ordering::Relaxed)
    }

    #[inline]
    pub fn block_bytes(&self) -> usize {
        self.block_bytes.load(Ordering::Relaxed)
    }

    #[inline]
    pub fn owner_heap(&self) -> *const Heap {
        self.owner_heap.load(Ordering::Relaxed)
    }

    pub fn remote(&self) -> &RemoteFreeStack {
        &self.remote.stack
    }

    fn bitmap(&self) -> &[AtomicU64] {
        let words = self.bitmap_words.load(Ordering::Relaxed);
        // SAFETY: `format` sized the header for `words` bitmap words right after it, inside
        // the slab; `AtomicU64` accepts any bit pattern and the header is 128-aligned.
        unsafe {
            std::slice::from_raw_parts((self as *const Slab).add(1).cast::<AtomicU64>(), words)
        }
    }

    /// The index of the block starting at `addr`, or `None` for an interior or uncarved
    /// address. Reads only header atomics.
    pub fn block_index(&self, addr: usize) -> Option<usize> {
        let area = self.base() + self.area_offset_bytes.load(Ordering::Relaxed);
        let block = self.block_bytes.load(Ordering::Relaxed);
        if addr < area || block == 0 {
            return None;
        }
        let offset = addr - area;
        let index = offset / block;
        (index * block == offset && index < self.carved_blocks.load(Ordering::Relaxed))
            .then_some(index)
    }

    /// With checking on: whether block `index` is live now.
    pub fn is_live(&self, index: usize) -> Option<bool> {
        let word = self.bitmap().get(index / 64)?;
        Some(word.load(Ordering::Acquire) & (1 << (index % 64)) != 0)
    }

    /// With checking on: mark block `index` free; `false` if it was not live (a double
    /// free, which the caller then ignores). Without checking: always `true`.
    #[inline]
    pub fn clear_live(&self, index: usize) -> bool {
        match self.bitmap().get(index / 64) {
            Some(word) => {
                word.fetch_and(!(1 << (index % 64)), Ordering::AcqRel) & (1 << (index % 64)) != 0
            }
            None => true,
        }
    }

    fn set_live(&self, block: *mut u8) {
        let index = (block as usize - self.base() - self.area_offset_bytes.load(Ordering::Relaxed))
            / self.block_bytes();
        if let Some(word) = self.bitmap().get(index / 64) {
            word.fetch_or(1 << (index % 64), Ordering::AcqRel);
        }
    }

    /// Run `f` on the owner-only part.
    ///
    /// # Safety
    /// The calling thread owns the slab's heap, and `f` does not re-enter.
    #[inline(always)]
    pub unsafe fn owned<R>(&self, f: impl FnOnce(&mut SlabOwned) -> R) -> R {
        // SAFETY: only the owner touches this part (contract), so no other reference exists.
        self.owner.with_mut(|owned| f(unsafe { &mut *owned }))
    }

    /// A free block, or `None` when the slab has none (remote frees not yet collected).
    ///
    /// # Safety
    /// The calling thread owns the slab's heap.
    #[inline]
    pub unsafe fn pop(&self, checking: bool) -> Option<NonNull<u8>> {
        // SAFETY: the caller owns the slab (contract).
        let block = unsafe {
            self.owned(|o| {
                let block = if !o.free.is_null() {
                    let block = o.free;
                    // Free blocks hold the next pointer in their first word (invariant).
                    o.free = block.cast::<*mut u8>().read();
                    block
                } else if o.bump < o.bump_end {
                    let block = o.bump;
                    o.bump = block.add(self.block_bytes());
                    self.carved_blocks.fetch_add(1, Ordering::Relaxed);
                    block
                } else {
                    return None;
                };
                o.used_blocks += 1;
                Some(block)
            })
        }?;
        if checking {
            self.set_live(block);
        }
        NonNull::new(block)
    }

    /// Push a block freed by the owner; returns the slab's `used_blocks` afterwards.
    ///
    /// # Safety
    /// The calling thread owns the slab's heap; `block` is a block of this slab handed out
    /// by `pop` and not freed since.
    #[inline]
    pub unsafe fn push_local(&self, block: NonNull<u8>) -> usize {
        // SAFETY: the caller owns the slab and the block (contract); a free block stores
        // the list link in its first word.
        unsafe {
            self.owned(|o| {
                block.as_ptr().cast::<*mut u8>().write(o.free);
                o.free = block.as_ptr();
                o.used_blocks -= 1;
                o.used_blocks
            })
        }
    }

    /// `push_local` of a listed slab: the slab's used blocks after the push; `None`, with
    /// nothing done, when the slab is unlisted (FULL), which `Heap::free_local` handles.
    ///
    /// # Safety
    /// As for `push_local`.
    #[inline(always)]
    pub unsafe fn try_push_local(&self, block: NonNull<u8>) -> Option<usize> {
        // SAFETY: as in `push_local`.
        unsafe {
            self.owned(|o| {
                if !o.listed {
                    return None;
                }
                block.as_ptr().cast::<*mut u8>().write(o.free);
                o.free = block.as_ptr();
                o.used_blocks -= 1;
                Some(o.used_blocks)
            })
        }
    }

    /// Push a block freed by a thread that does not own the slab. On `ClearedFull` the
    /// caller must queue the slab on its heap's `reclaimed` stack.
    ///
    /// # Safety
    /// `block` is a live block of this slab, not used by anyone after this call.
    #[inline]
    pub unsafe fn push_remote(&self, block: NonNull<u8>) -> PushOutcome {
        // SAFETY: forwarded; blocks are 16-byte aligned and at least 16 bytes.
        unsafe { self.remote.stack.push(block) }
    }

    /// Move every remote free onto the local free list; returns how many.
    ///
    /// # Safety
    /// The calling thread owns the slab's heap and the slab is not FULL.
    pub unsafe fn collect(&self) -> usize {
        let head = self.remote.stack.take_all();
        if head.is_null() {
            return 0;
        }
        let mut count = 1;
        let mut tail = head;
        // SAFETY: the taken blocks form a null-terminated list of blocks of this slab that
        // are now the owner's (take-all Acquire makes their links visible).
        unsafe {
            loop {
                let next = tail.cast::<*mut u8>().read();
                if next.is_null() {
                    break;
                }
                tail = next;
                count += 1;
            }
            self.owned(|o| {
                tail.cast::<*mut u8>().write(o.free);
                o.free = head;
                o.used_blocks -= count;
            });
        }
        count
    }

    /// Whether `pop` would succeed now.
    ///
    /// # Safety
    /// The calling thread owns the slab's heap.
    #[inline]
    pub unsafe fn has_free(&self) -> bool {
        // SAFETY: forwarded.
        unsafe { self.owned(|o| !o.free.is_null() || o.bump < o.bump_end) }
    }

    /// # Safety
    /// The calling thread owns the slab's heap.
    #[inline]
    pub unsafe fn used_blocks(&self) -> usize {
        // SAFETY: forwarded.
        unsafe { self.owned(|o| o.used_blocks) }
    }
}
