//! The central layer behind a pool's thread caches: where refills come from and flushes
//! go. Either a strategy under the pool's mutex (the fixed-size, size-classed and TLSF
//! pools), or the lock-free allocator itself, called concurrently with no lock at all.
//!
//! ```text
//!  thread caches ── refill / flush ──> Central::Locked(Mutex<Box<dyn Strategy>>)
//!                                  └─> Central::LockFree(LockFreeAllocator)
//! ```
//!
//! The lock-free allocator needs `&mut` once: to reset. `CpuPool::reset_exclusive` has
//! `&mut self`, so no pool call runs meanwhile; the one other user is a thread that is
//! exiting (its TLS holds the pool's shared part alive) and flushes its cache. Exits hold
//! the pool's registry mutex while they flush, and a reset holds it throughout
//! (`CacheShared::retire`, `CacheShared::reset`), so the two never overlap, and refills
//! and flushes of live threads take no lock.

use crate::alloc::lockfree::LockFreeAllocator;
use crate::alloc::{BlockState, Strategy};
use crate::error::PoolError;
use std::cell::UnsafeCell;
use std::ptr::NonNull;
use std::sync::{Mutex, MutexGuard};

/// The message of a poisoned strategy lock (a strategy call panicked).
pub(crate) const POISONED: &str = "pool unusable: a strategy call panicked";

/// What a pool's thread caches refill from and flush into.
pub(crate) enum Central {
    /// A strategy under the pool's mutex.
    Locked(Mutex<Box<dyn Strategy>>),
    /// The lock-free allocator, shared by every thread (boxed: only the slow paths reach
    /// it, and the mutex variant is far smaller).
    LockFree(Box<LockFreeCentral>),
}

/// The lock-free allocator as a central layer.
///
/// Invariant: `allocator` is borrowed mutably only by `reset`, whose caller excludes every
/// shared borrow (see its contract); shared borrows are made by `Central::access`.
pub(crate) struct LockFreeCentral {
    allocator: UnsafeCell<LockFreeAllocator>,
}

// SAFETY: `LockFreeAllocator` is `Send + Sync` (every method but `reset` takes `&self` and
// is safe to call concurrently); the one `&mut` borrow, in `reset`, excludes every shared
// one by its contract (the type's invariant).
unsafe impl Sync for LockFreeCentral {}

impl LockFreeCentral {
    pub(crate) fn new(allocator: LockFreeAllocator) -> Self {
        LockFreeCentral {
            allocator: UnsafeCell::new(allocator),
        }
    }

    /// Reset the allocator (`LockFreeAllocator::reset`).
    ///
    /// # Safety
    /// No other thread is inside a call on the pool, and the caller holds the pool's
    /// registry lock, which an exiting thread holds while it flushes into the allocator
    /// (`CacheShared::retire`): nothing borrows the allocator meanwhile.
    pub(crate) unsafe fn reset(&self, return_chunks: bool) {
        // SAFETY: the contract excludes every other borrow.
        unsafe { (*self.allocator.get()).reset(return_chunks) }
    }
}

/// Access to a pool's central layer for one slow path: the mutex held, or the lock-free
/// allocator borrowed (no lock).
pub(crate) enum CentralGuard<'a> {
    Locked(MutexGuard<'a, Box<dyn Strategy>>),
    LockFree(SharedLockFree<'a>),
}

impl<'a> std::ops::Deref for CentralGuard<'a> {
    type Target = dyn Strategy + 'a;

    #[inline(always)]
    fn deref(&self) -> &Self::Target {
        match self {
            CentralGuard::Locked(strategy) => strategy.as_ref(),
            CentralGuard::LockFree(allocator) => allocator,
        }
    }
}

impl std::ops::DerefMut for CentralGuard<'_> {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut Self::Target {
        match self {
            CentralGuard::Locked(strategy) => strategy.as_mut(),
            CentralGuard::LockFree(allocator) => allocator,
        }
    }
}

impl CentralGuard<'_> {
    /// The central layer as a strategy.
    #[inline(always)]
    pub(crate) fn as_mut(&mut self) -> &mut dyn Strategy {
        &mut **self
    }
}

/// A poisoned lock's error for `pool`.
fn poisoned<T>(pool: &str) -> impl FnOnce(T) -> PoolError + '_ {
    move |_| PoolError::invalid_op(pool, POISONED)
}

impl Central {
    /// Access for a refill, a flush, a thread's exit or any other slow path.
    #[inline(always)]
    pub(crate) fn access(&self, pool: &str) -> Result<CentralGuard<'_>, PoolError> {
        match self {
            Central::Locked(strategy) => strategy
                .lock()
                .map(CentralGuard::Locked)
                .map_err(poisoned(pool)),
            // SAFETY: a shared borrow; the one `&mut` borrow (`LockFreeCentral::reset`)
            // runs only while no pool call and no exiting thread's flush can (its
            // contract), and this borrow ends with such a call.
            Central::LockFree(central) => Ok(CentralGuard::LockFree(SharedLockFree(unsafe {
                &*central.allocator.get()
            }))),
        }
    }
}

/// The lock-free allocator seen as a `Strategy` by the thread-cache layer: every call goes
/// straight to the allocator's `&self` methods (no lock). `reset` is
/// `LockFreeCentral::reset`'s.
pub(crate) struct SharedLockFree<'a>(&'a LockFreeAllocator);

impl Strategy for SharedLockFree<'_> {
    fn name(&self) -> &'static str {
        "lock-free"
    }

    fn allocate(&mut self, size: usize, align: usize) -> Result<NonNull<u8>, PoolError> {
        self.0.allocate(size, align)
    }

    unsafe fn deallocate(&mut self, ptr: NonNull<u8>) -> usize {
        // SAFETY: forwarded contract.
        unsafe { self.0.deallocate(ptr) }
    }

    fn allocate_batch(
        &mut self,
        size: usize,
        align: usize,
        usable: usize,
        out: &mut [*mut u8],
    ) -> usize {
        self.0.allocate_batch(size, align, usable, out)
    }

    unsafe fn usable_size(&self, ptr: NonNull<u8>) -> usize {
        // SAFETY: forwarded contract.
        unsafe { self.0.usable_size(ptr) }
    }

    fn block_state(&self, ptr: NonNull<u8>) -> BlockState {
        self.0.block_state(ptr)
    }

    fn reset(&mut self, _return_chunks: bool) {
        unreachable!("the lock-free central is reset by LockFreeCentral::reset, under &mut")
    }

    fn reserved_bytes(&self) -> usize {
        self.0.reserved_bytes()
    }
}
