//! `PoolGlobalAlloc`: a `#[global_allocator]` over a lazily created `CpuPool`.
//!
//! The pool gets its memory only from `mmap` (`os::OsChunks`), and the size-classed
//! strategy never touches the Rust heap after construction (its lists are intrusive). Two
//! things still allocate through the global allocator, i.e. back into us:
//! - building the pool itself (its name, counters, boxed strategy, class table), and
//! - building an error value (its message `String`) on a failing path.
//!
//! The pool's own structures are served from a static bootstrap arena (bump allocation,
//! never reused), selected by a per-thread "inside the pool" flag, so there is no recursion
//! into the pool and no deadlock on its lock. Frees of arena blocks are ignored.
//!
//! Error values are different: a program may handle millions of allocation failures
//! (`Vec::try_reserve` in a loop), and each would leak its message into the never-reused
//! arena until the process aborts. So while a thread is inside an allocation or free
//! call on the pool, its allocations go to a small per-thread scratch buffer instead,
//! rewound when the call returns. That is sound because, for the supported configs, the
//! only heap values such a call creates are its `PoolError`, which is dropped before the
//! rewind (the strategy's lists are intrusive; the pool itself is built in `init`, under
//! the arena). The failure path therefore allocates nothing that outlives it.
//!
//! Supported configs: `allocator = "size-classed"`, `sync = "mutex"`, no `track_live`
//! (its map lives on the heap and would be rebuilt from the arena forever). Other configs
//! are rejected when the pool is first used: a message on stderr (written without
//! allocating) and every allocation fails, which Rust reports as an allocation failure.

use crate::config::{AllocatorKind, PoolConfig, SyncMode};
use crate::cpu_pool::CpuPool;
use crate::pool::{AllocFlags, MemoryPool};
use std::alloc::{GlobalAlloc, Layout};
use std::cell::{Cell, UnsafeCell};
use std::mem::MaybeUninit;
use std::ptr::{null_mut, NonNull};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

const UNINIT: u8 = 0;
const INITIALIZING: u8 = 1;
const READY: u8 = 2;
const FAILED: u8 = 3;

/// Bytes of the bootstrap arena shared by every `PoolGlobalAlloc` of the process.
const BOOTSTRAP_BYTES: usize = 256 * 1024;

#[repr(C, align(4096))]
struct BootstrapArena {
    bytes: UnsafeCell<[u8; BOOTSTRAP_BYTES]>,
    /// Bytes handed out so far; blocks are `[offset, offset + size)` ranges below it and
    /// are never handed out twice.
    used_bytes: AtomicUsize,
}

// SAFETY: disjoint ranges of `bytes` are handed out by an atomic bump of `used_bytes`;
// each range is then owned by its single caller.
unsafe impl Sync for BootstrapArena {}

static BOOTSTRAP: BootstrapArena = BootstrapArena {
    bytes: UnsafeCell::new([0; BOOTSTRAP_BYTES]),
    used_bytes: AtomicUsize::new(0),
};

impl BootstrapArena {
    fn base(&self) -> usize {
        self.bytes.get() as usize
    }

    fn allocate(&self, layout: Layout) -> *mut u8 {
        let base = self.base();
        let mut used = self.used_bytes.load(Ordering::Relaxed);
        loop {
            let start = (base + used).next_multiple_of(layout.align()) - base;
            let end = start + layout.size();
            if end > BOOTSTRAP_BYTES {
                return null_mut();
            }
            match self.used_bytes.compare_exchange_weak(
                used,
                end,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return (base + start) as *mut u8,
                Err(now) => used = now,
            }
        }
    }

    fn contains(&self, ptr: *mut u8) -> bool {
        let addr = ptr as usize;
        addr >= self.base() && addr < self.base() + BOOTSTRAP_BYTES
    }
}

/// Bytes of each thread's scratch buffer for the values a pool call builds and drops
/// (error messages: a pool name and a sentence, well under 1 KiB each).
const SCRATCH_BYTES: usize = 4096;

#[repr(C, align(64))]
struct Scratch {
    bytes: UnsafeCell<[u8; SCRATCH_BYTES]>,
    /// Bytes handed out since the enclosing pool call began. Blocks are ranges below it;
    /// only this thread touches the buffer, and only inside one pool call at a time.
    used_bytes: Cell<usize>,
}

impl Scratch {
    fn allocate(&self, layout: Layout) -> *mut u8 {
        let base = self.bytes.get() as usize;
        let used = self.used_bytes.get();
        let start = (base + used).next_multiple_of(layout.align()) - base;
        match start.checked_add(layout.size()) {
            Some(end) if end <= SCRATCH_BYTES => {
                self.used_bytes.set(end);
                (base + start) as *mut u8
            }
            _ => null_mut(),
        }
    }

    fn contains(&self, ptr: *mut u8) -> bool {
        let base = self.bytes.get() as usize;
        (base..base + SCRATCH_BYTES).contains(&(ptr as usize))
    }
}

/// Where a thread's allocations go right now.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Outside the pool: to the pool.
    User,
    /// Building the pool: to the bootstrap arena (they live as long as the pool).
    Building,
    /// Inside an allocate/free call: to the scratch buffer, rewound when the call returns.
    Call,
}

thread_local! {
    /// Set while this thread is inside the pool (or building it); see `Mode`.
    static MODE: Cell<Mode> = const { Cell::new(Mode::User) };
    static SCRATCH: Scratch = const {
        Scratch {
            bytes: UnsafeCell::new([0; SCRATCH_BYTES]),
            used_bytes: Cell::new(0),
        }
    };
}

/// Sets `MODE` for its lifetime, restoring the previous mode (and, after a pool call,
/// rewinding the scratch buffer to where the call found it).
struct InPool {
    previous: Mode,
    scratch_mark: usize,
}

impl InPool {
    /// Building the pool: allocations go to the bootstrap arena.
    fn building() -> Self {
        InPool {
            previous: MODE.with(|m| m.replace(Mode::Building)),
            scratch_mark: usize::MAX,
        }
    }

    /// A call into the built pool: allocations go to the scratch buffer. Every value the
    /// call allocates must be dropped before this guard is (see the module doc).
    fn call() -> Self {
        InPool {
            previous: MODE.with(|m| m.replace(Mode::Call)),
            scratch_mark: SCRATCH.with(|s| s.used_bytes.get()),
        }
    }
}

impl Drop for InPool {
    fn drop(&mut self) {
        if self.scratch_mark != usize::MAX {
            let mark = self.scratch_mark;
            SCRATCH.with(|s| s.used_bytes.set(mark));
        }
        let previous = self.previous;
        MODE.with(|m| m.set(previous));
    }
}

/// Serve an allocation made while this thread is inside the pool, if it is.
fn allocate_inside_pool(layout: Layout) -> Option<*mut u8> {
    match MODE.with(|m| m.get()) {
        Mode::User => None,
        Mode::Building => Some(BOOTSTRAP.allocate(layout)),
        Mode::Call => {
            // A value too large for the scratch buffer falls back to the arena (a leak,
            // but bounded by the size of one message per failure, and never expected).
            let ptr = SCRATCH.with(|s| s.allocate(layout));
            Some(if ptr.is_null() {
                BOOTSTRAP.allocate(layout)
            } else {
                ptr
            })
        }
    }
}

/// Whether `ptr` was served by `allocate_inside_pool` (and so is not the pool's).
fn is_inside_pool_block(ptr: *mut u8) -> bool {
    BOOTSTRAP.contains(ptr) || SCRATCH.with(|s| s.contains(ptr))
}

/// A global allocator over a `CpuPool` created on first use:
///
/// ```ignore
/// fn config() -> PoolConfig {
///     PoolConfig { allocator: AllocatorKind::SizeClassed, ..PoolConfig::default_cpu() }
/// }
/// #[global_allocator]
/// static GLOBAL: PoolGlobalAlloc = PoolGlobalAlloc::new("global", config);
/// ```
pub struct PoolGlobalAlloc {
    name: &'static str,
    config: fn() -> PoolConfig,
    /// UNINIT -> INITIALIZING -> READY | FAILED, each transition once.
    state: AtomicU8,
    /// Initialised iff `state == READY` (written before the Release store of READY).
    pool: UnsafeCell<MaybeUninit<CpuPool>>,
}

// SAFETY: `pool` is written once, by the thread that won UNINIT -> INITIALIZING, before it
// publishes READY with Release; readers read it only after an Acquire load of READY, and
// then only through `&CpuPool`, which is `Sync`.
unsafe impl Sync for PoolGlobalAlloc {}

impl PoolGlobalAlloc {
    pub const fn new(name: &'static str, config: fn() -> PoolConfig) -> Self {
        PoolGlobalAlloc {
            name,
            config,
            state: AtomicU8::new(UNINIT),
            pool: UnsafeCell::new(MaybeUninit::uninit()),
        }
    }

    /// Why `config` cannot back a global allocator, if it cannot.
    pub fn unsupported_reason(config: &PoolConfig) -> Option<&'static str> {
        if config.allocator != AllocatorKind::SizeClassed {
            Some("PoolGlobalAlloc needs allocator = \"size-classed\" (the only strategy that serves every size without using the Rust heap)")
        } else if config.sync != SyncMode::Mutex {
            Some("PoolGlobalAlloc needs sync = \"mutex\" (a global allocator is used from every thread)")
        } else if config.debug.track_live {
            Some("PoolGlobalAlloc does not support debug.track_live (the live map lives on the Rust heap)")
        } else {
            None
        }
    }

    /// The pool, once the first allocation has created it.
    pub fn pool(&self) -> Option<&CpuPool> {
        if self.state.load(Ordering::Acquire) == READY {
            // SAFETY: READY was published after the pool was written (field invariant).
            Some(unsafe { (*self.pool.get()).assume_init_ref() })
        } else {
            None
        }
    }

    /// The pool, creating it on first use; `None` if the config is unsupported.
    #[inline]
    fn get_or_init(&self) -> Option<&CpuPool> {
        loop {
            match self.state.load(Ordering::Acquire) {
                READY => return self.pool(),
                FAILED => return None,
                UNINIT => {
                    if self
                        .state
                        .compare_exchange(
                            UNINIT,
                            INITIALIZING,
                            Ordering::Acquire,
                            Ordering::Relaxed,
                        )
                        .is_ok()
                    {
                        return self.init();
                    }
                }
                _ => std::hint::spin_loop(),
            }
        }
    }

    #[cold]
    fn init(&self) -> Option<&CpuPool> {
        let _guard = InPool::building();
        let mut config = (self.config)();
        // A thread cache is created on the Rust heap per thread, i.e. from the bootstrap
        // arena here, which is never reused: the global pool runs without one.
        config.thread_cache.enabled = false;
        let built = match Self::unsupported_reason(&config) {
            Some(reason) => Err(reason),
            None => CpuPool::new(self.name, config).map_err(|_| {
                "PoolGlobalAlloc: the pool config is invalid (see PoolConfig::validate)"
            }),
        };
        match built {
            Ok(pool) => {
                // SAFETY: we won UNINIT -> INITIALIZING, so we are the only writer, and no
                // reader looks before READY is published below.
                unsafe { (*self.pool.get()).write(pool) };
                self.state.store(READY, Ordering::Release);
                self.pool()
            }
            Err(reason) => {
                write_stderr(reason);
                self.state.store(FAILED, Ordering::Release);
                None
            }
        }
    }
}

/// Write a line to stderr without allocating.
fn write_stderr(message: &str) {
    for part in [message.as_bytes(), b"\n"] {
        // SAFETY: writing a valid byte slice to fd 2; errors are ignored (nothing to do).
        unsafe { libc::write(2, part.as_ptr().cast(), part.len()) };
    }
}

// SAFETY: blocks come from the pool (sized and aligned as asked, or null on failure) or
// from disjoint ranges of the bootstrap arena; a block is freed where it came from
// (arena blocks are recognised by address and never reused).
unsafe impl GlobalAlloc for PoolGlobalAlloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if let Some(ptr) = allocate_inside_pool(layout) {
            return ptr;
        }
        let Some(pool) = self.get_or_init() else {
            return null_mut();
        };
        let _guard = InPool::call();
        match pool.allocate_with(layout.size(), AllocFlags::aligned(layout.align())) {
            Ok(ptr) => ptr.as_ptr(),
            Err(_) => null_mut(),
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if let Some(ptr) = allocate_inside_pool(layout) {
            if !ptr.is_null() {
                // SAFETY: a fresh block of `layout.size()` bytes, ours alone (scratch
                // blocks are reused, so unlike arena blocks they are not known to be zero).
                unsafe { ptr.write_bytes(0, layout.size()) };
            }
            return ptr;
        }
        let Some(pool) = self.get_or_init() else {
            return null_mut();
        };
        let _guard = InPool::call();
        let flags = AllocFlags {
            align: layout.align(),
            zeroed: true,
        };
        match pool.allocate_with(layout.size(), flags) {
            Ok(ptr) => ptr.as_ptr(),
            Err(_) => null_mut(),
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_inside_pool_block(ptr) {
            return;
        }
        let (Some(pool), Some(ptr)) = (self.pool(), NonNull::new(ptr)) else {
            return;
        };
        let _guard = InPool::call();
        // SAFETY: `GlobalAlloc::dealloc`'s contract: ptr was allocated by this allocator,
        // and it is not an arena block (checked above), so it is a live block of the pool;
        // the layout's size is the pool's hint (`deallocate_sized`).
        if unsafe { pool.deallocate_sized(ptr, layout.size()) }.is_err() {
            write_stderr("PoolGlobalAlloc: free of a pointer the pool does not own (ignored)");
        }
    }
}
