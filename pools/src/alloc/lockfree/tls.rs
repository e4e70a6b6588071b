//! Each thread's map from allocator id to the heap it owns for that allocator.
//!
//! The last heap used is cached in a destructor-free thread-local of its own, so the hot
//! path is one `%fs`-relative load and one compare. The map holds an `Arc` per heap, so the heap outlives any use by this thread;
//! on thread exit its destructor abandons every heap (the only thing it touches is the
//! heap's state word, so it is harmless if the allocator is already gone).

use super::heap::Heap;
use super::LockFreeAllocator;
use std::cell::{Cell, RefCell};
use std::ptr;
use std::sync::Arc;
// A process-wide id generator: it orders no other memory, so it is not part of the
// model-checked `crate::sync` surface (and needs a `const` constructor, which loom lacks).
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

static NEXT_ALLOCATOR_ID: AtomicU64 = AtomicU64::new(1);

/// A process-unique allocator id (never 0, never reused).
pub fn next_allocator_id() -> u64 {
    NEXT_ALLOCATOR_ID.fetch_add(1, Relaxed)
}

/// Invariant: every heap in `entries` is owned by this thread.
struct ThreadHeaps {
    entries: RefCell<Vec<(u64, Arc<Heap>)>>,
}

/// The last heap used, apart from the map: a `const` thread-local with no destructor is
/// one `%fs`-relative access, with no "registered / destroyed" state to check.
///
/// Invariant: `heap` is the heap of allocator `id` in this thread's `entries`, so not
/// null (or null with `id == 0`, never an allocator's id). The map's destructor clears it before it drops any entry.
struct LastHeap {
    id: Cell<u64>,
    heap: Cell<*const Heap>,
}

impl Drop for ThreadHeaps {
    fn drop(&mut self) {
        set_last(0, ptr::null());
        for (_, heap) in self.entries.get_mut().drain(..) {
            heap.state.abandon();
        }
    }
}

thread_local! {
    static THREAD_HEAPS: ThreadHeaps = const {
        ThreadHeaps {
            entries: RefCell::new(Vec::new()),
        }
    };
    static LAST_HEAP: LastHeap = const {
        LastHeap {
            id: Cell::new(0),
            heap: Cell::new(ptr::null()),
        }
    };
}

fn set_last(id: u64, heap: *const Heap) {
    LAST_HEAP.with(|last| {
        last.id.set(id);
        last.heap.set(heap);
    });
}

/// The heap this thread owns for allocator `id` if it is the last one used. One compare:
/// a matching id is never 0, so the heap beside it is not null (`LastHeap`'s invariant).
///
/// # Safety
/// The reference is used only by this thread while the allocator lives (the TLS map
/// holds the heap's `Arc` until the thread exits).
#[inline(always)]
pub unsafe fn last_heap<'a>(id: u64) -> Option<&'a Heap> {
    let (last_id, heap) = LAST_HEAP.with(|last| (last.id.get(), last.heap.get()));
    // SAFETY: `LastHeap`'s invariant: an id equal to an allocator's (never 0) comes with
    // that allocator's live, non-null heap of this thread; the lifetime is the caller's.
    (last_id == id).then(|| unsafe { &*heap })
}

/// Whether `heap` is the heap this thread last used (the free fast path). No id compare:
/// the last heap is a live heap of this thread's map, so a live `heap` at the same address
/// is that heap, whichever allocator the caller is.
#[inline(always)]
pub fn is_last_heap(heap: *const Heap) -> bool {
    let last = LAST_HEAP.with(|last| last.heap.get());
    ptr::eq(last, heap) && !heap.is_null()
}

/// The heap this thread owns for allocator `id`, or null (none yet, or TLS torn down).
#[inline]
pub fn current_heap(id: u64) -> *const Heap {
    // SAFETY: the reference becomes a raw pointer at once.
    match unsafe { last_heap(id) } {
        Some(heap) => heap,
        None => current_heap_slow(id),
    }
}

#[cold]
#[inline(never)]
fn current_heap_slow(id: u64) -> *const Heap {
    THREAD_HEAPS
        .try_with(|heaps| lookup(heaps, id))
        .unwrap_or(ptr::null())
}

fn lookup(heaps: &ThreadHeaps, id: u64) -> *const Heap {
    let entries = heaps.entries.borrow();
    match entries.iter().find(|(entry_id, _)| *entry_id == id) {
        Some((_, heap)) => {
            set_last(id, Arc::as_ptr(heap));
            Arc::as_ptr(heap)
        }
        None => ptr::null(),
    }
}

/// The heap this thread owns for `allocator`, adopting or creating one if needed; `None`
/// while this thread's TLS is being torn down.
#[cold]
pub fn heap_for(allocator: &LockFreeAllocator) -> Option<*const Heap> {
    let id = allocator.id();
    THREAD_HEAPS
        .try_with(|heaps| {
            let found = lookup(heaps, id);
            if !found.is_null() {
                return found;
            }
            let heap = allocator.adopt_or_create_heap();
            // SAFETY: `heap` came from `adopt_or_create_heap` of this allocator.
            let heap_arc = unsafe { LockFreeAllocator::heap_arc(heap) };
            let mut entries = heaps.entries.borrow_mut();
            // Heaps of dropped allocators are DEAD: let their memory go.
            entries.retain(|(_, heap)| !heap.state.is_dead());
            entries.push((id, heap_arc));
            set_last(id, heap);
            heap
        })
        .ok()
}
