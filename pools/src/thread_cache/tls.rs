//! Each thread's map from pool id to its cache for that pool.
//!
//! The last cache used is kept in a destructor-free thread-local of its own, so the hot
//! path is one `%fs`-relative load and one compare. The map holds an `Arc` per cache and a `Weak` to the pool's shared part; on
//! thread exit its destructor flushes every cache whose pool is still alive back into that
//! pool (`CacheShared::retire`).

use super::rack::{Rack, RackHead};
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

/// Invariant: every cache in `entries` is owned by this thread.
struct ThreadCaches {
    entries: RefCell<Vec<Entry>>,
}

/// The last cache used, apart from the map: a `const` thread-local with no destructor is
/// one `%fs`-relative access, with no "registered / destroyed" state to check (the map
/// has a destructor, so every access to it checks that state first).
///
/// Invariant: `cache` is the cache of pool `id` in this thread's `entries`, so not null
/// (or null with `id == 0`, never a pool's id), and `rack` is that cache's rack
/// (`ThreadCache::rack_raw`). The map's destructor clears them before it drops any entry.
struct LastUsed {
    id: Cell<u64>,
    rack: Cell<*const RackHead>,
    cache: Cell<*const ThreadCache>,
}

impl Drop for ThreadCaches {
    fn drop(&mut self) {
        set_last(0, ptr::null());
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
            entries: RefCell::new(Vec::new()),
        }
    };
    static LAST_USED: LastUsed = const {
        LastUsed {
            id: Cell::new(0),
            rack: Cell::new(ptr::null()),
            cache: Cell::new(ptr::null()),
        }
    };
}

/// Make `cache` (null with `id == 0`) the last used, with its rack.
fn set_last(id: u64, cache: *const ThreadCache) {
    // SAFETY: a non-null `cache` is an entry's, alive (the map holds its `Arc`).
    let rack = unsafe { cache.as_ref() }.map_or(ptr::null(), ThreadCache::rack_raw);
    LAST_USED.with(|last| {
        last.id.set(id);
        last.rack.set(rack);
        last.cache.set(cache);
    });
}

/// This thread's cache for pool `pool_id`, if it has one (none yet, or TLS being torn
/// down).
///
/// # Safety
/// As for `last_used`.
#[inline(always)]
pub(crate) unsafe fn current<'a>(pool_id: u64) -> Option<&'a ThreadCache> {
    // SAFETY: forwarded contract.
    match unsafe { last_used(pool_id) } {
        Some(cache) => Some(cache),
        // SAFETY: forwarded contract.
        None => unsafe { current_slow(pool_id).as_ref() },
    }
}

/// This thread's cache for pool `pool_id` if it is the last one used (the fast paths:
/// `None` sends them to their slow path, which calls `current`). One compare: a matching
/// id is never 0, so the cache beside it is not null (`LastUsed`'s invariant).
///
/// # Safety
/// The reference is used only by this thread, inside a call on the pool, while the pool
/// lives (the TLS map holds the cache's `Arc` until the thread exits).
#[inline(always)]
pub(crate) unsafe fn last_used<'a>(pool_id: u64) -> Option<&'a ThreadCache> {
    let (id, cache) = LAST_USED.with(|last| (last.id.get(), last.cache.get()));
    // SAFETY: `LastUsed`'s invariant: an id equal to a pool's (never 0) comes with that
    // pool's live, non-null cache of this thread; the lifetime is the caller's contract.
    (id == pool_id).then(|| unsafe { &*cache })
}

/// This thread's rack of pool `pool_id`'s cache if it is the last one used: the fast
/// paths' lookup, as `last_used`.
///
/// # Safety
/// As for `last_used`.
#[inline(always)]
pub(crate) unsafe fn last_used_rack<'a>(pool_id: u64) -> Option<Rack<'a>> {
    let (id, rack) = LAST_USED.with(|last| (last.id.get(), last.rack.get()));
    // SAFETY: `LastUsed`'s invariant: an id equal to a pool's comes with its cache's
    // rack, alive while the cache is; the lifetime is the caller's contract.
    (id == pool_id).then(|| unsafe { Rack::from_raw(rack) })
}

/// The id of the last cache this thread used and its rack (`(0, null)` before any), for
/// fast paths that compare the id with more than one pool id.
#[inline(always)]
pub(crate) fn last_used_entry() -> (u64, *const RackHead) {
    LAST_USED.with(|last| (last.id.get(), last.rack.get()))
}

#[cold]
#[inline(never)]
fn current_slow(pool_id: u64) -> *const ThreadCache {
    THREAD_CACHES
        .try_with(|caches| lookup(caches, pool_id))
        .unwrap_or(ptr::null())
}

fn lookup(caches: &ThreadCaches, pool_id: u64) -> *const ThreadCache {
    let entries = caches.entries.borrow();
    match entries.iter().find(|e| e.pool_id == pool_id) {
        Some(entry) => {
            set_last(pool_id, Arc::as_ptr(&entry.cache));
            Arc::as_ptr(&entry.cache)
        }
        None => ptr::null(),
    }
}

/// `get_or_create`, looking at the last-used cache first (the slow paths of the
/// operations: most are this thread's cache of the pool it used last).
#[inline]
pub(crate) fn current_or_create(pool: &Arc<CacheShared>) -> *const ThreadCache {
    // SAFETY: the reference becomes a raw pointer at once.
    match unsafe { last_used(pool.id) } {
        Some(cache) => cache,
        None => get_or_create(pool),
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
            set_last(pool.id, raw);
            raw
        })
        .unwrap_or(ptr::null())
}
