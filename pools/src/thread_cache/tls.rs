//! Each thread's map from pool id to its cache for that pool.
//!
//! The last cache used is kept in two `Cell`s, so the hot path is one TLS access and one
//! compare. The map holds an `Arc` per cache and a `Weak` to the pool's shared part; on
//! thread exit its destructor flushes every cache whose pool is still alive back into that
//! pool (`CacheShared::retire`).

use super::{CacheShared, ThreadCache};
use std::cell::{Cell, RefCell};
use std::ptr;
use std::sync::{Arc, Weak};
// A process-wide id generator: it orders no other memory.
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

static NEXT_POOL_ID: AtomicU64 = AtomicU64::new(1);

/// A process-unique pool id (never 0, never reused).
pub(crate) fn next_pool_id() -> u64 {
    NEXT_POOL_ID.fetch_add(1, Relaxed)
}

struct Entry {
    pool_id: u64,
    pool: Weak<CacheShared>,
    cache: Arc<ThreadCache>,
}

/// Invariant: `last_cache` is the cache of pool `last_id` in `entries` (or null with
/// `last_id == 0`); every cache in `entries` is owned by this thread.
struct ThreadCaches {
    last_id: Cell<u64>,
    last_cache: Cell<*const ThreadCache>,
    entries: RefCell<Vec<Entry>>,
}

impl Drop for ThreadCaches {
    fn drop(&mut self) {
        self.last_id.set(0);
        self.last_cache.set(ptr::null());
        for entry in self.entries.get_mut().drain(..) {
            if let Some(pool) = entry.pool.upgrade() {
                pool.retire(&entry.cache);
            }
        }
    }
}

thread_local! {
    static THREAD_CACHES: ThreadCaches = const {
        ThreadCaches {
            last_id: Cell::new(0),
            last_cache: Cell::new(ptr::null()),
            entries: RefCell::new(Vec::new()),
        }
    };
}

/// This thread's cache for pool `pool_id`, or null (none yet, or TLS being torn down).
#[inline(always)]
pub(crate) fn current(pool_id: u64) -> *const ThreadCache {
    THREAD_CACHES
        .try_with(|caches| {
            if caches.last_id.get() == pool_id {
                caches.last_cache.get()
            } else {
                lookup(caches, pool_id)
            }
        })
        .unwrap_or(ptr::null())
}

#[cold]
fn lookup(caches: &ThreadCaches, pool_id: u64) -> *const ThreadCache {
    let entries = caches.entries.borrow();
    match entries.iter().find(|e| e.pool_id == pool_id) {
        Some(entry) => {
            caches.last_id.set(pool_id);
            caches.last_cache.set(Arc::as_ptr(&entry.cache));
            Arc::as_ptr(&entry.cache)
        }
        None => ptr::null(),
    }
}

/// This thread's cache for `pool`, creating and registering one if needed; null while
/// this thread's TLS is being torn down.
#[cold]
pub(crate) fn get_or_create(pool: &Arc<CacheShared>) -> *const ThreadCache {
    THREAD_CACHES
        .try_with(|caches| {
            let found = lookup(caches, pool.id);
            if !found.is_null() {
                return found;
            }
            let cache = pool.register_thread();
            let raw = Arc::as_ptr(&cache);
            let mut entries = caches.entries.borrow_mut();
            // Caches of dropped pools hold nothing usable: let their memory go.
            entries.retain(|e| e.pool.strong_count() > 0);
            entries.push(Entry {
                pool_id: pool.id,
                pool: Arc::downgrade(pool),
                cache,
            });
            caches.last_id.set(pool.id);
            caches.last_cache.set(raw);
            raw
        })
        .unwrap_or(ptr::null())
}
