//! A thread heap: per size class, the slabs one thread allocates from, plus the slabs
//! handed back to it by remote frees. Owner-only except for `state` and `reclaimed`.

use super::slab::Slab;
use super::stack::{IntrusiveStack, Linked, PushOutcome, RemoteHead};
use super::Core;
use crate::error::PoolError;
use crate::sync::{AtomicU8, Ordering, UnsafeCell};
use std::ptr::{self, NonNull};

const OWNED: u8 = 0;
const ABANDONED: u8 = 1;
const DEAD: u8 = 2;

/// Who may use a heap's owner-only data.
///
/// Invariant: exactly one thread uses the owner-only data while the state is OWNED; none
/// while ABANDONED; DEAD means the allocator is gone (terminal). Ownership moves only by
/// `abandon` (Release) followed by a successful `try_adopt` (Acquire), so the adopter sees
/// every write of the previous owner.
#[derive(Debug)]
pub struct HeapState(AtomicU8);

impl HeapState {
    pub fn new_owned() -> Self {
        HeapState(AtomicU8::new(OWNED))
    }

    /// The owner gives the heap up (thread exit). A DEAD heap stays DEAD.
    pub fn abandon(&self) {
        let _ = self
            .0
            .compare_exchange(OWNED, ABANDONED, Ordering::Release, Ordering::Relaxed);
    }

    /// Take an abandoned heap; `true` makes the caller its owner.
    pub fn try_adopt(&self) -> bool {
        self.0
            .compare_exchange(ABANDONED, OWNED, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// The allocator is being dropped: no one may use the heap again.
    pub fn mark_dead(&self) {
        self.0.store(DEAD, Ordering::Release);
    }

    pub fn is_dead(&self) -> bool {
        self.0.load(Ordering::Acquire) == DEAD
    }
}

/// The slabs of one size class.
///
/// Invariant: `head` is a doubly linked list (through `SlabOwned::prev/next`) of the
/// heap's listed slabs of this class; `current` is null or on that list.
#[derive(Debug, Clone, Copy)]
struct Bin {
    current: *mut Slab,
    head: *mut Slab,
}

const EMPTY_BIN: Bin = Bin {
    current: ptr::null_mut(),
    head: ptr::null_mut(),
};

/// Owner-only part of a heap.
///
/// Invariant: `empty[p]` is a list (through `SlabOwned::next`) of this heap's formatted
/// slabs of `p` pages with no block live or pending, unlisted and not FULL.
struct HeapOwned {
    bins: Box<[Bin]>,
    empty: Box<[*mut Slab]>,
}

/// A thread heap (see `docs/lockfree-design.md`). Shared through `Arc` by the allocator's
/// registry and the owning thread's TLS; the slabs it points to live in the allocator's
/// regions and are touched only through the allocator's methods.
///
/// Aligned to 128 bytes (two lines: adjacent-line prefetch): two threads' heaps are
/// written on every operation and must not share a line.
#[repr(align(128))]
pub struct Heap {
    pub state: HeapState,
    owned: UnsafeCell<HeapOwned>,
    /// Slabs whose FULL flag a remote free cleared: relisted by the owner on refill.
    reclaimed: IntrusiveStack<Slab>,
    /// Link on the allocator's heap registry.
    registry_link: UnsafeCell<*mut Heap>,
}

// SAFETY: `registry_link` is the heap's only stack link and only the registry uses it.
unsafe impl Linked for Heap {
    fn link(&self) -> &UnsafeCell<*mut Heap> {
        &self.registry_link
    }
}

// SAFETY: the owner-only data is used by one thread at a time (HeapState invariant); the
// rest is atomics. The raw slab pointers are addresses in the allocator's regions.
unsafe impl Send for Heap {}
// SAFETY: as above.
unsafe impl Sync for Heap {}

impl Heap {
    /// A heap for `bin_count` slab classes whose slabs have at most `max_span_pages` pages.
    pub fn new(bin_count: usize, max_span_pages: usize) -> Self {
        Heap {
            state: HeapState::new_owned(),
            owned: UnsafeCell::new(HeapOwned {
                bins: vec![EMPTY_BIN; bin_count].into_boxed_slice(),
                empty: vec![ptr::null_mut(); max_span_pages + 1].into_boxed_slice(),
            }),
            reclaimed: IntrusiveStack::new(),
            registry_link: UnsafeCell::new(ptr::null_mut()),
        }
    }

    /// Run `f` on the owner-only part.
    ///
    /// # Safety
    /// The calling thread owns this heap (or holds the allocator exclusively), and `f`
    /// does not re-enter.
    #[inline(always)]
    unsafe fn owned<R>(&self, f: impl FnOnce(&mut HeapOwned) -> R) -> R {
        // SAFETY: one user at a time (contract), so this is the only reference.
        self.owned.with_mut(|owned| f(unsafe { &mut *owned }))
    }

    /// A block of `class`.
    ///
    /// # Safety
    /// The calling thread owns this heap; `class` is a slab class of `core`.
    #[inline]
    pub unsafe fn allocate(&self, core: &Core, class: usize) -> Result<NonNull<u8>, PoolError> {
        // SAFETY: the caller owns the heap and hence its slabs (contract).
        unsafe {
            self.owned(|heap| {
                let current = heap.bins[class].current;
                if let Some(slab) = current.as_ref() {
                    if let Some(block) = slab.pop(core.checking) {
                        return Ok(block);
                    }
                }
                self.refill(heap, core, class)
            })
        }
    }

    /// `allocate`'s fast path alone, for an allocator without pointer checking: a block of
    /// the current slab of `class`, or `None` (then `allocate` finds or makes another
    /// slab).
    ///
    /// # Safety
    /// As for `allocate`, and `core.checking` is off.
    #[inline(always)]
    pub unsafe fn try_pop_unchecked(&self, core: &Core, class: usize) -> Option<NonNull<u8>> {
        debug_assert!(!core.checking && class < core.slab_class_count);
        // SAFETY: the caller owns the heap and hence its slabs (contract); heaps have a
        // bin per slab class (`adopt_or_create_heap`), and `class` is one.
        unsafe { self.owned(|heap| heap.bins.get_unchecked(class).current.as_ref()?.pop(false)) }
    }

    /// The slow path: find or make a slab of `class` with a free block, and pop it.
    ///
    /// # Safety
    /// As for `allocate`.
    #[cold]
    unsafe fn refill(
        &self,
        heap: &mut HeapOwned,
        core: &Core,
        class: usize,
    ) -> Result<NonNull<u8>, PoolError> {
        // SAFETY: (whole body) the caller owns the heap, so every slab reached from its
        // bins, its empty list and its `reclaimed` stack is this thread's to use.
        unsafe {
            if let Some(current) = heap.bins[class].current.as_ref() {
                current.collect();
                if let Some(block) = current.pop(core.checking) {
                    return Ok(block);
                }
            }
            self.relist_reclaimed(heap);
            let mut node = heap.bins[class].head;
            while let Some(slab) = node.as_ref() {
                node = slab.owned(|o| o.next);
                slab.collect();
                if !slab.has_free() {
                    // Unlist it so it is not scanned again; a free brings it back.
                    unlink(&mut heap.bins[class], slab);
                    if slab.remote().try_mark_full() {
                        continue;
                    }
                    // A remote free arrived meanwhile: keep it after all.
                    link(&mut heap.bins[class], slab);
                    slab.collect();
                }
                heap.bins[class].current = slab as *const Slab as *mut Slab;
                if let Some(block) = slab.pop(core.checking) {
                    return Ok(block);
                }
            }
            heap.bins[class].current = ptr::null_mut();
            let pages = core.span_pages[class];
            let base = match NonNull::new(heap.empty[pages]) {
                Some(empty) => {
                    heap.empty[pages] = empty.as_ref().owned(|o| o.next);
                    empty.cast::<u8>()
                }
                None => core.regions.carve_slab(pages)?,
            };
            let block_bytes = core.classes.class_size(class);
            let slab = Slab::format(
                base,
                pages,
                pages << core.regions.page_shift(),
                class,
                block_bytes,
                core.classes.class_alignment(class),
                self,
                core.checking,
            );
            // This thread formats the slab at `base`: none of its blocks is live
            // (`set_page_class`'s contract).
            core.regions
                .set_page_class(base.as_ptr() as usize, pages, core.class_slot(class));
            link(&mut heap.bins[class], slab);
            heap.bins[class].current = slab as *const Slab as *mut Slab;
            Ok(slab
                .pop(core.checking)
                .expect("a freshly formatted slab has a free block"))
        }
    }

    /// Relist (or file as empty) every slab a remote free re-queued.
    ///
    /// # Safety
    /// The calling thread owns this heap.
    unsafe fn relist_reclaimed(&self, heap: &mut HeapOwned) {
        let mut node = self.reclaimed.take_all();
        // SAFETY: every queued slab belongs to this heap (only its own slabs' freers push
        // here) and is unlisted; the caller owns the heap.
        unsafe {
            while let Some(slab) = NonNull::new(node) {
                node = IntrusiveStack::next(slab);
                let slab = slab.as_ref();
                slab.collect();
                if !slab.owned(|o| o.listed) {
                    self.file(heap, slab);
                }
            }
        }
    }

    /// Put an unlisted, non-FULL slab where it belongs: the empty list or its bin.
    ///
    /// # Safety
    /// The calling thread owns this heap and the slab.
    unsafe fn file(&self, heap: &mut HeapOwned, slab: &Slab) {
        // SAFETY: forwarded.
        unsafe {
            if slab.used_blocks() == 0 {
                debug_assert_eq!(slab.remote().peek(), RemoteHead::EMPTY);
                let pages = slab.span_pages();
                slab.owned(|o| o.next = heap.empty[pages]);
                heap.empty[pages] = slab as *const Slab as *mut Slab;
            } else {
                link(&mut heap.bins[slab.class()], slab);
            }
        }
    }

    /// Free a block of one of this heap's slabs, from the owning thread.
    ///
    /// # Safety
    /// The calling thread owns this heap; `block` is a live block of `slab`, which this
    /// heap owns.
    #[inline]
    pub unsafe fn free_local(&self, slab: &Slab, block: NonNull<u8>) {
        // SAFETY: forwarded from the contract.
        unsafe {
            let used = slab.push_local(block);
            let listed = slab.owned(|o| o.listed);
            if used == 0 || !listed {
                self.owned(|heap| self.after_local_free(heap, slab, used, listed));
            }
        }
    }

    /// Whether `slab` (one of this heap's) is its class's current slab: emptied, it then
    /// stays where it is (`after_local_free` has nothing to do).
    ///
    /// # Safety
    /// The calling thread owns this heap; `slab` is one of its slabs.
    #[inline(always)]
    pub unsafe fn is_current(&self, slab: &Slab) -> bool {
        // SAFETY: forwarded contract; a slab's class is one of the heap's bins.
        unsafe { self.owned(|heap| ptr::eq(heap.bins.get_unchecked(slab.class()).current, slab)) }
    }

    /// `free_local`'s rest after a `Slab::try_push_local` that emptied the listed `slab`.
    ///
    /// # Safety
    /// As for `free_local`, the block being pushed already.
    #[cold]
    #[inline(never)]
    pub unsafe fn after_local_empty(&self, slab: &Slab) {
        // SAFETY: forwarded from the contract.
        unsafe { self.owned(|heap| self.after_local_free(heap, slab, 0, true)) };
    }

    /// The rare cases of a local free: the slab became empty, or was unlisted as FULL.
    ///
    /// # Safety
    /// As for `free_local`.
    #[cold]
    unsafe fn after_local_free(
        &self,
        heap: &mut HeapOwned,
        slab: &Slab,
        used: usize,
        listed: bool,
    ) {
        // SAFETY: forwarded from the contract.
        unsafe {
            if !listed {
                // FULL: take it back unless a remote free already did (then it is on
                // `reclaimed` and will be filed on the next refill).
                if slab.remote().try_clear_full() {
                    self.file(heap, slab);
                }
            } else if used == 0 && !ptr::eq(heap.bins[slab.class()].current, slab) {
                unlink(&mut heap.bins[slab.class()], slab);
                self.file(heap, slab);
            }
        }
    }

    /// A remote free cleared FULL on `slab` (one of this heap's): queue it for the owner.
    ///
    /// # Safety
    /// `slab` belongs to this heap and the caller's push reported `ClearedFull`.
    pub unsafe fn requeue(&self, slab: &Slab, outcome: PushOutcome) {
        if outcome == PushOutcome::ClearedFull {
            // SAFETY: the slab is unlisted and, FULL having been cleared by this caller
            // alone, on no stack (RemoteFreeStack invariant); slabs outlive the heap's use.
            unsafe { self.reclaimed.push(NonNull::from(slab)) };
        }
    }

    /// Forget every slab (under exclusive access to the allocator, as `reset` does).
    ///
    /// # Safety
    /// No thread uses this heap during the call, and every slab is about to be discarded.
    pub unsafe fn forget_slabs(&self) {
        let _ = self.reclaimed.take_all();
        // SAFETY: exclusive use (contract).
        unsafe {
            self.owned(|heap| {
                heap.bins.iter_mut().for_each(|bin| *bin = EMPTY_BIN);
                heap.empty
                    .iter_mut()
                    .for_each(|list| *list = ptr::null_mut());
            })
        }
    }
}

/// Put `slab` at the head of `bin`'s list.
///
/// # Safety
/// The caller owns the slab's heap; the slab is unlisted and of `bin`'s class.
unsafe fn link(bin: &mut Bin, slab: &Slab) {
    let this = slab as *const Slab as *mut Slab;
    let old_head = bin.head;
    // SAFETY: the caller owns the slab and the list's slabs (contract).
    unsafe {
        slab.owned(|o| {
            o.prev = ptr::null_mut();
            o.next = old_head;
            o.listed = true;
        });
        if let Some(head) = old_head.as_ref() {
            head.owned(|o| o.prev = this);
        }
    }
    bin.head = this;
}

/// Take `slab` off `bin`'s list (clearing `current` if it was).
///
/// # Safety
/// The caller owns the slab's heap; the slab is on `bin`'s list.
unsafe fn unlink(bin: &mut Bin, slab: &Slab) {
    // SAFETY: the caller owns the slab and its list neighbours (contract).
    unsafe {
        let (prev, next) = slab.owned(|o| {
            o.listed = false;
            (o.prev, o.next)
        });
        match prev.as_ref() {
            Some(prev) => prev.owned(|o| o.next = next),
            None => bin.head = next,
        }
        if let Some(next) = next.as_ref() {
            next.owned(|o| o.prev = prev);
        }
    }
    if ptr::eq(bin.current, slab) {
        bin.current = ptr::null_mut();
    }
}
