//! `CpuPool`: a host-memory pool: an allocator strategy in the sync mode the config asks
//! for, with statistics and the debug checks.
//!
//! ```text
//! CpuPool::allocate_with ──> Core::Cached(thread caches ─> Mutex<Box<dyn Strategy>>)
//!                                          (sync = mutex or single-threaded, thread_cache
//!                                          on: the default)
//!                        ──> Core::Cached(thread caches ─> LockFreeAllocator)
//!                                          (lock-free, thread_cache on: the default)
//!                        ──> Core::Locked(Mutex<Box<dyn Strategy>>)      (sync = mutex)
//!                        ──> Core::Single(busy flag + Box<dyn Strategy>)
//!                                          (single-threaded, thread_cache off)
//!                        ──> Core::LockFree(LockFreeAllocator)            (lock-free)
//! ```
//!
//! The cached core (`thread_cache`, `docs/thread-cache.md`) serves the common allocate
//! and free from the calling thread's cache: a table lookup, a stack pop or push and
//! batched counters, no lock and no atomic read-modify-write. It is used for the built-in
//! strategies under `sync = "mutex"` and `"single-threaded"` (the busy flag's
//! compare-exchange per call would cost a single-threaded pool four times a cache hit),
//! and for the lock-free allocator (then the central
//! layer, called with no lock) unless `thread_cache.enabled` is off or
//! `debug.check_pointers` is on (a block in a thread cache looks live to the strategy,
//! and checked mode promises to catch double frees even under concurrency), or, for the
//! lock-free allocator, its alignment is above 16 bytes.
//!
//! Statistics count usable bytes (the block size that served a request). Under a lock or
//! the busy flag every counter writer is serialised, so the cheap single-writer counter
//! updates are used there; the lock-free core uses the sharded ones (`on_alloc`, `on_free`:
//! each thread counts on its own cache line; see `StatsCounters` for the peak's bound).
//!
//! Giving blocks back: `MemoryPool::deallocate` and friends are `unsafe fn` (the caller
//! vouches for the pointer); the `_checked` forms verify it and need `debug.check_pointers`,
//! under which every call checks under the strategy's exclusive access (the lock-free core
//! takes a mutex then), so a check and the operation it guards cannot be separated by
//! another thread.
//!
//! `reset()`: [`CpuPool::reset_exclusive`] (`&mut self`) is the safe form: the exclusive
//! borrow proves no allocator handle (`&CpuPool` as `allocator_api2::Allocator`) is alive
//! and no thread is inside the pool. `MemoryPool::reset` is `unsafe`, and returns
//! `InvalidOperation` for the lock-free core, whose threads `&self` cannot exclude.

use crate::alloc::fixed::{with_request, FixedSizeAllocator};
use crate::alloc::lockfree::{FreeLocal, Heap, LockFreeAllocator, Slab};
use crate::alloc::segment::{SegmentGeometry, MAX_CLASS_CAP};
use crate::alloc::size_classed::SizeClassedAllocator;
use crate::alloc::variable::Tlsf;
use crate::alloc::{BlockState, Strategy, Upstream};
use crate::config::{AllocatorKind, MemoryType, PoolConfig, ReturnPolicy, SyncMode};
use crate::debug::{self, LiveTracker};
use crate::error::PoolError;
use crate::os::OsChunks;
use crate::pool::{AllocFlags, MemoryPool};
use crate::stats::{MemoryStats, StatsCounters};
use crate::thread_cache::{
    last_used_entry, last_used_rack, slot_of_class, BlockSizer, CacheClasses, CacheShared, Central,
    LockFreeCentral, Rack, RackHead, RequestSlots,
};
use std::cell::UnsafeCell;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// A strategy used from one thread at a time, with misuse detected instead of racing.
struct SingleThreaded {
    /// Invariant: `strategy` is only accessed by the thread that set `busy` from false to
    /// true, until it stores false again.
    busy: AtomicBool,
    strategy: UnsafeCell<Box<dyn Strategy>>,
}

// SAFETY: access to `strategy` is exclusive by the `busy` flag protocol (see the field
// invariant), and `Box<dyn Strategy>` is `Send`, so sharing the wrapper is sound.
unsafe impl Sync for SingleThreaded {}

// One `Core` per pool, never moved on a hot path: boxing the lock-free allocator would
// only add a pointer chase to its fast path.
#[allow(clippy::large_enum_variant)]
enum Core {
    /// Thread caches in front of the locked strategy.
    Cached(Arc<CacheShared>),
    Locked(Mutex<Box<dyn Strategy>>),
    Single(SingleThreaded),
    LockFree(LockFreeAllocator),
}

/// The largest TLSF block (usable bytes) whose growing realloc moves through the thread
/// cache (a cache pop, a copy, a cache push: no lock) instead of asking the strategy,
/// under the lock, to grow it into a free neighbour. Copying four cache lines costs less
/// than the lock and the boundary-tag walk; a larger block's copy does not (python-json's
/// growing lists: 1 KiB here took 184 -> 223 estimated cycles per op, its copies missing
/// the cache where growing in place touched nothing).
const TLSF_MOVE_MAX_BYTES: usize = 256;

/// A CPU memory pool. See the module documentation.
pub struct CpuPool {
    name: Arc<str>,
    config: PoolConfig,
    stats: Arc<StatsCounters>,
    core: Core,
    /// `Some` iff `config.debug.track_live`.
    live: Option<LiveTracker>,
    /// Taken by every call of the lock-free core in checked mode (see `checked_serial`).
    checked: Mutex<()>,
    /// The strategy came from `with_strategy` and reports reserved bytes to its own
    /// upstream, so `stats()` asks it instead of the counters.
    external_strategy: bool,
    /// The lock-free core with no debug check, tracking or poisoning, at an alignment its
    /// thread heaps serve directly: `allocate_or_none` / `deallocate_or_false` call it
    /// without the checked path's serialisation and error plumbing. Invariant: `true`
    /// only with `Core::LockFree` (`fast_lock_free` tests this flag alone).
    lock_free_fast: bool,
    /// The cached core's shared part when no debug option needs the slow paths (no live
    /// tracking, no poisoning): the fast paths test this one field instead of decoding
    /// `core` and reading the config.
    fast_cache: Option<Arc<CacheShared>>,
    /// `fast_cache`'s pool id, or `NO_FAST_CACHE` without one. The fast paths compare it
    /// with this thread's last-used cache id first: a match means `fast_cache` is `Some`
    /// and the thread's cache for it is at hand, so they make no separate `Option` test.
    /// Invariant: set with `fast_cache` at construction; neither changes after.
    fast_id: u64,
    /// The free fast path of a `fast_cache` whose span owners are its classes (the
    /// size-classed and fixed-size strategies: `CacheShared::segment_class`), inline: a
    /// free whose thread used this pool last finds the block's class from these fields
    /// and the block alone, without reading `fast_cache`.
    fast_segment: FastSegment,
    /// `fast_cache`'s request table (`RequestSlots::none()` without one): the allocation
    /// fast path reads the slot of a request's class from the pool's own fields, without
    /// loading `fast_cache` first.
    fast_request: RequestSlots,
    /// `fast_id` when `fast_cache` is a TLSF strategy's (`BlockSizer::Tlsf`), else
    /// `NO_FAST_CACHE`: the free fast path compares this thread's last-used cache id with
    /// it (one compare, as with `fast_segment.id`), reads the block's usable size from
    /// its boundary tag and finds the class of exactly that size in `fast_request`,
    /// inline.
    fast_tlsf_id: u64,
}

/// `CpuPool::fast_segment`. Invariant: `id` is `fast_id` when `fast_cache` has a
/// `segment_class` geometry, and `geometry` is that geometry (whose class cap is the
/// cache's class count); otherwise `id` is `NO_FAST_CACHE` and `geometry` is unused.
#[derive(Debug, Clone, Copy)]
struct FastSegment {
    id: u64,
    geometry: Option<SegmentGeometry>,
    /// One class of one block size (a fixed-size strategy: `BlockSizer::Uniform`), whose
    /// blocks keep their place for any new size they hold; else the size-classed rule
    /// (`BlockSizer::resizes_in_place`).
    uniform: bool,
}

impl FastSegment {
    const NONE: FastSegment = FastSegment {
        id: NO_FAST_CACHE,
        geometry: None,
        uniform: false,
    };

    fn of(shared: Option<&Arc<CacheShared>>) -> FastSegment {
        match shared.and_then(|shared| Some((shared, shared.segment_class()?))) {
            Some((shared, geometry)) => FastSegment {
                id: shared.id,
                geometry: Some(geometry),
                uniform: matches!(shared.sizer, BlockSizer::Uniform(..)),
            },
            None => FastSegment::NONE,
        }
    }

    /// Whether a block of this segment heap with `usable` bytes keeps its place for
    /// `new_size` bytes (`BlockSizer::resizes_in_place` of the pool's sizer).
    #[inline(always)]
    fn keeps(self, usable: usize, new_size: usize) -> bool {
        new_size <= usable && (self.uniform || new_size.saturating_mul(2) > usable)
    }
}

/// What `CpuPool::reallocate_fast` made of a reallocation.
enum FastRealloc {
    /// The block keeps its place (counted).
    Kept,
    /// The block must move; it is of the cache class at this slot, with this many usable
    /// bytes.
    Move { slot: usize, usable: usize },
    /// Nothing done: the general path's.
    Declined,
}

/// `CpuPool::fast_id` of a pool without a fast cache: never a pool id (ids count up from
/// 1) nor a thread's "no cache used yet" (0).
const NO_FAST_CACHE: u64 = u64::MAX;

impl CpuPool {
    /// A pool with the strategy and sync mode of `config` over `mmap`ed chunks.
    /// An invalid config is `InvalidOperation` with the validation message.
    pub fn new(name: &str, config: PoolConfig) -> Result<CpuPool, PoolError> {
        let mut config = config;
        config
            .validate_cpu()
            .map_err(|e| PoolError::invalid_op(name, e.to_string()))?;
        let name: Arc<str> = Arc::from(name);
        let stats = Arc::new(StatsCounters::new());
        if config.allocator == AllocatorKind::LockFree {
            // The lock-free allocator is shared by design; a mutex around it would only
            // slow it down, so the sync mode follows the allocator (see PoolConfig::validate).
            config.sync = SyncMode::LockFree;
            let mut allocator =
                LockFreeAllocator::new(Arc::clone(&name), &config, Arc::clone(&stats))?;
            if let Some(classes) = Self::lock_free_cache_classes(&config, &allocator) {
                let cap = u16::try_from(classes.class_count()).expect("at most MAX_CLASS_CAP");
                allocator.set_class_cap(cap);
                let sizer = BlockSizer::LockFree(allocator.geometry());
                let central = Central::LockFree(Box::new(LockFreeCentral::new(allocator)));
                return Ok(Self::cached(name, config, stats, central, classes, sizer));
            }
            let debug = config.debug;
            let lock_free_fast = !debug.check_pointers
                && !debug.track_live
                && !debug.poison_on_free
                && allocator.serves_local();
            return Ok(CpuPool {
                live: config.debug.track_live.then(LiveTracker::new),
                name,
                config,
                stats,
                core: Core::LockFree(allocator),
                external_strategy: false,
                checked: Mutex::new(()),
                lock_free_fast,
                fast_cache: None,
                fast_id: NO_FAST_CACHE,
                fast_segment: FastSegment::NONE,
                fast_request: RequestSlots::none(),
                fast_tlsf_id: NO_FAST_CACHE,
            });
        }
        let upstream = Upstream::new(
            Box::new(OsChunks::new(config.huge_pages)),
            Arc::clone(&name),
            config.chunk_size_bytes,
            config.growth_factor,
            config.max_size_bytes,
            Arc::clone(&stats),
        );
        let (strategy, cache): (Box<dyn Strategy>, _) = match config.allocator {
            AllocatorKind::FixedSize => {
                let mut fixed = FixedSizeAllocator::new(upstream, &config)?;
                let stride = fixed.block_stride_bytes();
                // One cache class: the page-class map says 0 or 1 (none).
                fixed.set_class_cap(1);
                let cache = (
                    CacheClasses::uniform(stride, &config),
                    BlockSizer::Uniform(stride, fixed.geometry()),
                );
                (Box::new(fixed), cache)
            }
            AllocatorKind::SizeClassed => {
                let mut classed = SizeClassedAllocator::new(upstream, &config)?;
                let classes = CacheClasses::for_table(&config);
                let cap = u16::try_from(classes.class_count()).ok();
                let sizer = match cap.filter(|&cap| cap <= MAX_CLASS_CAP) {
                    // The page-class map says a cache class, or the class count (none).
                    Some(cap) if classes.matches_table(classed.table()) => {
                        classed.set_class_cap(cap);
                        BlockSizer::SegmentClass(classed.geometry())
                    }
                    _ => BlockSizer::Segment(classed.geometry()),
                };
                (Box::new(classed), (classes, sizer))
            }
            AllocatorKind::VariableSize => {
                let mut tlsf = Tlsf::new(upstream, &config)?;
                let classes = CacheClasses::for_table(&config);
                // The refills' blocks carry their class's slot: the free's fast path
                // (`free_fast_tlsf`).
                tlsf.set_free_hints(classes.exact_slots());
                (Box::new(tlsf), (classes, BlockSizer::Tlsf))
            }
            AllocatorKind::LockFree => unreachable!("handled above"),
        };
        // A single-threaded pool gets the layer too: its hits take no atomic
        // read-modify-write, where the busy flag that detects misuse takes one per call.
        let cached = config.thread_cache.enabled
            && matches!(config.sync, SyncMode::Mutex | SyncMode::SingleThreaded)
            && !config.debug.check_pointers
            && cache.0.serves_requests();
        if cached {
            let (classes, sizer) = cache;
            let central = Central::Locked(Mutex::new(strategy));
            return Ok(Self::cached(name, config, stats, central, classes, sizer));
        }
        Ok(Self::assemble(name, config, stats, strategy, false))
    }

    /// The cache classes of a lock-free pool that gets thread caches in front of its
    /// allocator, or `None` when it gets none: the layer is off, pointers are checked
    /// (a cached block looks live to the allocator), or the cache's classes are not the
    /// allocator's slab classes (an alignment above 16 bytes), on which the free fast
    /// path's page-class map relies.
    fn lock_free_cache_classes(
        config: &PoolConfig,
        allocator: &LockFreeAllocator,
    ) -> Option<CacheClasses> {
        // The model checks exercise the allocator alone; its headers' maps sit elsewhere
        // under loom's larger atomics.
        if cfg!(loom) || !config.thread_cache.enabled || config.debug.check_pointers {
            return None;
        }
        let classes = CacheClasses::for_table(config);
        let fits = classes.class_count() <= usize::from(MAX_CLASS_CAP);
        (fits && classes.serves_requests() && classes.matches_table(allocator.table()))
            .then_some(classes)
    }

    /// A pool whose thread caches refill from and flush into `central`.
    fn cached(
        name: Arc<str>,
        config: PoolConfig,
        stats: Arc<StatsCounters>,
        central: Central,
        classes: CacheClasses,
        sizer: BlockSizer,
    ) -> CpuPool {
        let shared = CacheShared::new(
            Arc::clone(&name),
            central,
            Arc::clone(&stats),
            classes,
            sizer,
            config.alignment,
            config.thread_cache.max_thread_bytes,
        );
        let shared = Arc::new(shared);
        let fast_cache =
            (!config.debug.track_live && !config.debug.poison_on_free).then(|| Arc::clone(&shared));
        let fast_id = fast_cache
            .as_ref()
            .map_or(NO_FAST_CACHE, |shared| shared.id);
        let fast_segment = FastSegment::of(fast_cache.as_ref());
        let fast_request = fast_cache
            .as_ref()
            .map_or_else(RequestSlots::none, |shared| shared.classes.request_slots());
        let fast_tlsf_id = match &fast_cache {
            Some(shared) if matches!(shared.sizer, BlockSizer::Tlsf) => fast_id,
            _ => NO_FAST_CACHE,
        };
        CpuPool {
            live: config.debug.track_live.then(LiveTracker::new),
            name,
            config,
            stats,
            core: Core::Cached(shared),
            external_strategy: false,
            checked: Mutex::new(()),
            lock_free_fast: false,
            fast_cache,
            fast_id,
            fast_segment,
            fast_request,
            fast_tlsf_id,
        }
    }

    /// A pool over a user strategy (which brings its own upstream). `config` supplies the
    /// sync mode (mutex or single-threaded), alignment and debug checks.
    pub fn with_strategy(
        name: &str,
        config: PoolConfig,
        strategy: Box<dyn Strategy>,
    ) -> Result<CpuPool, PoolError> {
        config
            .validate()
            .map_err(|e| PoolError::invalid_op(name, e.to_string()))?;
        if config.sync == SyncMode::LockFree {
            return Err(PoolError::invalid_op(
                name,
                "a Strategy is single-threaded: use sync = \"mutex\" or \"single-threaded\"",
            ));
        }
        let stats = Arc::new(StatsCounters::new());
        Ok(Self::assemble(
            Arc::from(name),
            config,
            stats,
            strategy,
            true,
        ))
    }

    fn assemble(
        name: Arc<str>,
        config: PoolConfig,
        stats: Arc<StatsCounters>,
        strategy: Box<dyn Strategy>,
        external_strategy: bool,
    ) -> CpuPool {
        let core = match config.sync {
            SyncMode::SingleThreaded => Core::Single(SingleThreaded {
                busy: AtomicBool::new(false),
                strategy: UnsafeCell::new(strategy),
            }),
            SyncMode::Mutex | SyncMode::LockFree => Core::Locked(Mutex::new(strategy)),
        };
        CpuPool {
            live: config.debug.track_live.then(LiveTracker::new),
            name,
            config,
            stats,
            core,
            external_strategy,
            checked: Mutex::new(()),
            lock_free_fast: false,
            fast_cache: None,
            fast_id: NO_FAST_CACHE,
            fast_segment: FastSegment::NONE,
            fast_request: RequestSlots::none(),
            fast_tlsf_id: NO_FAST_CACHE,
        }
    }

    /// Run `f` with exclusive access to the strategy.
    #[inline]
    fn with_strategy_mut<R>(
        &self,
        f: impl FnOnce(&mut dyn Strategy) -> Result<R, PoolError>,
    ) -> Result<R, PoolError> {
        match &self.core {
            Core::Cached(shared) => f(shared.lock()?.as_mut()),
            Core::Locked(mutex) => {
                let mut guard = mutex.lock().map_err(|_| {
                    PoolError::invalid_op(&self.name, "pool unusable: a strategy call panicked")
                })?;
                f(guard.as_mut())
            }
            Core::Single(single) => {
                if single
                    .busy
                    .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                    .is_err()
                {
                    return Err(PoolError::invalid_op(
                        &self.name,
                        "single-threaded pool used from two threads at once (use sync = \"mutex\")",
                    ));
                }
                /// Clears the busy flag even if `f` panics.
                struct Release<'a>(&'a AtomicBool);
                impl Drop for Release<'_> {
                    fn drop(&mut self) {
                        self.0.store(false, Ordering::Release);
                    }
                }
                let _release = Release(&single.busy);
                // SAFETY: we set `busy` from false to true, so no other access to the
                // strategy exists until `_release` clears it (field invariant).
                let strategy = unsafe { &mut *single.strategy.get() };
                f(strategy.as_mut())
            }
            Core::LockFree(_) => unreachable!("the lock-free core has no Strategy"),
        }
    }

    fn effective_align(&self, flags: &AllocFlags) -> Result<usize, PoolError> {
        let align = if flags.align == 0 {
            self.config.alignment
        } else {
            flags.align
        };
        if !align.is_power_of_two() {
            return Err(PoolError::invalid_op(
                &self.name,
                format!("alignment {align} is not a power of two"),
            ));
        }
        Ok(align.max(self.config.alignment))
    }

    /// A pointer the strategy has not vouched for: the checked answer, as an error.
    fn check_live(&self, strategy: &dyn Strategy, ptr: NonNull<u8>) -> Result<usize, PoolError> {
        self.check_state(strategy.block_state(ptr), ptr)
    }

    fn check_state(&self, state: BlockState, ptr: NonNull<u8>) -> Result<usize, PoolError> {
        match state {
            BlockState::Live(usable) => Ok(usable),
            BlockState::NotLive => Err(PoolError::invalid_ptr(
                &self.name,
                ptr.as_ptr() as usize,
                "not a live block of this pool (already freed, or not the start of a block)",
            )),
            BlockState::Foreign => Err(PoolError::invalid_ptr(
                &self.name,
                ptr.as_ptr() as usize,
                "not allocated by this pool",
            )),
        }
    }

    /// Whether the `_checked` entry points can answer for any pointer: true iff
    /// `debug.check_pointers` is on.
    pub fn verifies_pointers(&self) -> bool {
        self.config.debug.check_pointers
    }

    fn require_verification(&self) -> Result<(), PoolError> {
        if self.verifies_pointers() {
            Ok(())
        } else {
            Err(PoolError::invalid_op(
                &self.name,
                "this pool does not verify pointers (debug.check_pointers = false): \
                 enable the check, or use the unsafe deallocate/reallocate/usable_size",
            ))
        }
    }

    /// In checked mode, the lock-free core serialises every call, so that a check and the
    /// operation it guards are one step (a double free racing an allocation of the same
    /// block must see one order or the other). `None` outside checked mode.
    fn checked_serial(&self) -> Option<MutexGuard<'_, ()>> {
        self.config
            .debug
            .check_pointers
            .then(|| self.checked.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The uncached cores' free: `deallocate` handles the cached core before calling this,
    /// and `deallocate_checked` needs checked mode, which never builds a cached core.
    ///
    /// # Safety
    /// `ptr` is a live block of this pool, or `debug.check_pointers` is on.
    #[inline(never)]
    unsafe fn free_block(&self, ptr: NonNull<u8>) -> Result<(), PoolError> {
        debug_assert!(!matches!(self.core, Core::Cached(_)));
        if let Some(live) = &self.live {
            if live.on_free(ptr.as_ptr() as usize).is_none() {
                return Err(PoolError::invalid_ptr(
                    &self.name,
                    ptr.as_ptr() as usize,
                    "not a live block of this pool (already freed, or never allocated here)",
                ));
            }
        }
        let debug = self.config.debug;
        if let Core::LockFree(allocator) = &self.core {
            let _serial = self.checked_serial();
            if debug.check_pointers {
                self.check_state(allocator.block_state(ptr), ptr)?;
            }
            if debug.poison_on_free {
                // SAFETY: ptr is a live block (checked, or the caller's contract), unused
                // once freed.
                unsafe { debug::poison(ptr, allocator.usable_size(ptr)) };
            }
            // SAFETY: ptr is live: checked above under `checked_serial`, or the caller's
            // contract.
            let usable = unsafe { allocator.deallocate(ptr) };
            self.stats.on_free(usable);
            return Ok(());
        }
        self.with_strategy_mut(|s| {
            if debug.check_pointers {
                self.check_live(s, ptr)?;
            }
            if debug.poison_on_free {
                // SAFETY: ptr is a live block (checked above, or the caller's contract
                // without checks), which nobody uses once freed.
                unsafe { debug::poison(ptr, s.usable_size(ptr)) };
            }
            // SAFETY: ptr is a live block of this strategy: verified by `check_live` under
            // the same exclusive access in checked mode, the caller's contract otherwise.
            let usable = unsafe { s.deallocate(ptr) };
            self.stats.on_free_serialized(usable);
            Ok(())
        })
    }

    /// The uncached cores' reallocation, as one step under the strategy's exclusive access
    /// (or `checked_serial` for the lock-free core), so that in checked mode nothing can free `ptr` between the
    /// check, the copy and the free.
    ///
    /// # Safety
    /// `ptr` is a live block of this pool, or `debug.check_pointers` is on.
    unsafe fn realloc_block(
        &self,
        ptr: NonNull<u8>,
        new_size: usize,
    ) -> Result<NonNull<u8>, PoolError> {
        // `reallocate` handles the cached core before calling this, and
        // `reallocate_checked` needs checked mode, which never builds one.
        debug_assert!(!matches!(self.core, Core::Cached(_)));
        let new_size = new_size.max(1);
        let debug = self.config.debug;
        let align = self.config.alignment;
        if let Some(live) = &self.live {
            if live.size_of(ptr.as_ptr() as usize).is_none() {
                return Err(PoolError::invalid_ptr(
                    &self.name,
                    ptr.as_ptr() as usize,
                    "not a live block of this pool (already freed, or never allocated here)",
                ));
            }
        }
        let failed = |e: PoolError| {
            self.stats.on_failure();
            with_request(e, new_size)
        };
        let new = if let Core::LockFree(allocator) = &self.core {
            let _serial = self.checked_serial();
            let old_usable = if debug.check_pointers {
                self.check_state(allocator.block_state(ptr), ptr)?
            } else {
                // SAFETY: the caller's contract: ptr is a live block of this pool.
                unsafe { allocator.usable_size(ptr) }
            };
            if new_size <= old_usable && new_size.saturating_mul(2) > old_usable {
                // In place: the block holds the new size and wastes less than half of
                // it. A reallocation counts as one free and one allocation.
                self.stats.on_free(old_usable);
                self.stats.on_alloc(old_usable);
                if let Some(live) = &self.live {
                    live.on_alloc(ptr.as_ptr() as usize, new_size);
                }
                return Ok(ptr);
            }
            let target = self.move_target(old_usable, new_size);
            let new = match allocator.allocate(target, align) {
                Ok(new) => new,
                Err(_) if target > new_size => {
                    allocator.allocate(new_size, align).map_err(failed)?
                }
                Err(e) => return Err(failed(e)),
            };
            // SAFETY: `new` was just handed out by this allocator.
            self.stats.on_alloc(unsafe { allocator.usable_size(new) });
            // SAFETY: `ptr` (verified or the caller's contract) and `new` are distinct live
            // blocks, each at least `min(old_usable, new_size)` bytes.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr.as_ptr(), new.as_ptr(), old_usable.min(new_size))
            };
            if debug.poison_on_free {
                // SAFETY: ptr is live and unused once freed.
                unsafe { debug::poison(ptr, old_usable) };
            }
            // SAFETY: ptr is live, as above.
            let usable = unsafe { allocator.deallocate(ptr) };
            self.stats.on_free(usable);
            new
        } else {
            self.with_strategy_mut(|s| {
                let old_usable = if debug.check_pointers {
                    self.check_live(s, ptr)?
                } else {
                    // SAFETY: the caller's contract: ptr is a live block of this pool.
                    unsafe { s.usable_size(ptr) }
                };
                // SAFETY: ptr is live (verified above or the caller's contract).
                if unsafe { s.resize_in_place(ptr, new_size) } {
                    // SAFETY: ptr is still live after an in-place resize.
                    let new_usable = unsafe { s.usable_size(ptr) };
                    // A reallocation counts as one free and one allocation.
                    self.stats.on_free_serialized(old_usable);
                    self.stats.on_alloc_serialized(new_usable);
                    return Ok(ptr);
                }
                let target = self.move_target(old_usable, new_size);
                let new = match s.allocate(target, align) {
                    Ok(new) => new,
                    Err(_) if target > new_size => s.allocate(new_size, align).map_err(failed)?,
                    Err(e) => return Err(failed(e)),
                };
                // SAFETY: `new` was just handed out by this strategy.
                self.stats
                    .on_alloc_serialized(unsafe { s.usable_size(new) });
                // SAFETY: `ptr` and `new` are distinct live blocks, each at least
                // `min(old_usable, new_size)` bytes.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        ptr.as_ptr(),
                        new.as_ptr(),
                        old_usable.min(new_size),
                    )
                };
                if debug.poison_on_free {
                    // SAFETY: ptr is live and unused once freed.
                    unsafe { debug::poison(ptr, old_usable) };
                }
                // SAFETY: ptr is live, as above, and distinct from `new`.
                let usable = unsafe { s.deallocate(ptr) };
                self.stats.on_free_serialized(usable);
                Ok(new)
            })?
        };
        if let Some(live) = &self.live {
            live.on_free(ptr.as_ptr() as usize);
            live.on_alloc(new.as_ptr() as usize, new_size);
        }
        Ok(new)
    }

    /// # Safety
    /// `ptr` is a live block of this pool, or `debug.check_pointers` is on.
    unsafe fn usable_size_of(&self, ptr: NonNull<u8>) -> Result<usize, PoolError> {
        if let Core::Cached(shared) = &self.core {
            // SAFETY: the caller's contract: ptr is a live block of this pool (checked
            // mode never uses the cached core).
            return Ok(unsafe { shared.sizer.usable_bytes(ptr) });
        }
        let check = self.config.debug.check_pointers;
        if let Core::LockFree(allocator) = &self.core {
            let _serial = self.checked_serial();
            return if check {
                self.check_state(allocator.block_state(ptr), ptr)
            } else {
                // SAFETY: the caller's contract: ptr is a live block of this pool.
                Ok(unsafe { allocator.usable_size(ptr) })
            };
        }
        self.with_strategy_mut(|s| {
            if check {
                self.check_live(s, ptr)
            } else {
                // SAFETY: the caller's contract: ptr is a live block of this pool.
                Ok(unsafe { s.usable_size(ptr) })
            }
        })
    }

    fn reset_strategy(&self) -> Result<(), PoolError> {
        let return_chunks = self.config.return_policy != ReturnPolicy::Keep;
        self.with_strategy_mut(|s| {
            s.reset(return_chunks);
            self.stats.on_reset();
            Ok(())
        })?;
        if let Some(live) = &self.live {
            live.clear();
        }
        Ok(())
    }

    /// `reset()` for every sync mode, the lock-free one included: `&mut self` proves no
    /// other thread is inside the pool and no `allocator_api2` collection still borrows it.
    ///
    /// ```
    /// use pools::{CpuPool, MemoryPool, PoolConfig};
    /// let mut pool = CpuPool::new("example", PoolConfig::default_cpu()).unwrap();
    /// {
    ///     let mut v = allocator_api2::vec::Vec::<u32, _>::with_capacity_in(4, &pool);
    ///     v.push(1);
    /// }
    /// pool.reset_exclusive().unwrap();
    /// assert_eq!(pool.stats().live_count(), 0);
    /// ```
    ///
    /// A collection that still holds pool memory keeps the pool borrowed, so a reset under
    /// it does not compile:
    /// ```compile_fail,E0502
    /// use pools::{CpuPool, PoolConfig};
    /// let mut pool = CpuPool::new("example", PoolConfig::default_cpu()).unwrap();
    /// let mut v = allocator_api2::vec::Vec::<u32, _>::with_capacity_in(4, &pool);
    /// v.push(1);
    /// pool.reset_exclusive().unwrap();
    /// v.push(2);
    /// ```
    pub fn reset_exclusive(&mut self) -> Result<(), PoolError> {
        let return_chunks = self.config.return_policy != ReturnPolicy::Keep;
        if let Core::LockFree(allocator) = &mut self.core {
            allocator.reset(return_chunks);
            self.stats.on_reset();
            if let Some(live) = &self.live {
                live.clear();
            }
            return Ok(());
        }
        if let Core::Cached(shared) = &self.core {
            // SAFETY: `&mut self`: no other thread is inside the pool and no block handed
            // out before can be used afterwards.
            return unsafe { self.reset_cached(shared) };
        }
        self.reset_strategy()
    }

    /// `(address, requested size)` of every live block, sorted by address; empty unless
    /// `debug.track_live` is on.
    pub fn leak_report(&self) -> Vec<(usize, usize)> {
        self.live
            .as_ref()
            .map_or_else(Vec::new, LiveTracker::live_blocks)
    }

    /// The strategy's short name (`fixed-size`, `size-classed`, ...).
    pub fn strategy_name(&self) -> &'static str {
        if let Core::LockFree(_) = &self.core {
            return "lock-free";
        }
        self.with_strategy_mut(|s| Ok(s.name()))
            .unwrap_or("unavailable")
    }

    /// Bytes the strategy holds from its upstream now.
    pub fn reserved_bytes(&self) -> usize {
        if let Core::LockFree(allocator) = &self.core {
            return allocator.reserved_bytes();
        }
        self.with_strategy_mut(|s| Ok(s.reserved_bytes()))
            .unwrap_or(0)
    }
}

/// The cached core's paths beyond the fast ones (see the module doc).
impl CpuPool {
    /// What a reallocation that moves its block asks for: a growing block gets slack on
    /// top of `new_size`, so that a buffer grown step by step is moved every few steps
    /// instead of at every size-class boundary (glibc gets the same effect by extending a
    /// block into free neighbours). The slack is a quarter of `new_size` (CPython grows
    /// lists by about 1/8 a step), and at least `new_size` itself up to
    /// `SMALL_SLACK_BYTES`: C code doubles small buffers (sqlite's strings go 16, 24, 40,
    /// 72, 136, 264 bytes), and a quarter of a small block is less than a size class.
    /// Pools with a byte cap (`max_size_bytes`) get no slack, nor do shrinks; a failed
    /// slack allocation falls back to the exact size.
    #[inline]
    fn move_target(&self, old_usable: usize, new_size: usize) -> usize {
        /// The most slack beyond a quarter: 64 bytes per grown block at worst.
        const SMALL_SLACK_BYTES: usize = 64;
        if new_size > old_usable && self.config.max_size_bytes.is_none() {
            new_size.saturating_add((new_size / 4).max(new_size.min(SMALL_SLACK_BYTES)))
        } else {
            new_size
        }
    }

    /// The lock-free allocator, when the fast paths may call it directly
    /// (`lock_free_fast`): one flag test, no decoding of `core`.
    #[inline(always)]
    fn fast_lock_free(&self) -> Option<&LockFreeAllocator> {
        if !self.lock_free_fast {
            return None;
        }
        match &self.core {
            Core::LockFree(allocator) => Some(allocator),
            // SAFETY: `lock_free_fast`'s invariant: set only with `Core::LockFree`.
            _ => unsafe { std::hint::unreachable_unchecked() },
        }
    }

    /// The allocation fast path of both entry points: a block from `rack`, the rack of
    /// this thread's cache of `fast_cache` (from `last_used_rack(fast_id)`), or `None`
    /// with nothing done (too big for the cache, an empty magazine, or a count that needs
    /// its cold part).
    #[inline(always)]
    fn try_allocate_fast(&self, rack: Rack<'_>, size: usize) -> Option<NonNull<u8>> {
        let slot = self.fast_request.slot_of(size)?;
        // SAFETY: the rack is this thread's cache's, used only in this pool call (the
        // caller's contract); `slot` is a class's of that cache (`fast_request` is
        // `fast_cache`'s table).
        unsafe { rack.try_pop(slot) }
    }

    /// The counts' cold part after a fast-path pop from this thread's cache of
    /// `fast_cache` (`allocate_or_none`), then the block.
    #[cold]
    #[inline(never)]
    fn counted_cold(&self, block: NonNull<u8>) -> Option<NonNull<u8>> {
        if let Some(shared) = &self.fast_cache {
            shared.counts_cold_here();
        }
        Some(block)
    }

    /// The free fast path of both entry points: `true` when the block went into this
    /// thread's cache. A size-classed cache (`fast_segment`) is served from `CpuPool`'s
    /// own fields; other caches through `fast_cache`.
    ///
    /// # Safety
    /// As for `MemoryPool::deallocate` (and the pool is not in checked mode: `fast_cache`).
    #[inline(always)]
    unsafe fn try_free_fast(&self, ptr: NonNull<u8>) -> bool {
        let (id, rack) = last_used_entry();
        if id == self.fast_segment.id {
            // SAFETY: the caller's contract; the id is `fast_segment`'s.
            return unsafe { self.free_fast_segment(rack, ptr) };
        }
        if id == self.fast_tlsf_id {
            // SAFETY: the caller's contract; the id is `fast_cache`'s, a TLSF cache.
            return unsafe { self.free_fast_tlsf(rack, ptr) };
        }
        if id != self.fast_id {
            return false;
        }
        // SAFETY: as above: `rack` is this thread's cache's rack of `fast_cache`.
        let rack = unsafe { Rack::from_raw(rack) };
        let Some(shared) = &self.fast_cache else {
            // SAFETY: `fast_id`'s invariant: a matching id is `fast_cache`'s.
            unsafe { std::hint::unreachable_unchecked() }
        };
        // SAFETY: the caller's contract, forwarded.
        unsafe { shared.try_free_in(rack, ptr) }
    }

    /// `try_free_fast` of a pool whose cache reads a block's class from its heap's
    /// page-class map (`fast_segment`), when this thread's last-used cache is that one:
    /// `rack` is what `last_used_entry` gave with `fast_segment.id`.
    ///
    /// # Safety
    /// As for `try_free_fast`, and `last_used_entry` answered `(fast_segment.id, rack)`.
    #[inline(always)]
    unsafe fn free_fast_segment(&self, rack: *const RackHead, ptr: NonNull<u8>) -> bool {
        let Some(geometry) = self.fast_segment.geometry else {
            // SAFETY: `FastSegment`'s invariant: a matching id (never `NO_FAST_CACHE`,
            // which `last_used_entry` never answers) comes with the geometry.
            unsafe { std::hint::unreachable_unchecked() }
        };
        // SAFETY: the caller's contract: a live block of this pool's segment heap (or the
        // lock-free allocator's regions, which keep the same map).
        let slot = usize::from(unsafe { geometry.slot_of(ptr) });
        // SAFETY: the id matched this pool's: `rack` is the rack of this thread's cache of
        // it (`tls::LastUsed`'s invariant), used only here, in this pool call; `slot` is
        // the block's class's, or the class count's (the heap's class cap) for a block of
        // none, whose magazine declines; the block is unused from now.
        unsafe { Rack::from_raw(rack).push_counted(slot, ptr) }
    }

    /// `try_free_fast` of a TLSF pool's cache (`fast_tlsf_id`), when this thread's last-used
    /// cache is that one: `rack` is what `last_used_entry` gave with `fast_id`.
    ///
    /// The block's size word carries a free hint: the slot of its class's magazine, which
    /// TLSF wrote when it carved the block for a refill (`Tlsf::allocate_batch`). So the
    /// magazine's address is one shift from the word the free loads anyway, with no
    /// table load between the tag's (possibly missing) load and the push's addresses.
    /// The hint is trusted only when that magazine's blocks have exactly the block's
    /// usable size. A block without one (allocated past the cache, or resized in place
    /// under the lock) declines, and the slow path (`CacheShared::free_slow`) finds its
    /// class from the request table and caches it without the lock: out of line, so that
    /// the inline free keeps no register for it.
    ///
    /// # Safety
    /// As for `try_free_fast`, and `last_used_entry` answered `(fast_tlsf_id, rack)`
    /// (so `fast_tlsf_id` is `fast_id`).
    #[inline(always)]
    unsafe fn free_fast_tlsf(&self, rack: *const RackHead, ptr: NonNull<u8>) -> bool {
        // SAFETY: the id matched `fast_cache`'s: `rack` is this thread's cache's rack of
        // it, used only in this pool call.
        let cache = unsafe { Rack::from_raw(rack) };
        // SAFETY: the caller's contract: a live block of this pool's TLSF strategy.
        let (hint, usable) = unsafe { crate::alloc::variable::free_hint_and_usable(ptr) };
        // SAFETY: a hint is 0 or an entry of this cache's `exact_slot_of_granule` (a
        // class's slot or the class count's, in every thread's rack of this cache): the
        // only hints this pool's TLSF writes (`Tlsf::set_free_hints`, given that table
        // when the pool was made).
        if unsafe { cache.hinted_block_bytes(hint) } != usable {
            return false;
        }
        // SAFETY: the magazine at `hint` holds blocks of exactly `usable` bytes, the
        // block's (so `hint` is not 0: no block has 0 usable bytes); the block is unused
        // from now.
        unsafe { cache.push_counted(hint, ptr) }
    }

    /// `free_fast_tlsf` with the size the block was allocated with as a hint
    /// (`MemoryPool::deallocate_sized`): the magazine is the one the request table names
    /// for `size`, so the push's addresses do not wait for the boundary tag. The tag is
    /// still read, and only compared: the block goes into that magazine only if the
    /// magazine's blocks have exactly the tag's usable size; otherwise the free finds the
    /// class from the tag, as `free_fast_tlsf` does. A wrong hint costs time, never
    /// correctness.
    ///
    /// Why: in a free of a block untouched since it was allocated, the tag's cache miss
    /// delays every later load whose address the free's stores might share (the next
    /// allocation's pop). With the address known early, only the compare waits, and it
    /// is predicted (`docs/performance.md`, issue 13's eleventh round).
    ///
    /// # Safety
    /// As for `free_fast_tlsf`.
    #[inline(always)]
    unsafe fn free_fast_tlsf_sized(
        &self,
        rack: *const RackHead,
        ptr: NonNull<u8>,
        size: usize,
    ) -> bool {
        if let Some(slot) = self.fast_request.slot_of(size) {
            // SAFETY: the id matched `fast_cache`'s: `rack` is this thread's cache's rack
            // of it, used only in this pool call.
            let cache = unsafe { Rack::from_raw(rack) };
            // SAFETY: the caller's contract: a live block of this pool's TLSF strategy.
            let usable = unsafe { crate::alloc::variable::usable_bytes_unlocked(ptr) };
            // SAFETY: `slot` is a class's of `fast_cache` (`fast_request` is its table).
            if unsafe { cache.block_bytes_at(slot) } == usable {
                // SAFETY: `slot` is the class of blocks of exactly `usable` bytes, the
                // block's; the block is unused from now.
                return unsafe { cache.push_counted(slot, ptr) };
            }
        }
        // SAFETY: the caller's contract, forwarded.
        unsafe { self.free_fast_tlsf(rack, ptr) }
    }

    /// `deallocate` and `deallocate_sized`: the fast paths of the segment-class caches
    /// (fixed-size, size-classed and lock-free pools) and of TLSF's are inline in the
    /// caller; everything else is one out-of-line call. `size`, where the caller knows
    /// it, is the TLSF cache's hint (`free_fast_tlsf_sized`); the other kinds read their
    /// class from the segment's page map, which is as quick. Inlined with a constant
    /// `size`, so `deallocate` carries no test of it.
    ///
    /// # Safety
    /// As for `MemoryPool::deallocate` (`size` is unconstrained).
    #[inline(always)]
    unsafe fn deallocate_hinted(
        &self,
        ptr: NonNull<u8>,
        size: Option<usize>,
    ) -> Result<(), PoolError> {
        let (id, rack) = last_used_entry();
        if id == self.fast_segment.id {
            // SAFETY: the caller's contract: ptr is a live block of this pool (checked
            // mode never uses the cached core), handed to us by the caller, so its
            // allocation happens-before this call; the id is `fast_segment`'s.
            if unsafe { self.free_fast_segment(rack, ptr) } {
                return Ok(());
            }
        } else if id == self.fast_tlsf_id {
            // SAFETY: as above; the id is `fast_cache`'s, a TLSF cache.
            let cached = unsafe {
                match size {
                    Some(size) => self.free_fast_tlsf_sized(rack, ptr, size),
                    None => self.free_fast_tlsf(rack, ptr),
                }
            };
            if cached {
                return Ok(());
            }
        }
        // SAFETY: the caller's contract, forwarded.
        unsafe { self.deallocate_general(ptr) }
    }

    /// `reallocate_or_none`'s fast path (`fast_cache`: no live tracking, no poisoning)
    /// for blocks whose class the thread cache reads without the lock (fixed-size and
    /// size-classed strategies): a block kept in place is counted in the thread's cache
    /// here; a move is `reallocate_move`'s (out of line: its copy is a call, and the
    /// registers it needs saved would cost every realloc). `Declined`, with nothing done,
    /// where the thread cache cannot do it (a TLSF block above `TLSF_MOVE_MAX_BYTES` that
    /// does not keep its place, a large object): the general path then does.
    ///
    /// # Safety
    /// `ptr` is a live block of this pool.
    #[inline(always)]
    unsafe fn reallocate_fast(
        &self,
        shared: &CacheShared,
        rack: Rack<'_>,
        ptr: NonNull<u8>,
        new_size: usize,
    ) -> FastRealloc {
        let new_size = new_size.max(1);
        if matches!(shared.sizer, BlockSizer::Tlsf) {
            // Kept by its size alone (its boundary tag); else a small block moves through
            // the cache; else the strategy is asked under the lock (a growing TLSF block
            // may grow into its neighbour).
            // SAFETY: the caller's contract: ptr is a live block of this pool's TLSF
            // strategy.
            let (hint, usable) = unsafe { crate::alloc::variable::free_hint_and_usable(ptr) };
            if shared.sizer.resizes_in_place(usable, new_size) == Some(true) {
                rack.count_same_block(usable);
                return FastRealloc::Kept;
            }
            // A small block of exactly its cache class moves through the cache, as in the
            // size-classed pools, without the lock: see `TLSF_MOVE_MAX_BYTES`. Its class
            // is the free hint's when that magazine's blocks have its size
            // (`free_fast_tlsf`), else the request table's class of exactly its size.
            if usable <= TLSF_MOVE_MAX_BYTES {
                // SAFETY: a hint is 0 or an entry of this cache's `exact_slot_of_granule`
                // (as in `free_fast_tlsf`).
                if unsafe { rack.hinted_block_bytes(hint) } == usable {
                    return FastRealloc::Move { slot: hint, usable };
                }
                if let Some(slot) = self.fast_request.exact_slot_of_usable(usable) {
                    // SAFETY: `slot` is a class's of `fast_cache`, or the class count's
                    // (`fast_request` is its table), whose block size, 0, is no usable
                    // size.
                    if unsafe { rack.block_bytes_at(slot) } == usable {
                        return FastRealloc::Move { slot, usable };
                    }
                }
            }
            return FastRealloc::Declined;
        }
        // SAFETY: the caller's contract: ptr is a live block of this pool.
        let Some(class) = (unsafe { shared.cache_class(ptr) }) else {
            return FastRealloc::Declined;
        };
        // SAFETY: `cache_class` answers classes of the pool.
        let usable = unsafe { shared.class_bytes_unchecked(class) };
        if shared.sizer.resizes_in_place(usable, new_size) == Some(true) {
            rack.count_same_block(usable);
            return FastRealloc::Kept;
        }
        FastRealloc::Move {
            slot: slot_of_class(class),
            usable,
        }
    }

    /// The move of `reallocate_fast`: the new block from this thread's cache, the copy,
    /// the old block into the cache; or, when the cache has no block for `new_size`, the
    /// general path (`reallocate_or_none_slow`).
    ///
    /// Six arguments, all in registers, so that the fast path's call is a tail call.
    ///
    /// # Safety
    /// `ptr` is a live block of this pool of the cache class at `slot` (`usable` bytes);
    /// `rack` is this thread's cache's rack of this pool's `fast_cache` (so it is `Some`),
    /// in this pool call.
    #[inline(never)]
    unsafe fn reallocate_move(
        &self,
        rack: Rack<'_>,
        ptr: NonNull<u8>,
        new_size: usize,
        slot: usize,
        usable: usize,
    ) -> Option<NonNull<u8>> {
        let Some(shared) = &self.fast_cache else {
            // SAFETY: the caller's contract: the rack is `fast_cache`'s.
            unsafe { std::hint::unreachable_unchecked() }
        };
        let new_size = new_size.max(1);
        // No block for the target (or its count needs the cold part): the general path,
        // with nothing done here. Every other call here is a tail call too, so the function
        // saves no register.
        let Some(new) = shared.try_pop_in(rack, self.move_target(usable, new_size)) else {
            // SAFETY: the caller's contract, forwarded.
            return unsafe { self.reallocate_or_none_slow(ptr, new_size) };
        };
        let copied = usable.min(new_size);
        // The old block goes into this thread's cache before its bytes are copied: a push
        // writes the magazine's slot, not the block, and nothing else can hand the block
        // out before this call returns (the magazine is this thread's), so the copy can be
        // the function's last step (a tail call to `memcpy`, which returns `new`: nothing
        // is kept across it).
        // SAFETY: `rack` is this thread's cache's, in this pool call; ptr is live, the
        // class is its own, and only the copy below reads it.
        if unsafe { rack.push_counted(slot, ptr) } {
            // SAFETY: both blocks are blocks of this pool, distinct, each at least
            // `copied` bytes long; the old one is unchanged since the caller's last use.
            unsafe { std::ptr::copy_nonoverlapping(ptr.as_ptr(), new.as_ptr(), copied) };
            return Some(new);
        }
        // SAFETY: as above, with the old block still live.
        unsafe { self.finish_move_slow(ptr, new, copied) }
    }

    /// `reallocate_or_none` of a cached pool whose blocks' classes come from the sizer
    /// (TLSF, or cache classes that are not the span owners): `reallocate_fast` and its
    /// move, or the general path. Out of line, so that its calls cost the segment-class
    /// path (inline in `reallocate_or_none`) no saved register.
    ///
    /// # Safety
    /// As for `MemoryPool::reallocate`; `rack` is this thread's cache's rack of
    /// `fast_cache` (so it is `Some`), in this pool call.
    #[inline(never)]
    unsafe fn reallocate_cached_fast(
        &self,
        rack: Rack<'_>,
        ptr: NonNull<u8>,
        new_size: usize,
    ) -> Option<NonNull<u8>> {
        let Some(shared) = &self.fast_cache else {
            // SAFETY: the caller's contract: the rack is `fast_cache`'s.
            unsafe { std::hint::unreachable_unchecked() }
        };
        // SAFETY: the caller's contract, forwarded.
        match unsafe { self.reallocate_fast(shared, rack, ptr, new_size) } {
            FastRealloc::Kept => Some(ptr),
            // SAFETY: the caller's contract, forwarded; `reallocate_fast` classified the
            // block.
            FastRealloc::Move { slot, usable } => unsafe {
                self.reallocate_move(rack, ptr, new_size, slot, usable)
            },
            // SAFETY: the caller's contract, forwarded.
            FastRealloc::Declined => unsafe { self.reallocate_or_none_slow(ptr, new_size) },
        }
    }

    /// The end of a move whose old block the thread cache declined: copy, then free the
    /// old block through the slow path.
    ///
    /// # Safety
    /// `old` and `new` are distinct live blocks of this pool, each at least `copied`
    /// bytes long; `old` is unused after this call.
    #[cold]
    #[inline(never)]
    unsafe fn finish_move_slow(
        &self,
        old: NonNull<u8>,
        new: NonNull<u8>,
        copied: usize,
    ) -> Option<NonNull<u8>> {
        // SAFETY: the caller's contract.
        unsafe { std::ptr::copy_nonoverlapping(old.as_ptr(), new.as_ptr(), copied) };
        // SAFETY: old is live and unused from here. Its only failure is a poisoned
        // strategy lock (a strategy call panicked): the pool is unusable, and the old
        // block is lost with it.
        unsafe { self.deallocate_or_false_slow(old) };
        Some(new)
    }

    /// `reallocate_or_none` of the lock-free core without checks (`lock_free_fast`): in
    /// place by the block's size alone, or a move through this thread's heap; anything
    /// else (a miss of the heap's current slab, a large object) takes `realloc_block`.
    ///
    /// # Safety
    /// As for `MemoryPool::reallocate`.
    #[inline(never)]
    unsafe fn reallocate_lock_free(
        &self,
        allocator: &LockFreeAllocator,
        ptr: NonNull<u8>,
        new_size: usize,
    ) -> Option<NonNull<u8>> {
        let new_size = new_size.max(1);
        // SAFETY: the caller's contract: ptr is a live block of this pool.
        let usable = unsafe { allocator.usable_size(ptr) };
        if new_size <= usable && new_size.saturating_mul(2) > usable {
            // In place, as `realloc_block` decides it: one free and one allocation.
            self.stats.on_free(usable);
            self.stats.on_alloc(usable);
            return Some(ptr);
        }
        let Some((new, new_usable)) =
            allocator.try_allocate_local(self.move_target(usable, new_size))
        else {
            // SAFETY: the caller's contract, forwarded; nothing was done yet.
            return unsafe { self.realloc_block(ptr, new_size) }.ok();
        };
        self.stats.on_alloc(new_usable);
        // SAFETY: both blocks are live blocks of this pool, distinct, each at least
        // min(usable, new_size) bytes long.
        unsafe { std::ptr::copy_nonoverlapping(ptr.as_ptr(), new.as_ptr(), usable.min(new_size)) };
        // SAFETY: ptr is live (the caller's contract) and unused from here.
        let freed = unsafe { allocator.deallocate(ptr) };
        self.stats.on_free(freed);
        Some(new)
    }

    /// `reallocate`'s body with `.ok()` on each arm rather than a call to it: calling
    /// `reallocate` here (its `Result` returned through memory) cost perl-text's TLSF
    /// reallocs 8 more instructions each (175.6 -> 184.0).
    ///
    /// # Safety
    /// As for `MemoryPool::reallocate`.
    #[inline(never)]
    unsafe fn reallocate_or_none_slow(
        &self,
        ptr: NonNull<u8>,
        new_size: usize,
    ) -> Option<NonNull<u8>> {
        if let Core::Cached(shared) = &self.core {
            // SAFETY: the caller's contract: ptr is a live block of this pool.
            return unsafe { self.reallocate_cached(shared, ptr, new_size) }.ok();
        }
        // SAFETY: the caller's contract: ptr is a live block of this pool.
        unsafe { self.realloc_block(ptr, new_size) }.ok()
    }

    /// Zeroing and live tracking of a block just handed out (the cold parts of a
    /// cached allocation).
    #[cold]
    fn after_cached_alloc(&self, ptr: NonNull<u8>, size: usize, flags: AllocFlags) {
        if flags.zeroed {
            // SAFETY: the block is live, ours, and at least `size` bytes.
            unsafe { ptr.as_ptr().write_bytes(0, size) };
        }
        if let Some(live) = &self.live {
            live.on_alloc(ptr.as_ptr() as usize, size);
        }
    }

    /// `allocate_or_none` of the lock-free core without checks (`lock_free_fast`): out of
    /// line, so that the cached core's inlined fast path stays small.
    #[inline(never)]
    fn allocate_lock_free(
        &self,
        allocator: &LockFreeAllocator,
        size: usize,
    ) -> Option<NonNull<u8>> {
        if let Some((ptr, usable)) = allocator.try_allocate_local(size) {
            return Some(self.stats.on_alloc_then(usable, ptr));
        }
        // Straight to the heap's slow path: nothing to zero, track or check
        // (`lock_free_fast`), and the alignment is the pool's.
        match allocator.allocate_local_miss(size) {
            Ok((ptr, usable)) => Some(self.stats.on_alloc_then(usable, ptr)),
            Err(_) => {
                self.stats.on_failure();
                None
            }
        }
    }

    /// The hit of `allocate_lock_free` alone (`allocate_with`'s fast path).
    #[inline(never)]
    fn allocate_lock_free_local(
        &self,
        allocator: &LockFreeAllocator,
        size: usize,
    ) -> Option<NonNull<u8>> {
        let (ptr, usable) = allocator.try_allocate_local(size)?;
        Some(self.stats.on_alloc_then(usable, ptr))
    }

    /// `deallocate_or_false` of the lock-free core without checks (`lock_free_fast`).
    ///
    /// # Safety
    /// As for `MemoryPool::deallocate`.
    #[inline(never)]
    unsafe fn deallocate_lock_free(&self, allocator: &LockFreeAllocator, ptr: NonNull<u8>) -> bool {
        // SAFETY: the caller's contract: ptr is a live block of this pool; no checks,
        // tracking or poisoning are asked for (`lock_free_fast`).
        match unsafe { allocator.try_free_local(ptr) } {
            FreeLocal::Done(usable) => self.stats.on_free_then_true(usable),
            // SAFETY: this thread owns the heap (`try_free_local`), and the slab is its.
            FreeLocal::Emptied { heap, slab, usable } => unsafe {
                self.lock_free_emptied(heap, slab, usable)
            },
            // SAFETY: as above; nothing was done.
            FreeLocal::Declined => unsafe { self.deallocate_lock_free_slow(allocator, ptr) },
        }
    }

    /// `deallocate_lock_free` after a free that emptied its slab (a tail call).
    ///
    /// # Safety
    /// As for `Heap::after_local_empty`.
    #[cold]
    #[inline(never)]
    unsafe fn lock_free_emptied(&self, heap: &Heap, slab: &Slab, usable: usize) -> bool {
        // SAFETY: forwarded contract.
        unsafe { heap.after_local_empty(slab) };
        self.stats.on_free_then_true(usable)
    }

    /// `deallocate_lock_free` when its fast path declined (a tail call: the fast path
    /// keeps no register across it).
    ///
    /// # Safety
    /// As for `deallocate_lock_free`.
    #[cold]
    #[inline(never)]
    unsafe fn deallocate_lock_free_slow(
        &self,
        allocator: &LockFreeAllocator,
        ptr: NonNull<u8>,
    ) -> bool {
        // SAFETY: forwarded contract.
        let usable = unsafe { allocator.deallocate(ptr) };
        self.stats.on_free_then_true(usable)
    }

    /// A request at the pool's alignment that the fast path did not serve, in a pool with
    /// `fast_cache` (nothing to zero or track): the thread cache's slow path directly (it
    /// tries the magazine again itself, for a thread that last used another pool). A
    /// failure is counted.
    #[inline(always)]
    fn allocate_fast_cache_slow(
        &self,
        shared: &Arc<CacheShared>,
        size: usize,
    ) -> Result<NonNull<u8>, PoolError> {
        let size = size.max(1);
        shared
            .allocate_slow(size, self.config.alignment)
            .map_err(|e| {
                self.stats.on_failure();
                with_request(e, size)
            })
    }

    #[inline(never)]
    fn allocate_or_none_slow(&self, size: usize, align: usize) -> Option<NonNull<u8>> {
        if let Some(shared) = &self.fast_cache {
            if align <= self.config.alignment && align & align.wrapping_sub(1) == 0 {
                return self.allocate_fast_cache_slow(shared, size).ok();
            }
        }
        self.allocate_with_slow(size, AllocFlags::aligned(align))
            .ok()
    }

    /// `MemoryPool::deallocate` past its inline segment-class path: the other caches'
    /// fast paths (TLSF, and a segment-class cache this thread did not use last), the
    /// lock-free allocator's own, else the slow path.
    ///
    /// # Safety
    /// As for `MemoryPool::deallocate`.
    #[inline(never)]
    unsafe fn deallocate_general(&self, ptr: NonNull<u8>) -> Result<(), PoolError> {
        // SAFETY: the caller's contract: ptr is a live block of this pool (checked mode
        // never uses the cached core), handed to us by the caller, so its allocation
        // happens-before this call.
        if unsafe { self.try_free_fast(ptr) } {
            return Ok(());
        }
        if let Some(allocator) = self.fast_lock_free() {
            // SAFETY: the caller's contract, forwarded.
            unsafe { self.deallocate_lock_free(allocator, ptr) };
            return Ok(());
        }
        if let Some(shared) = &self.fast_cache {
            // Nothing to check or poison (`fast_cache`): the cache's slow path directly,
            // as `deallocate_or_false_slow`. SAFETY: the caller's contract, forwarded.
            return unsafe { shared.free_slow(ptr) };
        }
        // SAFETY: the caller's contract, forwarded.
        unsafe { self.deallocate_slow(ptr) }
    }

    /// # Safety
    /// As for `MemoryPool::deallocate`.
    #[inline(never)]
    unsafe fn deallocate_or_false_slow(&self, ptr: NonNull<u8>) -> bool {
        if let Some(shared) = &self.fast_cache {
            // Nothing to check or poison (`fast_cache`): the cache's slow path directly.
            // SAFETY: the caller's contract: ptr is a live block of this pool.
            return unsafe { shared.free_slow(ptr) }.is_ok();
        }
        // SAFETY: the caller's contract, forwarded.
        unsafe { self.deallocate_slow(ptr) }.is_ok()
    }

    /// Every allocation the inlined fast path of `allocate_with` did not serve.
    #[inline(never)]
    fn allocate_with_slow(&self, size: usize, flags: AllocFlags) -> Result<NonNull<u8>, PoolError> {
        if let Some(shared) = &self.fast_cache {
            if !flags.zeroed
                && flags.align <= self.config.alignment
                && flags.align & flags.align.wrapping_sub(1) == 0
            {
                return self.allocate_fast_cache_slow(shared, size);
            }
        }
        if let Core::Cached(shared) = &self.core {
            if flags.align & flags.align.wrapping_sub(1) == 0 {
                // A hit that needs zeroing or live tracking, or this thread last used
                // another pool; or a request aligned beyond the pool's alignment, from a
                // class whose blocks all have that alignment.
                let hit = if flags.align <= self.config.alignment {
                    shared.make_last_used();
                    shared.try_allocate(size)
                } else {
                    shared.aligned_class(size, flags.align).and_then(|class| {
                        shared.make_last_used();
                        shared.try_allocate_class(class)
                    })
                };
                if let Some(ptr) = hit {
                    debug_assert!(ptr.as_ptr() as usize & flags.align.saturating_sub(1) == 0);
                    self.after_cached_alloc(ptr, size.max(1), flags);
                    return Ok(ptr);
                }
            }
            return self.allocate_cached_slow(shared, size, flags);
        }
        self.allocate_uncached(size, flags)
    }

    /// Every free the inlined fast path of `deallocate` did not take.
    ///
    /// # Safety
    /// As for `MemoryPool::deallocate`.
    #[inline(never)]
    unsafe fn deallocate_slow(&self, ptr: NonNull<u8>) -> Result<(), PoolError> {
        if let Core::Cached(shared) = &self.core {
            return self.deallocate_cached_slow(shared, ptr);
        }
        // SAFETY: the caller's contract: ptr is a live block of this pool.
        unsafe { self.free_block(ptr) }
    }

    #[cold]
    fn allocate_cached_slow(
        &self,
        shared: &Arc<CacheShared>,
        size: usize,
        flags: AllocFlags,
    ) -> Result<NonNull<u8>, PoolError> {
        let size = size.max(1);
        let result = self
            .effective_align(&flags)
            .and_then(|align| shared.allocate_slow(size, align));
        match result {
            Ok(ptr) => {
                self.after_cached_alloc(ptr, size, flags);
                Ok(ptr)
            }
            Err(e) => {
                self.stats.on_failure();
                Err(with_request(e, size))
            }
        }
    }

    /// A free with live tracking or poisoning, or one the thread cache did not take.
    #[cold]
    fn deallocate_cached_slow(
        &self,
        shared: &Arc<CacheShared>,
        ptr: NonNull<u8>,
    ) -> Result<(), PoolError> {
        if let Some(live) = &self.live {
            if live.on_free(ptr.as_ptr() as usize).is_none() {
                return Err(PoolError::invalid_ptr(
                    &self.name,
                    ptr.as_ptr() as usize,
                    "not a live block of this pool (already freed, or never allocated here)",
                ));
            }
        }
        if self.config.debug.poison_on_free {
            // SAFETY: ptr is a live block of ours (the caller's contract), unused once
            // freed.
            unsafe { debug::poison(ptr, shared.sizer.usable_bytes(ptr)) };
        }
        // This thread may have last used another pool.
        shared.make_last_used();
        // SAFETY: ptr is a live block of this pool's strategy (the caller's contract),
        // handed to us by the caller, so its allocation happens-before this call.
        unsafe {
            if shared.try_free(ptr) {
                return Ok(());
            }
            shared.free_slow(ptr)
        }
    }

    /// # Safety
    /// `ptr` is a live block of this pool.
    unsafe fn reallocate_cached(
        &self,
        shared: &Arc<CacheShared>,
        ptr: NonNull<u8>,
        new_size: usize,
    ) -> Result<NonNull<u8>, PoolError> {
        let new_size = new_size.max(1);
        // SAFETY: the caller's contract: ptr is a live block of this pool.
        let (old_class, old_usable) = unsafe { shared.classify(ptr) };
        let resized = match shared.sizer.resizes_in_place(old_usable, new_size) {
            // Decided from the usable size alone, as the strategy would: no lock.
            Some(true) => Some(old_usable),
            Some(false) => None,
            None => {
                // Only TLSF asks (a locked strategy).
                let mut strategy = shared.lock_strategy()?;
                // SAFETY: as above.
                unsafe { strategy.resize_in_place(ptr, new_size) }
                    // SAFETY: still live after an in-place resize.
                    .then(|| unsafe { strategy.usable_size(ptr) })
            }
        };
        if let Some(new_usable) = resized {
            // A reallocation counts as one free and one allocation.
            shared.count_resize(old_usable, new_usable);
            if let Some(live) = &self.live {
                live.on_alloc(ptr.as_ptr() as usize, new_size);
            }
            return Ok(ptr);
        }
        // A move. Without live tracking or poisoning, both halves try the thread cache
        // first, and the old block's free reuses the classification made above.
        let plain = self.live.is_none() && !self.config.debug.poison_on_free;
        let target = if plain {
            self.move_target(old_usable, new_size)
        } else {
            new_size
        };
        let new = match plain.then(|| shared.try_allocate(target)).flatten() {
            Some(new) => new,
            None if target > new_size => {
                match shared.allocate_slow(target, self.config.alignment) {
                    Ok(new) => new,
                    // The slack is optional: the exact size (counted as usual) may still fit.
                    Err(_) => self.allocate(new_size)?,
                }
            }
            None => self.allocate(new_size)?,
        };
        // SAFETY: both blocks are live blocks of this pool, distinct, each at least
        // min(old_usable, new_size) bytes long.
        unsafe {
            std::ptr::copy_nonoverlapping(ptr.as_ptr(), new.as_ptr(), old_usable.min(new_size))
        };
        // SAFETY: ptr is live (the caller's contract) and unused from here; the class and
        // size are its own (`classify` above).
        if plain && unsafe { shared.try_free_classified(ptr, old_class) } {
            return Ok(new);
        }
        // SAFETY: as above.
        unsafe { MemoryPool::deallocate(self, ptr) }?;
        Ok(new)
    }

    /// `reset` of the cached core: every thread's cached blocks are forgotten with the
    /// strategy's memory.
    ///
    /// # Safety
    /// No other thread is inside a call on this pool, and no block handed out before is
    /// used afterwards.
    unsafe fn reset_cached(&self, shared: &CacheShared) -> Result<(), PoolError> {
        let return_chunks = self.config.return_policy != ReturnPolicy::Keep;
        // SAFETY: forwarded contract.
        unsafe { shared.reset(return_chunks) }?;
        self.stats.on_reset();
        if let Some(live) = &self.live {
            live.clear();
        }
        Ok(())
    }

    /// `allocate_with` of the cores without a thread cache (kept out of line, so that the
    /// cached fast path stays a small function).
    #[inline(never)]
    fn allocate_uncached(&self, size: usize, flags: AllocFlags) -> Result<NonNull<u8>, PoolError> {
        let size = size.max(1);
        let result = self.effective_align(&flags).and_then(|align| {
            if let Core::LockFree(allocator) = &self.core {
                let _serial = self.checked_serial();
                let (ptr, usable) = allocator.allocate_sized(size, align)?;
                self.stats.on_alloc(usable);
                return Ok(ptr);
            }
            self.with_strategy_mut(|s| {
                let ptr = s.allocate(size, align)?;
                // SAFETY: ptr was just handed out by this strategy.
                let usable = unsafe { s.usable_size(ptr) };
                self.stats.on_alloc_serialized(usable);
                Ok(ptr)
            })
        });
        let ptr = match result {
            Ok(ptr) => ptr,
            Err(e) => {
                self.stats.on_failure();
                // Strategies may report the chunk they could not get; the caller wants
                // the request that failed.
                return Err(with_request(e, size));
            }
        };
        if flags.zeroed {
            // SAFETY: the block is live, ours, and at least `size` bytes.
            unsafe { ptr.as_ptr().write_bytes(0, size) };
        }
        if let Some(live) = &self.live {
            live.on_alloc(ptr.as_ptr() as usize, size);
        }
        Ok(ptr)
    }
}

impl MemoryPool for CpuPool {
    /// The fast path is a thread-cache hit with nothing else to do; everything else is one
    /// out-of-line call (`allocate_with_slow`), so the fast path saves no registers.
    #[inline]
    fn allocate_with(&self, size: usize, flags: AllocFlags) -> Result<NonNull<u8>, PoolError> {
        // Alignment 0 or a power of two no larger than the pool's: any block will do.
        if flags.align <= self.config.alignment
            && flags.align & flags.align.wrapping_sub(1) == 0
            && !flags.zeroed
        {
            // SAFETY: the rack is used only here, in this pool call, while the pool lives.
            if let Some(rack) = unsafe { last_used_rack(self.fast_id) } {
                if let Some(ptr) = self.try_allocate_fast(rack, size) {
                    return Ok(ptr);
                }
            } else if let Some(allocator) = self.fast_lock_free() {
                if let Some(ptr) = self.allocate_lock_free_local(allocator, size) {
                    return Ok(ptr);
                }
            }
        }
        self.allocate_with_slow(size, flags)
    }

    /// `allocate_with`'s fast path, with a tail call for everything else: a hit keeps no
    /// register and touches no stack.
    #[inline]
    fn allocate_or_none(&self, size: usize, align: usize) -> Option<NonNull<u8>> {
        if align <= self.config.alignment && align & align.wrapping_sub(1) == 0 {
            // SAFETY: the rack is used only here, in this pool call, while the pool lives.
            if let Some(rack) = unsafe { last_used_rack(self.fast_id) } {
                if let Some(slot) = self.fast_request.slot_of(size) {
                    // A hit whose count needs its cold part (a publish, or a new peak:
                    // the program's live bytes at their high-water mark) is served here
                    // too, the cold part in a tail call instead of the whole slow path.
                    // SAFETY: the rack is this thread's cache's, used only in this pool
                    // call; `slot` is a class's of that cache (`fast_request` is
                    // `fast_cache`'s table).
                    if let Some((block, cold)) = unsafe { rack.pop_counted(slot) } {
                        if cold {
                            return self.counted_cold(block);
                        }
                        return Some(block);
                    }
                }
            } else if let Some(allocator) = self.fast_lock_free() {
                return self.allocate_lock_free(allocator, size);
            }
        }
        self.allocate_or_none_slow(size, align)
    }

    /// `reallocate`'s fast path (`reallocate_fast`), with a tail call for everything
    /// else.
    #[inline]
    unsafe fn reallocate_or_none(&self, ptr: NonNull<u8>, new_size: usize) -> Option<NonNull<u8>> {
        let (id, rack) = last_used_entry();
        if id == self.fast_segment.id {
            // As the free fast path (`try_free_fast`): the block's slot from the page-class
            // map, its usable bytes from the magazine there.
            let Some(geometry) = self.fast_segment.geometry else {
                // SAFETY: `FastSegment`'s invariant, as in `try_free_fast`.
                unsafe { std::hint::unreachable_unchecked() }
            };
            // SAFETY: the caller's contract: a live block of this pool's segment heap.
            let slot = usize::from(unsafe { geometry.slot_of(ptr) });
            // SAFETY: the id matched this pool's: `rack` is this thread's cache's rack of
            // it, used only in this pool call; `slot` is a class's or the class count's.
            let rack = unsafe { Rack::from_raw(rack) };
            // SAFETY: as above.
            let usable = unsafe { rack.block_bytes_at(slot) };
            let new_size = new_size.max(1);
            // 0: the magazine of no class (a large object or an uncached class): the
            // general path's.
            if usable != 0 {
                if self.fast_segment.keeps(usable, new_size) {
                    rack.count_same_block(usable);
                    return Some(ptr);
                }
                // SAFETY: the caller's contract; the block is of the class at `slot`.
                return unsafe { self.reallocate_move(rack, ptr, new_size, slot, usable) };
            }
        } else if id == self.fast_id {
            // SAFETY: the caller's contract, forwarded; the id matched `fast_cache`'s, so
            // `rack` is this thread's cache's rack of it.
            return unsafe { self.reallocate_cached_fast(Rack::from_raw(rack), ptr, new_size) };
        } else if let Some(allocator) = self.fast_lock_free() {
            // SAFETY: the caller's contract, forwarded.
            return unsafe { self.reallocate_lock_free(allocator, ptr, new_size) };
        }
        // SAFETY: the caller's contract, forwarded.
        unsafe { self.reallocate_or_none_slow(ptr, new_size) }
    }

    /// `deallocate`'s fast path, with a tail call for everything else.
    #[inline]
    unsafe fn deallocate_or_false(&self, ptr: NonNull<u8>) -> bool {
        // SAFETY: as in `deallocate`.
        if unsafe { self.try_free_fast(ptr) } {
            return true;
        }
        if let Some(allocator) = self.fast_lock_free() {
            // SAFETY: the caller's contract, forwarded.
            return unsafe { self.deallocate_lock_free(allocator, ptr) };
        }
        // SAFETY: the caller's contract, forwarded.
        unsafe { self.deallocate_or_false_slow(ptr) }
    }

    #[inline(always)]
    unsafe fn deallocate(&self, ptr: NonNull<u8>) -> Result<(), PoolError> {
        // SAFETY: the caller's contract, forwarded.
        unsafe { self.deallocate_hinted(ptr, None) }
    }

    #[inline(always)]
    unsafe fn deallocate_sized(&self, ptr: NonNull<u8>, size: usize) -> Result<(), PoolError> {
        // SAFETY: the caller's contract, forwarded (the size is a hint).
        unsafe { self.deallocate_hinted(ptr, Some(size)) }
    }

    unsafe fn reallocate(
        &self,
        ptr: NonNull<u8>,
        new_size: usize,
    ) -> Result<NonNull<u8>, PoolError> {
        if let Core::Cached(shared) = &self.core {
            // SAFETY: the caller's contract: ptr is a live block of this pool.
            return unsafe { self.reallocate_cached(shared, ptr, new_size) };
        }
        // SAFETY: the caller's contract: ptr is a live block of this pool.
        unsafe { self.realloc_block(ptr, new_size) }
    }

    unsafe fn usable_size(&self, ptr: NonNull<u8>) -> Result<usize, PoolError> {
        // SAFETY: the caller's contract: ptr is a live block of this pool.
        unsafe { self.usable_size_of(ptr) }
    }

    fn deallocate_checked(&self, ptr: NonNull<u8>) -> Result<(), PoolError> {
        self.require_verification()?;
        // SAFETY: `check_pointers` is on, so `free_block` verifies ptr before using it.
        unsafe { self.free_block(ptr) }
    }

    fn reallocate_checked(
        &self,
        ptr: NonNull<u8>,
        new_size: usize,
    ) -> Result<NonNull<u8>, PoolError> {
        self.require_verification()?;
        // SAFETY: `check_pointers` is on, so `realloc_block` verifies ptr before using it.
        unsafe { self.realloc_block(ptr, new_size) }
    }

    fn usable_size_checked(&self, ptr: NonNull<u8>) -> Result<usize, PoolError> {
        self.require_verification()?;
        // SAFETY: `check_pointers` is on, so `usable_size_of` verifies ptr before using it.
        unsafe { self.usable_size_of(ptr) }
    }

    unsafe fn reset(&self) -> Result<(), PoolError> {
        let lock_free = match &self.core {
            Core::LockFree(_) => true,
            Core::Cached(shared) => shared.is_lock_free(),
            _ => false,
        };
        if lock_free {
            return Err(PoolError::invalid_op(
                &self.name,
                "reset of a lock-free pool needs exclusive access: use CpuPool::reset_exclusive(&mut self)",
            ));
        }
        if let Core::Cached(shared) = &self.core {
            // SAFETY: the caller's contract of `reset`: no other thread is inside a call
            // on this pool and no block handed out before is used afterwards.
            return unsafe { self.reset_cached(shared) };
        }
        self.reset_strategy()
    }

    fn stats(&self) -> MemoryStats {
        if let Core::Cached(shared) = &self.core {
            let (pending, cached_bytes) = shared.pending();
            return self.stats.snapshot_with(&pending, cached_bytes);
        }
        let mut stats = self.stats.snapshot();
        if self.external_strategy {
            stats.reserved_bytes = self.reserved_bytes() as u64;
            stats.peak_reserved_bytes = stats.peak_reserved_bytes.max(stats.reserved_bytes);
        }
        stats
    }

    fn memory_type(&self) -> MemoryType {
        MemoryType::Host
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn config(&self) -> &PoolConfig {
        &self.config
    }
}

impl Drop for CpuPool {
    fn drop(&mut self) {
        if self.config.debug.leak_report {
            if let Some(report) = debug::format_leak_report(&self.name, &self.leak_report()) {
                eprint!("{report}");
            }
        }
    }
}

impl std::fmt::Debug for CpuPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuPool")
            .field("name", &self.name)
            .field("config", &self.config.summary())
            .finish_non_exhaustive()
    }
}
