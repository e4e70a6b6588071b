//! The central layer behind a pool's thread caches: where refills come from and flushes
//! go. Either a strategy under the pool's mutex (the fixed-size, size-classed and TLSF
//! pools), or the lock-free allocator itself, called concurrently with no lock at all.
//!
//! ```text
//!  thread caches ── refill / flush ──> Central::Locked(Mutex<Box<dyn Strategy>>)
//!                                  └─> Central::LockFree(LockFreeAllocator + reset lock)
//! ```
//!
//! The lock-free central's `reset` lock is a reader-writer lock that only a reset takes for
//! writing (`CpuPool::reset_exclusive`, `&mut self`): refills, flushes and a thread's exit
//! take it for reading, so they never wait for one another; they wait only for a reset,
//! which excludes every other pool call anyway. It keeps an exiting thread (whose TLS
//! holds the pool alive) from flushing into the allocator while a reset rebuilds it.

use crate::alloc::lockfree::LockFreeAllocator;
use crate::alloc::{BlockState, Strategy};
use crate::error::PoolError;
use std::cell::UnsafeCell;
use std::ptr::NonNull;
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard};

/// The message of a poisoned strategy lock (a strategy call panicked).
pub(crate) const POISONED: &str = "pool unusable: a strategy call panicked";

/// What a pool's thread caches refill from and flush into.
pub(crate) enum Central {
    /// A strategy under the pool's mutex.
    Locked(Mutex<Box<dyn Strategy>>),
    /// The lock-free allocator, shared by every thread (boxed: only the slow paths reach
    /// it, and the mutex variant is a tenth of its size).
    LockFree(Box<LockFreeCentral>),
}

/// The lock-free allocator as a central layer.
///
/// Invariant: `allocator` is read (`&`) only by a holder of a read guard of `reset`, and
/// written (`&mut`) only by the holder of its write guard.
pub(crate) struct LockFreeCentral {
    reset: RwLock<()>,
    allocator: UnsafeCell<LockFreeAllocator>,
}

// SAFETY: `LockFreeAllocator` is `Send + Sync` (every method but `reset` takes `&self` and
// is safe to call concurrently); the one `&mut` access, `reset`, holds `reset`'s write
// guard, which excludes every shared access (the type's invariant).
unsafe impl Sync for LockFreeCentral {}

impl LockFreeCentral {
    pub(crate) fn new(allocator: LockFreeAllocator) -> Self {
        LockFreeCentral {
            reset: RwLock::new(()),
            allocator: UnsafeCell::new(allocator),
        }
    }
}

/// Access to a pool's central layer for one slow path: the mutex held, or the lock-free
/// allocator borrowed under a read guard of its reset lock.
pub(crate) enum CentralGuard<'a> {
    Locked(MutexGuard<'a, Box<dyn Strategy>>),
    LockFree {
        _reset: RwLockReadGuard<'a, ()>,
        allocator: SharedLockFree<'a>,
    },
}

impl<'a> std::ops::Deref for CentralGuard<'a> {
    type Target = dyn Strategy + 'a;

    fn deref(&self) -> &Self::Target {
        match self {
            CentralGuard::Locked(strategy) => strategy.as_ref(),
            CentralGuard::LockFree { allocator, .. } => allocator,
        }
    }
}

impl std::ops::DerefMut for CentralGuard<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        match self {
            CentralGuard::Locked(strategy) => strategy.as_mut(),
            CentralGuard::LockFree { allocator, .. } => allocator,
        }
    }
}

impl CentralGuard<'_> {
    /// The central layer as a strategy.
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
    pub(crate) fn access(&self, pool: &str) -> Result<CentralGuard<'_>, PoolError> {
        match self {
            Central::Locked(strategy) => strategy
                .lock()
                .map(CentralGuard::Locked)
                .map_err(poisoned(pool)),
            Central::LockFree(central) => {
                let guard = central.reset.read().map_err(poisoned(pool))?;
                // SAFETY: a read guard of `reset` is held for as long as the borrow (the
                // guard and the borrow live and die together in `CentralGuard`).
                let allocator = unsafe { &*central.allocator.get() };
                Ok(CentralGuard::LockFree {
                    _reset: guard,
                    allocator: SharedLockFree(allocator),
                })
            }
        }
    }

    /// Run `reset` on the central layer with exclusive access, after `before` (which
    /// forgets the cached blocks) under the same exclusion.
    pub(crate) fn reset(
        &self,
        pool: &str,
        return_chunks: bool,
        before: impl FnOnce(),
    ) -> Result<(), PoolError> {
        match self {
            Central::Locked(strategy) => {
                let mut strategy = strategy.lock().map_err(poisoned(pool))?;
                before();
                strategy.reset(return_chunks);
            }
            Central::LockFree(central) => {
                let _guard = central.reset.write().map_err(poisoned(pool))?;
                before();
                // SAFETY: the write guard excludes every other access (the invariant).
                unsafe { (*central.allocator.get()).reset(return_chunks) };
            }
        }
        Ok(())
    }

    /// Whether this is the lock-free allocator.
    pub(crate) fn is_lock_free(&self) -> bool {
        matches!(self, Central::LockFree(_))
    }
}

/// The lock-free allocator seen as a `Strategy` by the thread-cache layer: every call goes
/// straight to the allocator's `&self` methods (no lock). `reset` is `Central::reset`'s.
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
        unreachable!("the lock-free central is reset by Central::reset, under its write lock")
    }

    fn reserved_bytes(&self) -> usize {
        self.0.reserved_bytes()
    }
}
