//! The allocator's two shared stacks. Both are *push-many, take-all-by-one*: any thread
//! may push, and the one consumer empties the whole stack with a single `swap`. Nothing
//! ever pops one node with a `compare_exchange`, so there is no ABA to guard against
//! (see `docs/lockfree-design.md`).
//!
//! - [`RemoteFreeStack`]: blocks freed by threads that do not own their slab; the link
//!   lives in the freed block's first word, and the word carries the slab's FULL flag,
//!   packed by [`RemoteHead`].
//! - [`IntrusiveStack`]: objects with a link field ([`Linked`]); used for the heap registry
//!   and region list (push-only while the allocator lives) and for each heap's `reclaimed`
//!   slabs (take-all by the owner).

use crate::sync::{AtomicPtr, AtomicUsize, Ordering, UnsafeCell};
use std::ptr::{self, NonNull};

/// Bit 0 of the remote-free word: the owner unlisted this slab as full, and the next
/// remote free must re-queue it. Blocks are at least 16-byte aligned, so bit 0 of a block
/// address is always 0.
const FULL_BIT: usize = 1;

/// The packing of the remote-free word: a block address (the top of the stack, or 0) and
/// the FULL flag. Every read or write of the word goes through this type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteHead(usize);

impl RemoteHead {
    /// No remote frees and not full.
    pub const EMPTY: RemoteHead = RemoteHead(0);
    /// No remote frees; the owner unlisted the slab as full.
    pub const FULL: RemoteHead = RemoteHead(FULL_BIT);

    /// A stack whose top is `block` (never FULL: a push always clears the flag).
    #[inline]
    fn top(block: NonNull<u8>) -> RemoteHead {
        let addr = block.as_ptr() as usize;
        debug_assert_eq!(addr & FULL_BIT, 0, "blocks are at least 2-byte aligned");
        RemoteHead(addr)
    }

    #[inline]
    fn block(self) -> *mut u8 {
        (self.0 & !FULL_BIT) as *mut u8
    }

    #[inline]
    pub fn is_full(self) -> bool {
        self.0 & FULL_BIT != 0
    }
}

/// What a remote push found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// The block is on the stack; nothing else to do.
    Pushed,
    /// The block is on the stack and this push cleared the FULL flag: the caller, and
    /// only the caller, must queue the slab on its heap's `reclaimed` stack.
    ClearedFull,
}

/// A slab's remote-free stack (see the module doc).
///
/// Invariant: the word is a [`RemoteHead`]. The FULL flag is set only by the slab's owner
/// with `try_mark_full` (from EMPTY) and cleared either by exactly one `push` (which then
/// reports `ClearedFull`) or by the owner's `try_clear_full`; never both for one FULL period,
/// because each is a compare-exchange of the whole word.
#[derive(Debug)]
pub struct RemoteFreeStack {
    head: AtomicUsize,
}

impl Default for RemoteFreeStack {
    fn default() -> Self {
        Self::new()
    }
}

impl RemoteFreeStack {
    pub fn new() -> Self {
        RemoteFreeStack {
            head: AtomicUsize::new(RemoteHead::EMPTY.0),
        }
    }

    /// Push a freed block.
    ///
    /// The success ordering is `AcqRel`: Release publishes the block's bytes and its link
    /// to the owner's take-all; Acquire (which matters only when the push clears FULL)
    /// orders the owner's last use of the slab's `reclaim` link before the caller re-queues it.
    ///
    /// # Safety
    /// `block` is at least `size_of::<usize>()` bytes, 16-byte aligned, owned by the caller
    /// (no one else reads or writes it from now on except through this stack), and belongs
    /// to the slab that owns this stack.
    #[inline]
    pub unsafe fn push(&self, block: NonNull<u8>) -> PushOutcome {
        let mut current = RemoteHead(self.head.load(Ordering::Relaxed));
        loop {
            // SAFETY: by the contract the block is the caller's and large enough for a link;
            // until the compare-exchange below succeeds nobody else can see it.
            unsafe { block.as_ptr().cast::<*mut u8>().write(current.block()) };
            match self.head.compare_exchange_weak(
                current.0,
                RemoteHead::top(block).0,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) if current.is_full() => return PushOutcome::ClearedFull,
                Ok(_) => return PushOutcome::Pushed,
                Err(actual) => current = RemoteHead(actual),
            }
        }
    }

    /// Take every pushed block at once (the owner only). Returns the top block or null;
    /// each block's first word links to the next, the last one holds null.
    ///
    /// Acquire pairs with every push's Release (pushes form one release sequence), so the
    /// bytes written into each block before its push are visible to the caller.
    #[inline]
    pub fn take_all(&self) -> *mut u8 {
        // Cheap check first: most refills of a slab find no remote frees, and a plain load
        // does not take the cache line exclusively away from concurrent pushers.
        if self.head.load(Ordering::Relaxed) == RemoteHead::EMPTY.0 {
            return ptr::null_mut();
        }
        let taken = RemoteHead(self.head.swap(RemoteHead::EMPTY.0, Ordering::Acquire));
        debug_assert!(
            !taken.is_full(),
            "the owner never collects a slab it unlisted"
        );
        taken.block()
    }

    /// Owner: mark an unlisted slab FULL, if no remote free arrived meanwhile.
    /// Release orders the owner's last use of the slab's reclaim link before a pusher's.
    #[inline]
    pub fn try_mark_full(&self) -> bool {
        self.head
            .compare_exchange(
                RemoteHead::EMPTY.0,
                RemoteHead::FULL.0,
                Ordering::Release,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    /// Owner: take a FULL slab back without a remote free (a local free made room).
    /// `false` means a pusher already cleared FULL and is queueing (or has queued) the slab.
    #[inline]
    pub fn try_clear_full(&self) -> bool {
        self.head
            .compare_exchange(
                RemoteHead::FULL.0,
                RemoteHead::EMPTY.0,
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    /// The current word (for assertions and tests).
    pub fn peek(&self) -> RemoteHead {
        RemoteHead(self.head.load(Ordering::Acquire))
    }

    /// Forget everything (used when a slab is formatted under exclusive access).
    pub fn clear(&self) {
        self.head.store(RemoteHead::EMPTY.0, Ordering::Relaxed);
    }
}

/// An object that can sit on an [`IntrusiveStack`].
///
/// # Safety
/// `link` must return the same field for the object's whole life, and nothing but the
/// stack may read or write that field while the object is on a stack.
pub unsafe trait Linked {
    fn link(&self) -> &UnsafeCell<*mut Self>;
}

/// A Treiber stack of [`Linked`] objects with push and take-all (no single pop).
#[derive(Debug)]
pub struct IntrusiveStack<T> {
    head: AtomicPtr<T>,
}

impl<T: Linked> Default for IntrusiveStack<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Linked> IntrusiveStack<T> {
    pub fn new() -> Self {
        IntrusiveStack {
            head: AtomicPtr::new(ptr::null_mut()),
        }
    }

    /// Push `node`. Release publishes the node's fields (and its link) to whoever loads
    /// or takes the head with Acquire.
    ///
    /// # Safety
    /// `node` is valid for as long as it may be reached from this stack, and is not on
    /// any stack now.
    pub unsafe fn push(&self, node: NonNull<T>) {
        let mut current = self.head.load(Ordering::Relaxed);
        loop {
            // SAFETY: the node is valid (contract) and not yet reachable by anyone else,
            // so writing its link races with nothing.
            unsafe { node.as_ref().link().with_mut(|link| link.write(current)) };
            match self.head.compare_exchange_weak(
                current,
                node.as_ptr(),
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }

    /// Take the whole stack (one consumer). Walk it with [`IntrusiveStack::next`].
    pub fn take_all(&self) -> *mut T {
        if self.head.load(Ordering::Relaxed).is_null() {
            return ptr::null_mut();
        }
        self.head.swap(ptr::null_mut(), Ordering::Acquire)
    }

    /// The top of a push-only stack, for iteration with [`IntrusiveStack::next`].
    pub fn head(&self) -> *mut T {
        self.head.load(Ordering::Acquire)
    }

    /// The node below `node`.
    ///
    /// # Safety
    /// `node` was reached from `head()` or `take_all()` of a stack and is still valid.
    pub unsafe fn next(node: NonNull<T>) -> *mut T {
        // SAFETY: the node is valid (contract); its link was written before the node was
        // published and is not written again while it is reachable (trait contract).
        unsafe { node.as_ref().link().with(|link| link.read()) }
    }

    /// Replace the whole stack under exclusive access (`reset`, `Drop`).
    pub fn replace(&mut self, head: *mut T) -> *mut T {
        self.head.swap(head, Ordering::AcqRel)
    }
}
