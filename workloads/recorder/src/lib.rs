//! `libpoolbench_recorder.so`: an LD_PRELOAD library that records every heap operation of a
//! dynamically linked program as canonical poolbench CSV (`thread,time_ns,op,ptr,size,align,
//! old_ptr`, see docs/formats.md). `replay record -o OUT -- CMD…` (harness/src/commands/record.rs,
//! through workloads::record) drives it.
//!
//! Environment, read once when the library is loaded:
//! - `POOLBENCH_TRACE_OUT`: the file to write (created or truncated; `%p` becomes the pid).
//!   Unset or empty: the library only passes calls through.
//! - `POOLBENCH_TRACE_PPID`: if set, only a process whose parent has this pid records. With
//!   `replay record` that is the direct child, whichever program it finally `exec`s (each new
//!   image truncates the file, so a launcher such as a pyenv shim leaves no rows); processes
//!   it spawns do not record. Without it, every process that loads the library records, so
//!   put `%p` in the path for programs that start others.
//! - A forked child stops recording (a `pthread_atfork` handler, and a pid check before every
//!   write), so it never writes into its parent's file.
//!
//! Rows: `malloc`, `calloc` (size = nmemb × size), `memalign`, `posix_memalign`,
//! `aligned_alloc`, `valloc`, `pvalloc` → `alloc`; `free` → `free` (free(NULL) is not
//! recorded); `realloc` → `realloc` (ptr new, old_ptr old), except `realloc(NULL, n)` →
//! `alloc` and `realloc(p, 0)` that frees → `free`. `align` is the alignment the program
//! may rely on: 16 for malloc-family calls, max(requested, 16) for the aligned ones.
//!
//! Ordering across threads: a free is stamped *before* the real free, an allocation *after*
//! the real call returns, so when another thread gets the same address back its row has a
//! later `time_ns`. A realloc has both halves, so one that fits the block's usable size
//! goes to the real realloc (which keeps the block in place) and is stamped after it; one
//! that must move is performed here as malloc, copy, stamp, free, so the row's stamp lies
//! after the new block was obtained and before the old one is released. (glibc's in-place
//! growth into a free neighbour and `mremap` of huge blocks are therefore not used while
//! recording; replay calls each backend's own realloc anyway.)
//!
//! Lost rows: none at thread exit (pthread key destructor) or at `exit()` (a `.fini_array`
//! destructor flushes every buffer and makes later rows, also from threads still running,
//! go straight to the file). `_exit`, `exec` without exit, and fatal signals lose the rows
//! still buffered.

mod bootstrap;
mod sink;

use core::ffi::{c_int, c_void};
use core::sync::atomic::AtomicU8;
use core::sync::atomic::Ordering::{Acquire, Release};

use core::cell::UnsafeCell;
use sink::{Guard, Op, Row};

/// Alignment glibc's malloc guarantees on x86-64 and aarch64 (2 × size_t).
const MALLOC_ALIGN: usize = 16;

type MallocFn = unsafe extern "C" fn(usize) -> *mut c_void;
type FreeFn = unsafe extern "C" fn(*mut c_void);
type CallocFn = unsafe extern "C" fn(usize, usize) -> *mut c_void;
type ReallocFn = unsafe extern "C" fn(*mut c_void, usize) -> *mut c_void;
type AlignedFn = unsafe extern "C" fn(usize, usize) -> *mut c_void;
type PosixMemalignFn = unsafe extern "C" fn(*mut *mut c_void, usize, usize) -> c_int;
type UsableSizeFn = unsafe extern "C" fn(*mut c_void) -> usize;

/// The next definitions of the functions we interpose (normally glibc's).
struct RealFns {
    malloc: MallocFn,
    free: FreeFn,
    calloc: CallocFn,
    realloc: ReallocFn,
    memalign: Option<AlignedFn>,
    posix_memalign: Option<PosixMemalignFn>,
    aligned_alloc: Option<AlignedFn>,
    valloc: Option<MallocFn>,
    pvalloc: Option<MallocFn>,
    usable_size: Option<UsableSizeFn>,
}

struct ResolvedFns(UnsafeCell<Option<RealFns>>);

// SAFETY: the cell is written once, by the thread that moves RESOLVE_STATE from
// RESOLVE_BUSY to RESOLVE_DONE (Release), and only read after observing RESOLVE_DONE.
unsafe impl Sync for ResolvedFns {}

static REAL: ResolvedFns = ResolvedFns(UnsafeCell::new(None));
const RESOLVE_NONE: u8 = 0;
const RESOLVE_BUSY: u8 = 1;
const RESOLVE_DONE: u8 = 2;
static RESOLVE_STATE: AtomicU8 = AtomicU8::new(RESOLVE_NONE);

/// The real functions if already resolved.
#[inline]
fn real() -> Option<&'static RealFns> {
    if RESOLVE_STATE.load(Acquire) == RESOLVE_DONE {
        // SAFETY: RESOLVE_DONE was stored (Release) after the cell was written; never again.
        unsafe { (*REAL.0.get()).as_ref() }
    } else {
        None
    }
}

/// The real functions, resolving them on first use. Call with the thread's guard held: the
/// allocations dlsym makes then pass through to the bootstrap arena instead of recursing.
#[inline]
fn resolve() -> &'static RealFns {
    if let Some(r) = real() {
        return r;
    }
    resolve_slow()
}

#[cold]
fn resolve_slow() -> &'static RealFns {
    loop {
        match RESOLVE_STATE.compare_exchange(RESOLVE_NONE, RESOLVE_BUSY, Acquire, Acquire) {
            Ok(_) => {
                // SAFETY: we are the only writer (we moved the state to BUSY); readers wait
                // for DONE, stored below with Release.
                unsafe { *REAL.0.get() = Some(lookup_real_fns()) };
                RESOLVE_STATE.store(RESOLVE_DONE, Release);
            }
            Err(RESOLVE_DONE) => {}
            // Another thread is resolving (this one holds its guard, so it is not us).
            // SAFETY: sched_yield has no preconditions.
            Err(_) => unsafe {
                libc::sched_yield();
            },
        }
        if let Some(r) = real() {
            return r;
        }
    }
}

fn lookup_real_fns() -> RealFns {
    /// # Safety
    /// `name` is NUL-terminated and `T` is the function pointer type of that symbol.
    unsafe fn next<T: Copy>(name: &[u8]) -> Option<T> {
        debug_assert_eq!(name.last(), Some(&0));
        debug_assert_eq!(
            core::mem::size_of::<T>(),
            core::mem::size_of::<*mut c_void>()
        );
        // SAFETY: `name` is NUL-terminated (caller); RTLD_NEXT skips this library.
        let sym = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr().cast()) };
        if sym.is_null() {
            None
        } else {
            // SAFETY: a non-null symbol address of the function type the caller names.
            Some(unsafe { core::mem::transmute_copy::<*mut c_void, T>(&sym) })
        }
    }
    /// # Safety
    /// As for `next`.
    unsafe fn required<T: Copy>(name: &[u8]) -> T {
        // SAFETY: forwarded from the caller.
        match unsafe { next::<T>(name) } {
            Some(f) => f,
            None => {
                let msg =
                    b"poolbench-recorder: dlsym(RTLD_NEXT) found no malloc/free/calloc/realloc\n";
                // SAFETY: writing a static message to stderr, then aborting: we cannot
                // allocate without the real allocator.
                unsafe {
                    libc::write(2, msg.as_ptr().cast(), msg.len());
                    libc::abort()
                }
            }
        }
    }
    // SAFETY: each name is NUL-terminated and paired with its C prototype.
    unsafe {
        RealFns {
            malloc: required::<MallocFn>(b"malloc\0"),
            free: required::<FreeFn>(b"free\0"),
            calloc: required::<CallocFn>(b"calloc\0"),
            realloc: required::<ReallocFn>(b"realloc\0"),
            memalign: next::<AlignedFn>(b"memalign\0"),
            posix_memalign: next::<PosixMemalignFn>(b"posix_memalign\0"),
            aligned_alloc: next::<AlignedFn>(b"aligned_alloc\0"),
            valloc: next::<MallocFn>(b"valloc\0"),
            pvalloc: next::<MallocFn>(b"pvalloc\0"),
            usable_size: next::<UsableSizeFn>(b"malloc_usable_size\0"),
        }
    }
}

#[inline]
fn record_alloc(ptr: *mut c_void, size: usize, align: usize) {
    if !ptr.is_null() && sink::active() {
        sink::record(&Row {
            time_ns: sink::now_ns(),
            op: Op::Alloc,
            ptr: ptr as usize,
            size,
            align,
            old_ptr: 0,
        });
    }
}

#[inline]
fn record_free(ptr: *mut c_void, time_ns: u64) {
    sink::record(&Row {
        time_ns,
        op: Op::Free,
        ptr: ptr as usize,
        size: 0,
        align: 0,
        old_ptr: 0,
    });
}

/// Requested alignment as the trace states it: a power of two, at least MALLOC_ALIGN.
fn trace_align(align: usize) -> usize {
    align
        .checked_next_power_of_two()
        .unwrap_or(align)
        .max(MALLOC_ALIGN)
}

/// Allocation for a call made while this thread is already inside a hook: straight to the
/// real function, or to the bootstrap arena while dlsym is still resolving it.
///
/// # Safety
/// As for `malloc`.
unsafe fn passthrough_aligned(align: usize, size: usize) -> *mut c_void {
    match real() {
        // SAFETY: the real allocator's own contract; MALLOC_ALIGN requests go to malloc.
        Some(r) if align <= MALLOC_ALIGN => unsafe { (r.malloc)(size) },
        Some(r) => match r.memalign {
            // SAFETY: as above.
            Some(memalign) => unsafe { memalign(align, size) },
            None => core::ptr::null_mut(),
        },
        None => bootstrap::alloc(size, align),
    }
}

/// # Safety
/// The C `malloc` contract.
#[no_mangle]
pub unsafe extern "C" fn malloc(size: usize) -> *mut c_void {
    let Some(_guard) = Guard::enter() else {
        // SAFETY: forwarded contract.
        return unsafe { passthrough_aligned(MALLOC_ALIGN, size) };
    };
    // SAFETY: the real malloc's contract is the caller's.
    let p = unsafe { (resolve().malloc)(size) };
    record_alloc(p, size, MALLOC_ALIGN);
    p
}

/// # Safety
/// The C `calloc` contract.
#[no_mangle]
pub unsafe extern "C" fn calloc(nmemb: usize, size: usize) -> *mut c_void {
    let Some(_guard) = Guard::enter() else {
        return match real() {
            // SAFETY: forwarded contract.
            Some(r) => unsafe { (r.calloc)(nmemb, size) },
            // The bootstrap arena is static memory that is never reused: already zero.
            None => match nmemb.checked_mul(size) {
                Some(bytes) => bootstrap::alloc(bytes, MALLOC_ALIGN),
                None => core::ptr::null_mut(),
            },
        };
    };
    // SAFETY: forwarded contract.
    let p = unsafe { (resolve().calloc)(nmemb, size) };
    record_alloc(p, nmemb.saturating_mul(size), MALLOC_ALIGN);
    p
}

/// # Safety
/// The C `free` contract.
#[no_mangle]
pub unsafe extern "C" fn free(ptr: *mut c_void) {
    if ptr.is_null() || bootstrap::contains(ptr) {
        return; // bootstrap blocks are never reused
    }
    let Some(_guard) = Guard::enter() else {
        if let Some(r) = real() {
            // SAFETY: forwarded contract.
            unsafe { (r.free)(ptr) };
        }
        return;
    };
    let real = resolve();
    if sink::active() {
        record_free(ptr, sink::now_ns());
    }
    // SAFETY: forwarded contract.
    unsafe { (real.free)(ptr) };
}

/// # Safety
/// The C `realloc` contract.
#[no_mangle]
pub unsafe extern "C" fn realloc(old: *mut c_void, size: usize) -> *mut c_void {
    if bootstrap::contains(old) {
        // Move out of the arena through our own malloc, which records the new block.
        // SAFETY: forwarded contract.
        let new = unsafe { malloc(size) };
        if !new.is_null() {
            let n = bootstrap::size_of(old).min(size);
            // SAFETY: `old` holds at least `n` bytes (its recorded size), `new` at least
            // `size >= n`; distinct blocks do not overlap.
            unsafe { core::ptr::copy_nonoverlapping(old.cast::<u8>(), new.cast::<u8>(), n) };
        }
        return new;
    }
    let Some(_guard) = Guard::enter() else {
        return match real() {
            // SAFETY: forwarded contract.
            Some(r) => unsafe { (r.realloc)(old, size) },
            None if old.is_null() => bootstrap::alloc(size, MALLOC_ALIGN),
            None => core::ptr::null_mut(),
        };
    };
    let real = resolve();
    if !sink::active() {
        // SAFETY: forwarded contract.
        return unsafe { (real.realloc)(old, size) };
    }
    if old.is_null() {
        // SAFETY: forwarded contract.
        let p = unsafe { (real.realloc)(old, size) };
        record_alloc(p, size, MALLOC_ALIGN);
        return p;
    }
    if size == 0 {
        let before_ns = sink::now_ns();
        // SAFETY: forwarded contract.
        let p = unsafe { (real.realloc)(old, 0) };
        if p.is_null() {
            record_free(old, before_ns); // glibc's realloc(p, 0) frees p
        } else {
            record_realloc(p, old, 0, sink::now_ns());
        }
        return p;
    }
    // SAFETY: `old` is a live block of the real allocator (caller's contract).
    let usable = real.usable_size.map(|f| unsafe { f(old) });
    if usable.is_some_and(|u| size <= u) {
        // Fits: the real realloc keeps the block where it is.
        // SAFETY: forwarded contract.
        let p = unsafe { (real.realloc)(old, size) };
        if !p.is_null() {
            record_realloc(p, old, size, sink::now_ns());
        }
        return p;
    }
    // Must move. A real realloc would release `old` inside the call, where another thread
    // could get it back before our stamp; so take the new block, stamp, then release `old`.
    // SAFETY: forwarded contract.
    let p = unsafe { (real.malloc)(size) };
    if p.is_null() {
        return p; // `old` stays valid, as realloc promises; malloc set errno
    }
    match usable {
        // SAFETY: `old` holds `u < size` usable bytes, `p` holds `size`; distinct blocks.
        Some(u) => unsafe { core::ptr::copy_nonoverlapping(old.cast::<u8>(), p.cast::<u8>(), u) },
        None => {
            // Without malloc_usable_size the old size is unknown: let the real realloc move
            // the block (and accept the window described in the crate docs).
            // SAFETY: forwarded contract; `p` is ours and unused.
            unsafe { (real.free)(p) };
            // SAFETY: forwarded contract.
            let p = unsafe { (real.realloc)(old, size) };
            if !p.is_null() {
                record_realloc(p, old, size, sink::now_ns());
            }
            return p;
        }
    }
    record_realloc(p, old, size, sink::now_ns());
    // SAFETY: `old` is live and its contents were copied; forwarded contract.
    unsafe { (real.free)(old) };
    p
}

fn record_realloc(new: *mut c_void, old: *mut c_void, size: usize, time_ns: u64) {
    sink::record(&Row {
        time_ns,
        op: Op::Realloc,
        ptr: new as usize,
        size,
        align: MALLOC_ALIGN,
        old_ptr: old as usize,
    });
}

/// Shared body of the aligned allocation functions.
///
/// # Safety
/// `call` upholds the C contract of the function it wraps.
#[inline]
unsafe fn aligned_hook(
    align: usize,
    size: usize,
    call: impl FnOnce(&RealFns) -> *mut c_void,
) -> *mut c_void {
    let Some(_guard) = Guard::enter() else {
        return match real() {
            Some(r) => call(r),
            None => bootstrap::alloc(size, align),
        };
    };
    let p = call(resolve());
    record_alloc(p, size, trace_align(align));
    p
}

/// # Safety
/// The C `memalign` contract.
#[no_mangle]
pub unsafe extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    // SAFETY: forwarded contract; a missing function yields NULL (allocation failure).
    unsafe {
        aligned_hook(align, size, |r| match r.memalign {
            Some(f) => f(align, size),
            None => core::ptr::null_mut(),
        })
    }
}

/// # Safety
/// The C `aligned_alloc` contract.
#[no_mangle]
pub unsafe extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    // SAFETY: forwarded contract; a missing function yields NULL (allocation failure).
    unsafe {
        aligned_hook(align, size, |r| match r.aligned_alloc.or(r.memalign) {
            Some(f) => f(align, size),
            None => core::ptr::null_mut(),
        })
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if page > 0 {
        page as usize
    } else {
        4096
    }
}

/// # Safety
/// The C `valloc` contract.
#[no_mangle]
pub unsafe extern "C" fn valloc(size: usize) -> *mut c_void {
    let page = page_size();
    // SAFETY: forwarded contract; a missing function yields NULL (allocation failure).
    unsafe {
        aligned_hook(page, size, |r| match (r.valloc, r.memalign) {
            (Some(f), _) => f(size),
            (None, Some(f)) => f(page, size),
            (None, None) => core::ptr::null_mut(),
        })
    }
}

/// # Safety
/// The C `pvalloc` contract.
#[no_mangle]
pub unsafe extern "C" fn pvalloc(size: usize) -> *mut c_void {
    let page = page_size();
    // pvalloc rounds the size up to whole pages (0 → one page): the program may use them.
    let rounded = size.max(1).div_ceil(page).saturating_mul(page);
    // SAFETY: forwarded contract; a missing function yields NULL (allocation failure).
    unsafe {
        aligned_hook(page, rounded, |r| match (r.pvalloc, r.memalign) {
            (Some(f), _) => f(size),
            (None, Some(f)) => f(page, rounded),
            (None, None) => core::ptr::null_mut(),
        })
    }
}

/// # Safety
/// The C `posix_memalign` contract: `memptr` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn posix_memalign(
    memptr: *mut *mut c_void,
    align: usize,
    size: usize,
) -> c_int {
    // A power of two that is a multiple of sizeof(void *), as POSIX requires.
    let valid = align.is_power_of_two() && align >= core::mem::size_of::<*mut c_void>();
    if !valid {
        return libc::EINVAL;
    }
    let mut rc = 0;
    // SAFETY: forwarded contract; `out` is a valid local for the real function to write.
    let p = unsafe {
        aligned_hook(align, size, |r| {
            let mut out = core::ptr::null_mut();
            rc = match r.posix_memalign {
                Some(f) => f(&mut out, align, size),
                None => match r.memalign {
                    Some(m) => {
                        out = m(align, size);
                        if out.is_null() {
                            libc::ENOMEM
                        } else {
                            0
                        }
                    }
                    None => libc::ENOMEM,
                },
            };
            out
        })
    };
    if p.is_null() {
        return if rc == 0 { libc::ENOMEM } else { rc };
    }
    // SAFETY: `memptr` is writable (caller's contract).
    unsafe { *memptr = p };
    0
}

/// # Safety
/// The C `malloc_usable_size` contract.
#[no_mangle]
pub unsafe extern "C" fn malloc_usable_size(ptr: *mut c_void) -> usize {
    if ptr.is_null() {
        return 0;
    }
    if bootstrap::contains(ptr) {
        return bootstrap::size_of(ptr);
    }
    // Re-entered while this thread resolves: `real()` is None and the pointer is not ours.
    let guard = Guard::enter();
    let fns = if guard.is_some() {
        Some(resolve())
    } else {
        real()
    };
    match fns.and_then(|r| r.usable_size) {
        // SAFETY: forwarded contract.
        Some(f) => unsafe { f(ptr) },
        None => 0,
    }
}

/// Runs when the library is loaded, after libc is initialised (so getenv works): decides
/// whether this process records. Rows made earlier (ld.so and library constructors) are
/// buffered and written if it does.
extern "C" fn on_load() {
    let _guard = Guard::enter();
    resolve();
    if !sink::undecided() {
        return;
    }
    let Some(path) = env_bytes(b"POOLBENCH_TRACE_OUT\0").filter(|p| !p.is_empty()) else {
        sink::disable();
        return;
    };
    if let Some(parent) = env_bytes(b"POOLBENCH_TRACE_PPID\0") {
        // SAFETY: getppid has no preconditions.
        let ppid = unsafe { libc::getppid() };
        if parse_dec(parent) != Some(ppid as u64) {
            sink::disable();
            return;
        }
    }
    if !sink::start(path) {
        let msg = b"poolbench-recorder: cannot open POOLBENCH_TRACE_OUT; not recording\n";
        // SAFETY: a static message to stderr.
        unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
    }
}

/// Runs at `exit()` (after the program's atexit handlers).
extern "C" fn on_unload() {
    let _guard = Guard::enter();
    sink::finish();
}

#[used]
#[link_section = ".init_array"]
static ON_LOAD: extern "C" fn() = on_load;

#[used]
#[link_section = ".fini_array"]
static ON_UNLOAD: extern "C" fn() = on_unload;

/// The value of environment variable `name` (NUL-terminated), without allocating.
fn env_bytes(name: &[u8]) -> Option<&'static [u8]> {
    // SAFETY: `name` is NUL-terminated; getenv returns NULL or a NUL-terminated string in
    // the environment, which we do not modify.
    unsafe {
        let v = libc::getenv(name.as_ptr().cast());
        if v.is_null() {
            None
        } else {
            Some(core::ffi::CStr::from_ptr(v).to_bytes())
        }
    }
}

fn parse_dec(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &c| {
        c.is_ascii_digit()
            .then(|| acc.checked_mul(10)?.checked_add((c - b'0') as u64))
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_alignment() {
        assert_eq!(trace_align(8), 16);
        assert_eq!(trace_align(64), 64);
        assert_eq!(trace_align(48), 64);
        assert_eq!(trace_align(4096), 4096);
    }

    #[test]
    fn decimal_parsing() {
        assert_eq!(parse_dec(b"4242"), Some(4242));
        assert_eq!(parse_dec(b""), None);
        assert_eq!(parse_dec(b"12x"), None);
        assert_eq!(parse_dec(b"99999999999999999999999"), None);
    }
}
