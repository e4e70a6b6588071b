//! The pool backends: a `pools::CpuPool` per pass, from the user's `--config` (or the
//! default preset) with the allocator kind set per backend:
//! - `pool-fixed`: `SizeClassed` (fixed-size allocators per size class + large objects);
//! - `pool-variable`: `VariableSize` (TLSF);
//! - `pool-lockfree`: `LockFree` with `SyncMode::LockFree`;
//! - `pool`: the config exactly as given (not in the default set; for `recommend`).
//!
//! `--capacity` becomes `max_size_bytes` (the initial size is clamped under it). Reserved
//! bytes come from the pool's statistics (`reserved_bytes`, `peak_reserved_bytes`).

use super::{BackendFactory, BackendSetup};
use crate::backends::Backend;
use pools::{AllocatorKind, CpuPool, MemoryPool, PoolConfig, SyncMode};
use std::ptr::{self, NonNull};

/// A `CpuPool` as a backend.
pub struct PoolBackend {
    pool: CpuPool,
    /// Alignment every block has without asking (the config's).
    base_align: usize,
}

impl PoolBackend {
    pub fn new(name: &str, config: PoolConfig) -> Result<Self, String> {
        let base_align = config.alignment;
        let pool = CpuPool::new(name, config).map_err(|e| e.to_string())?;
        Ok(PoolBackend { pool, base_align })
    }

    pub fn pool(&self) -> &CpuPool {
        &self.pool
    }
}

impl Backend for PoolBackend {
    #[inline]
    fn alloc(&self, size: usize, align: usize, stream: u16) -> usize {
        self.alloc_ptr(size, align, stream) as usize
    }

    /// The pool's pointer unconverted, so the fast path's slow calls stay tail calls
    /// (see `Backend::alloc_ptr`).
    #[inline]
    fn alloc_ptr(&self, size: usize, align: usize, _stream: u16) -> *mut u8 {
        // C's `malloc(0)` returns a unique block: so does `CpuPool` for 0 bytes (it serves
        // them as 1). A failure is null (the pool counts it); the error's detail has
        // nowhere to go.
        if align <= self.base_align {
            // Every block has the pool's alignment, so the request asks for none of its
            // own (`align` is a power of two: `Backend::alloc`), as `mi_malloc` serves
            // mimalloc's backend: the pool's check of the alignment folds away.
            return self
                .pool
                .allocate_or_none(size, 0)
                .map_or(ptr::null_mut(), NonNull::as_ptr);
        }
        self.alloc_over_aligned(size, align)
    }

    // Always inlined: a shim this thin left out of line costs its callers (the engine's
    // loop, `counts::counted_op_free`) a jump to it, and whether LLVM inlines it moved with
    // unrelated changes elsewhere in the build (a counts-tier +1 instruction per free).
    #[inline(always)]
    unsafe fn free(&self, addr: usize, _size: usize, _stream: u16) {
        if let Some(p) = NonNull::new(addr as *mut u8) {
            // An error here means the engine freed a pointer twice or not its own: a bug
            // the checked configs report; there is no caller to hand it to.
            // SAFETY: the caller's contract: addr is a live block of this pool.
            unsafe { self.pool.deallocate_or_false(p) };
        }
    }

    #[inline]
    unsafe fn realloc(
        &self,
        addr: usize,
        old_size: usize,
        new_size: usize,
        align: usize,
        stream: u16,
    ) -> usize {
        // SAFETY: the caller's contract, forwarded.
        unsafe { self.realloc_ptr(addr, old_size, new_size, align, stream) as usize }
    }

    #[inline]
    unsafe fn realloc_ptr(
        &self,
        addr: usize,
        old_size: usize,
        new_size: usize,
        align: usize,
        stream: u16,
    ) -> *mut u8 {
        let Some(old) = NonNull::new(addr as *mut u8) else {
            return self.alloc_ptr(new_size, align, stream);
        };
        if align > self.base_align {
            // SAFETY: the caller's contract, forwarded.
            return unsafe { self.realloc_over_aligned(addr, old_size, new_size, align, stream) };
        }
        // SAFETY: the caller's contract: addr is a live block of this pool.
        // (`CpuPool` serves a new size of 0 as 1, as it does an allocation.)
        unsafe { self.pool.reallocate_or_none(old, new_size) }
            .map_or(ptr::null_mut(), NonNull::as_ptr)
    }

    fn reserved_bytes(&self) -> Option<u64> {
        Some(self.pool.stats().reserved_bytes)
    }

    fn peak_reserved_bytes(&self) -> Option<u64> {
        Some(self.pool.stats().peak_reserved_bytes)
    }
}

impl PoolBackend {
    /// `alloc_ptr` beyond the pool's alignment. Out of line: the common request keeps
    /// one copy of the pool's fast path.
    #[cold]
    #[inline(never)]
    fn alloc_over_aligned(&self, size: usize, align: usize) -> *mut u8 {
        self.pool
            .allocate_or_none(size, align)
            .map_or(ptr::null_mut(), NonNull::as_ptr)
    }

    /// `realloc_ptr` beyond the pool's alignment: `reallocate` keeps the pool's alignment
    /// only, so move by hand. Out of line: its calls would make every realloc save
    /// registers.
    ///
    /// # Safety
    /// As for `Backend::realloc`, with `addr` not 0.
    #[cold]
    #[inline(never)]
    unsafe fn realloc_over_aligned(
        &self,
        addr: usize,
        old_size: usize,
        new_size: usize,
        align: usize,
        stream: u16,
    ) -> *mut u8 {
        let new = self.alloc_ptr(new_size, align, stream);
        if !new.is_null() {
            // SAFETY: both are live, distinct host blocks of this pool, each at least
            // `min(old_size, new_size)` bytes long.
            unsafe { ptr::copy_nonoverlapping(addr as *const u8, new, old_size.min(new_size)) };
            // SAFETY: addr is live (the caller's contract) and distinct from `new`.
            unsafe { self.free(addr, old_size, stream) };
        }
        new
    }
}

/// The config a pool backend runs: `setup.config` with `allocator` (and, when given,
/// `sync`) overridden and the capacity applied.
pub fn pool_config(
    setup: &BackendSetup,
    allocator: Option<AllocatorKind>,
    sync: Option<SyncMode>,
) -> PoolConfig {
    let mut config = setup.config.clone();
    if let Some(kind) = allocator {
        config.allocator = kind;
        config.sync = sync.unwrap_or(match config.sync {
            // Only the lock-free strategy runs without a mutex.
            SyncMode::LockFree => SyncMode::Mutex,
            other => other,
        });
    }
    // Several workers share the pool: a single-threaded one would race.
    if setup.workers > 1 && config.sync == SyncMode::SingleThreaded {
        config.sync = SyncMode::Mutex;
    }
    if let Some(capacity) = setup.capacity_bytes {
        let capacity = usize::try_from(capacity).unwrap_or(usize::MAX);
        config.max_size_bytes = Some(capacity);
        config.initial_size_bytes = config.initial_size_bytes.min(capacity);
    }
    config
}

macro_rules! pool_factory {
    ($factory:ident, $name:literal, $description:literal, $default:literal,
     $allocator:expr, $sync:expr) => {
        pub struct $factory;

        impl BackendFactory for $factory {
            type Backend = PoolBackend;

            fn name(&self) -> &'static str {
                $name
            }

            fn description(&self) -> &'static str {
                $description
            }

            fn in_default_set(&self) -> bool {
                $default
            }

            fn create(&self, setup: &BackendSetup) -> Result<PoolBackend, String> {
                PoolBackend::new($name, pool_config(setup, $allocator, $sync))
            }

            fn reserved_source(&self) -> &'static str {
                "pool-stats"
            }

            fn config_summary(&self, setup: &BackendSetup) -> Option<String> {
                Some(pool_config(setup, $allocator, $sync).summary())
            }

            fn check_setup(&self, setup: &BackendSetup) -> Result<(), String> {
                let config = pool_config(setup, $allocator, $sync);
                config.validate_cpu().map_err(|e| e.to_string())?;
                // What validation cannot see from the config alone (a `--capacity` below
                // the strategy's first reservation): build the pool once, as a run would.
                PoolBackend::new($name, config).map(drop)
            }
        }
    };
}

pool_factory!(
    PoolFixedFactory,
    "pool-fixed",
    "CpuPool, size-classed fixed-size allocators",
    true,
    Some(AllocatorKind::SizeClassed),
    None
);
pool_factory!(
    PoolVariableFactory,
    "pool-variable",
    "CpuPool, variable-size (TLSF) allocator",
    true,
    Some(AllocatorKind::VariableSize),
    None
);
pool_factory!(
    PoolLockFreeFactory,
    "pool-lockfree",
    "CpuPool, lock-free size-classed allocator",
    true,
    Some(AllocatorKind::LockFree),
    Some(SyncMode::LockFree)
);
pool_factory!(
    PoolAsConfiguredFactory,
    "pool",
    "CpuPool with --config exactly as given",
    false,
    None,
    None
);
