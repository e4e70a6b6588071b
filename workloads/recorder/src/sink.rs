//! The per-thread buffered writer of canonical CSV rows, shared by the LD_PRELOAD recorder
//! (this crate) and `workloads::record::RecordingAlloc` (which includes this file with
//! `#[path]`), so both write byte-identical traces.
//!
//! ```text
//!  thread 0 ──append──▶ [Buffer] ─┐            (64 KiB, mmap)
//!  thread 1 ──append──▶ [Buffer] ─┼─ flush: one write(2) of whole rows ──▶ trace file
//!  exited   ──direct──────────────┘        under WRITE_LOCK, O_APPEND
//!  BUFFERS: Buffer ─next─▶ Buffer ─next─▶ …   (every buffer ever made; never unmapped)
//! ```
//!
//! Nothing here allocates through malloc or a Rust allocator: buffers come from `mmap`, the
//! thread state is `const`-initialised thread-locals of `Copy` types (no destructor, so no
//! registration and no allocation on first touch), a pthread key's destructor flushes a
//! thread's buffer at thread exit, and `finish` flushes every buffer at process exit while
//! other threads may still be running. Callers hold a [`Guard`] around everything they do,
//! so an allocation made by libc on our behalf (`pthread_setspecific`, `pthread_atfork`)
//! re-enters the hook, finds the guard taken and passes straight through unrecorded.
//!
//! Rows of one thread reach the file in program order (one buffer per thread, flushed in
//! order under its lock). Rows of different threads interleave in flush order; readers
//! order them by `time_ns` (a stable sort), which is why callers stamp a free *before* the
//! real free and an allocation *after* the real allocation returns.

use core::cell::{Cell, UnsafeCell};
use core::ffi::c_void;
use core::marker::PhantomData;
use core::ptr::{self, null_mut};
use core::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst};
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, AtomicU8};

/// The canonical CSV header (docs/formats.md), written once when the file is opened.
pub const HEADER: &[u8] = b"thread,time_ns,op,ptr,size,align,old_ptr\n";

/// Longest row: thread (10) + time_ns (20) + op (7) + ptr (18) + size (20) + align (20) +
/// old_ptr (18) + 6 commas + newline = 120 bytes.
const MAX_ROW_BYTES: usize = 128;
/// One thread's buffer, header included.
const BUFFER_BYTES: usize = 64 * 1024;
const ROWS_BYTES: usize = BUFFER_BYTES - 64;
/// Longest trace path after `%p` expansion, NUL included.
const MAX_PATH_BYTES: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Alloc,
    Free,
    Realloc,
}

/// One event. `size` and `align` are ignored for `Free`, `old_ptr` for all but `Realloc`.
#[derive(Clone, Copy, Debug)]
pub struct Row {
    pub time_ns: u64,
    pub op: Op,
    pub ptr: usize,
    pub size: usize,
    pub align: usize,
    pub old_ptr: usize,
}

/// Rows are buffered but cannot be written yet (the destination is not known).
const UNDECIDED: u8 = 0;
/// `start` is opening the file; rows are buffered as in `UNDECIDED`.
const OPENING: u8 = 1;
/// Rows are written to `FD`.
const ON: u8 = 2;
/// Nothing is recorded (no destination, or a forked child).
const OFF: u8 = 3;

static STATE: AtomicU8 = AtomicU8::new(UNDECIDED);
static FD: AtomicI32 = AtomicI32::new(-1);
/// The process that opened `FD`; a forked child that shares our memory must never write.
static OWNER_PID: AtomicI32 = AtomicI32::new(0);
/// Set once the process is exiting: from then on every row is written as soon as it is made.
static FINAL: AtomicBool = AtomicBool::new(false);
/// Head of the list of every buffer ever mapped; a buffer is pushed once and never removed.
static BUFFERS: AtomicPtr<Buffer> = AtomicPtr::new(null_mut());
static NEXT_THREAD: AtomicU32 = AtomicU32::new(0);
/// Rows that could not be kept (buffer full before the destination was known, write error).
static DROPPED_ROWS: AtomicU64 = AtomicU64::new(0);
/// Serialises write(2) calls so that a partial write is completed before another starts.
static WRITE_LOCK: SpinLock = SpinLock::new();

const KEY_NONE: u8 = 0;
const KEY_CREATING: u8 = 1;
const KEY_READY: u8 = 2;
const KEY_FAILED: u8 = 3;
static KEY_STATE: AtomicU8 = AtomicU8::new(KEY_NONE);
/// Valid iff `KEY_STATE == KEY_READY`; its destructor is `on_thread_exit`.
static KEY: AtomicU32 = AtomicU32::new(0);

thread_local! {
    static IN_HOOK: Cell<bool> = const { Cell::new(false) };
    static THREAD_ID: Cell<u32> = const { Cell::new(u32::MAX) };
    /// This thread's buffer; null before the first row and after the thread-exit flush.
    static THREAD_BUFFER: Cell<*mut Buffer> = const { Cell::new(null_mut()) };
    /// Set by the thread-exit flush: later rows of this thread are written directly.
    static THREAD_EXITED: Cell<bool> = const { Cell::new(false) };
}

/// The reentrancy guard: at most one live `Guard` per thread.
pub struct Guard {
    _not_send: PhantomData<*mut ()>,
}

impl Guard {
    /// Takes this thread's guard, or `None` if the thread is already inside a hook (the
    /// caller must then pass the call through without recording).
    #[inline]
    pub fn enter() -> Option<Guard> {
        IN_HOOK.with(|h| {
            if h.get() {
                None
            } else {
                h.set(true);
                Some(Guard {
                    _not_send: PhantomData,
                })
            }
        })
    }
}

impl Drop for Guard {
    #[inline]
    fn drop(&mut self) {
        IN_HOOK.with(|h| h.set(false));
    }
}

struct SpinLock(AtomicBool);

impl SpinLock {
    const fn new() -> SpinLock {
        SpinLock(AtomicBool::new(false))
    }

    fn lock(&self) {
        while self
            .0
            .compare_exchange_weak(false, true, Acquire, Relaxed)
            .is_err()
        {
            // SAFETY: sched_yield has no preconditions.
            unsafe { libc::sched_yield() };
        }
    }

    fn unlock(&self) {
        self.0.store(false, Release);
    }
}

/// A thread's rows waiting to be written. Lives in its own `mmap` region.
#[repr(C)]
struct Buffer {
    /// Guards `len` and `rows`: taken by the owning thread to append and by anyone flushing.
    lock: SpinLock,
    /// True while a thread (or pending rows) owns it; false = free for the next new thread.
    owned: AtomicBool,
    /// Next in `BUFFERS`; written once before the buffer is published.
    next: *mut Buffer,
    /// `rows[..len]` holds whole rows, oldest first.
    len: UnsafeCell<usize>,
    rows: UnsafeCell<[u8; ROWS_BYTES]>,
}

const _: () = assert!(core::mem::size_of::<Buffer>() <= BUFFER_BYTES);

/// Nanoseconds of CLOCK_MONOTONIC: one clock, comparable across threads.
#[inline]
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// False once recording is off for good; rows made while this is true are kept.
#[inline]
pub fn active() -> bool {
    STATE.load(Acquire) != OFF
}

/// True until `start` or `disable` has decided where rows go.
#[inline]
pub fn undecided() -> bool {
    STATE.load(Acquire) == UNDECIDED
}

/// Opens the trace file at `path` (`%p` is replaced by the process id), truncating it,
/// writes the header and every row buffered so far, and turns recording on. Returns false
/// (and turns recording off) if the path is too long or cannot be opened, or if recording
/// was already decided.
pub fn start(path: &[u8]) -> bool {
    if STATE
        .compare_exchange(UNDECIDED, OPENING, AcqRel, Acquire)
        .is_err()
    {
        return false;
    }
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    let mut cpath = [0u8; MAX_PATH_BYTES];
    let Some(len) = expand_path(path, pid as u32, &mut cpath) else {
        disable();
        return false;
    };
    debug_assert!(len < MAX_PATH_BYTES && cpath[len] == 0);
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_APPEND | libc::O_CLOEXEC;
    // SAFETY: `cpath` is NUL-terminated (expand_path leaves a zero after `len` bytes).
    let fd = unsafe { libc::open(cpath.as_ptr().cast(), flags, 0o644 as libc::c_uint) };
    if fd < 0 {
        disable();
        return false;
    }
    FD.store(fd, Release);
    OWNER_PID.store(pid, Release);
    write_rows(HEADER);
    // SAFETY: `after_fork_child` is an `extern "C" fn()` that stays mapped for the life of
    // the process (neither the preloaded library nor an executable is unloaded).
    unsafe { libc::pthread_atfork(None, None, Some(after_fork_child)) };
    STATE.store(ON, Release);
    flush_all();
    true
}

/// Turns recording off for good and discards buffered rows.
pub fn disable() {
    STATE.store(OFF, Release);
    for_each_buffer(|buf| {
        // SAFETY: `buf` comes from `BUFFERS`, so it is a live Buffer; `len` is touched
        // only under its lock.
        unsafe {
            (*buf).lock.lock();
            *(*buf).len.get() = 0;
            (*buf).lock.unlock();
        }
    });
}

/// Writes out every thread's buffered rows now (recording stays on).
pub fn flush_all() {
    for_each_buffer(|buf| {
        // SAFETY: `buf` is a live Buffer from `BUFFERS`; we hold its lock around the flush.
        unsafe {
            (*buf).lock.lock();
            flush_locked(buf);
            (*buf).lock.unlock();
        }
    });
}

/// Process exit: from now on rows are written as soon as they are made (threads may still
/// be running), and everything buffered is written out. Reports dropped rows on stderr.
pub fn finish() {
    if STATE.load(Acquire) != ON {
        return;
    }
    FINAL.store(true, SeqCst);
    flush_all();
    let dropped = DROPPED_ROWS.load(Relaxed);
    if dropped > 0 {
        let mut msg = [0u8; 96];
        let prefix = b"poolbench-recorder: rows dropped: ";
        msg[..prefix.len()].copy_from_slice(prefix);
        let mut n = prefix.len();
        n += write_dec(&mut msg[n..], dropped);
        msg[n] = b'\n';
        // SAFETY: `msg[..=n]` is initialised memory; fd 2 may be closed, which is harmless.
        unsafe { libc::write(2, msg.as_ptr().cast(), n + 1) };
    }
}

/// `pthread_atfork` child handler: the child never writes to its parent's trace.
extern "C" fn after_fork_child() {
    STATE.store(OFF, Release);
}

/// Records one event for the calling thread. Call with the thread's [`Guard`] held.
pub fn record(row: &Row) {
    if !active() {
        return;
    }
    let mut line = [0u8; MAX_ROW_BYTES];
    let n = format_row(&mut line, thread_id(), row);
    let buf = thread_buffer();
    if buf.is_null() {
        // An exited thread (or no memory for a buffer): write the row on its own.
        if STATE.load(Acquire) == ON {
            write_rows(&line[..n]);
        } else {
            DROPPED_ROWS.fetch_add(1, Relaxed);
        }
        return;
    }
    // SAFETY: `buf` is this thread's live Buffer; `len`/`rows` are accessed under its lock,
    // and `len + n <= ROWS_BYTES` is checked before copying.
    unsafe {
        (*buf).lock.lock();
        if *(*buf).len.get() + n > ROWS_BYTES {
            flush_locked(buf);
        }
        let len = *(*buf).len.get();
        if len + n <= ROWS_BYTES {
            let rows = &mut *(*buf).rows.get();
            rows[len..len + n].copy_from_slice(&line[..n]);
            *(*buf).len.get() = len + n;
        } else {
            DROPPED_ROWS.fetch_add(1, Relaxed);
        }
        if FINAL.load(SeqCst) {
            flush_locked(buf);
        }
        (*buf).lock.unlock();
    }
}

fn thread_id() -> u32 {
    THREAD_ID.with(|id| {
        if id.get() == u32::MAX {
            id.set(NEXT_THREAD.fetch_add(1, Relaxed));
        }
        id.get()
    })
}

/// This thread's buffer, mapping or reusing one on first use; null after thread exit.
fn thread_buffer() -> *mut Buffer {
    let buf = THREAD_BUFFER.with(Cell::get);
    if !buf.is_null() || THREAD_EXITED.with(Cell::get) {
        return buf;
    }
    let buf = acquire_buffer();
    if buf.is_null() {
        return buf;
    }
    THREAD_BUFFER.with(|b| b.set(buf));
    if let Some(key) = thread_exit_key() {
        // SAFETY: `key` was created by pthread_key_create. If the key needs a second-level
        // block, pthread_setspecific calls calloc, which passes through (guard held).
        unsafe { libc::pthread_setspecific(key, buf.cast()) };
    }
    buf
}

/// A free buffer from `BUFFERS`, or a new one; null if mmap fails.
fn acquire_buffer() -> *mut Buffer {
    let mut buf = BUFFERS.load(Acquire);
    while !buf.is_null() {
        // SAFETY: buffers in `BUFFERS` are never unmapped; `next` is immutable once published.
        unsafe {
            if (*buf)
                .owned
                .compare_exchange(false, true, Acquire, Relaxed)
                .is_ok()
            {
                return buf;
            }
            buf = (*buf).next;
        }
    }
    // SAFETY: an anonymous private mapping with no address hint has no preconditions.
    let mem = unsafe {
        libc::mmap(
            ptr::null_mut(),
            BUFFER_BYTES,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if mem == libc::MAP_FAILED {
        return null_mut();
    }
    let buf = mem.cast::<Buffer>();
    // SAFETY: `mem` is a fresh zeroed mapping of BUFFER_BYTES >= size_of::<Buffer>(), page
    // aligned; all-zero bytes are a valid unlocked, unowned, empty Buffer. `next` is written
    // before the CAS publishes the buffer, and never again.
    unsafe {
        (*buf).owned.store(true, Relaxed);
        let mut head = BUFFERS.load(Relaxed);
        loop {
            (*buf).next = head;
            match BUFFERS.compare_exchange_weak(head, buf, Release, Relaxed) {
                Ok(_) => break,
                Err(h) => head = h,
            }
        }
    }
    buf
}

/// The pthread key whose destructor flushes a thread's buffer, created on first use.
fn thread_exit_key() -> Option<libc::pthread_key_t> {
    loop {
        match KEY_STATE.compare_exchange(KEY_NONE, KEY_CREATING, Acquire, Acquire) {
            Ok(_) => {
                let mut key: libc::pthread_key_t = 0;
                // SAFETY: `key` is writable; `on_thread_exit` has the destructor signature.
                let rc = unsafe { libc::pthread_key_create(&mut key, Some(on_thread_exit)) };
                if rc == 0 {
                    KEY.store(key, Relaxed);
                    KEY_STATE.store(KEY_READY, Release);
                    return Some(key);
                }
                KEY_STATE.store(KEY_FAILED, Release);
                return None;
            }
            Err(KEY_READY) => return Some(KEY.load(Relaxed)),
            Err(KEY_FAILED) => return None,
            // SAFETY: sched_yield has no preconditions.
            Err(_) => unsafe {
                libc::sched_yield();
            },
        }
    }
}

/// Thread exit: write the thread's rows and hand its buffer to the next new thread. Rows the
/// thread makes later (other TLS destructors, glibc's own teardown) are written directly.
extern "C" fn on_thread_exit(value: *mut c_void) {
    let buf = value.cast::<Buffer>();
    THREAD_BUFFER.with(|b| b.set(null_mut()));
    THREAD_EXITED.with(|e| e.set(true));
    // SAFETY: `value` is the Buffer this thread registered with pthread_setspecific.
    unsafe {
        (*buf).lock.lock();
        flush_locked(buf);
        let empty = *(*buf).len.get() == 0;
        (*buf).lock.unlock();
        // Rows buffered before the destination is known stay owned until `start` writes them.
        if empty {
            (*buf).owned.store(false, Release);
        }
    }
}

fn for_each_buffer(mut f: impl FnMut(*mut Buffer)) {
    let mut buf = BUFFERS.load(Acquire);
    while !buf.is_null() {
        f(buf);
        // SAFETY: buffers are never unmapped and `next` is immutable once published.
        buf = unsafe { (*buf).next };
    }
}

/// Writes `buf`'s rows if recording is on, and empties it if recording is on or off.
///
/// # Safety
/// `buf` is a live Buffer and the caller holds its lock.
unsafe fn flush_locked(buf: *mut Buffer) {
    // SAFETY: the caller's contract: `buf` is live and its lock, which guards `len` and
    // `rows`, is held; `getpid` has no preconditions.
    unsafe {
        let len = *(*buf).len.get();
        if len == 0 {
            return;
        }
        match STATE.load(Acquire) {
            ON => {}
            OFF => {
                *(*buf).len.get() = 0;
                return;
            }
            _ => return, // keep rows until the destination is known
        }
        // A child made by vfork/clone without fork handlers shares our memory: never write.
        if libc::getpid() == OWNER_PID.load(Acquire) {
            let rows = &*(*buf).rows.get();
            write_rows(&rows[..len]);
        }
        *(*buf).len.get() = 0;
    }
}

/// Appends whole rows to the file, completing partial writes before anyone else writes.
fn write_rows(mut bytes: &[u8]) {
    let fd = FD.load(Acquire);
    WRITE_LOCK.lock();
    while !bytes.is_empty() {
        // SAFETY: `bytes` is a valid initialised slice; a bad fd only yields an error.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n > 0 {
            bytes = &bytes[n as usize..];
        } else if n < 0 && errno() == libc::EINTR {
            continue;
        } else {
            let rows = bytes.iter().filter(|&&b| b == b'\n').count();
            DROPPED_ROWS.fetch_add(rows.max(1) as u64, Relaxed);
            break;
        }
    }
    WRITE_LOCK.unlock();
}

fn errno() -> i32 {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() }
}

/// Copies `path` into `out` with each `%p` replaced by `pid`, NUL-terminated. Returns the
/// length without the NUL, or None if it does not fit or contains a NUL.
fn expand_path(path: &[u8], pid: u32, out: &mut [u8; MAX_PATH_BYTES]) -> Option<usize> {
    let mut n = 0;
    let mut i = 0;
    while i < path.len() {
        if path[i] == 0 || n + 20 >= MAX_PATH_BYTES {
            return None;
        }
        if path[i] == b'%' && path.get(i + 1) == Some(&b'p') {
            n += write_dec(&mut out[n..], pid as u64);
            i += 2;
        } else {
            out[n] = path[i];
            n += 1;
            i += 1;
        }
    }
    out[n] = 0;
    (n > 0).then_some(n)
}

/// `thread,time_ns,op,ptr,size,align,old_ptr\n` into `out`; returns the row's length.
fn format_row(out: &mut [u8; MAX_ROW_BYTES], thread: u32, row: &Row) -> usize {
    let mut n = write_dec(out, thread as u64);
    out[n] = b',';
    n += 1;
    n += write_dec(&mut out[n..], row.time_ns);
    let op: &[u8] = match row.op {
        Op::Alloc => b",alloc,",
        Op::Free => b",free,",
        Op::Realloc => b",realloc,",
    };
    out[n..n + op.len()].copy_from_slice(op);
    n += op.len();
    n += write_hex(&mut out[n..], row.ptr as u64);
    match row.op {
        Op::Free => {
            out[n..n + 3].copy_from_slice(b",,,");
            n += 3;
        }
        Op::Alloc | Op::Realloc => {
            out[n] = b',';
            n += 1;
            n += write_dec(&mut out[n..], row.size as u64);
            out[n] = b',';
            n += 1;
            n += write_dec(&mut out[n..], row.align as u64);
            out[n] = b',';
            n += 1;
            if row.op == Op::Realloc {
                n += write_hex(&mut out[n..], row.old_ptr as u64);
            }
        }
    }
    out[n] = b'\n';
    n + 1
}

fn write_dec(out: &mut [u8], mut v: u64) -> usize {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let len = digits.len() - i;
    out[..len].copy_from_slice(&digits[i..]);
    len
}

fn write_hex(out: &mut [u8], v: u64) -> usize {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out[0] = b'0';
    out[1] = b'x';
    let nibbles = (16 - v.leading_zeros() as usize / 4).max(1);
    for k in 0..nibbles {
        out[2 + k] = HEX[((v >> (4 * (nibbles - 1 - k))) & 0xf) as usize];
    }
    2 + nibbles
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row_text(thread: u32, row: Row) -> String {
        let mut out = [0u8; MAX_ROW_BYTES];
        let n = format_row(&mut out, thread, &row);
        String::from_utf8(out[..n].to_vec()).unwrap()
    }

    #[test]
    fn rows_match_the_canonical_csv() {
        let alloc = Row {
            time_ns: 75632,
            op: Op::Alloc,
            ptr: 0x55bd942f6910,
            size: 5,
            align: 16,
            old_ptr: 0,
        };
        assert_eq!(row_text(0, alloc), "0,75632,alloc,0x55bd942f6910,5,16,\n");
        let free = Row {
            op: Op::Free,
            time_ns: 80861,
            ..alloc
        };
        assert_eq!(row_text(1, free), "1,80861,free,0x55bd942f6910,,,\n");
        let realloc = Row {
            op: Op::Realloc,
            ptr: 0x10,
            old_ptr: 0x55bd942f6910,
            size: 0,
            ..alloc
        };
        assert_eq!(
            row_text(7, realloc),
            "7,75632,realloc,0x10,0,16,0x55bd942f6910\n"
        );
        let widest = Row {
            time_ns: u64::MAX,
            op: Op::Realloc,
            ptr: usize::MAX,
            size: usize::MAX,
            align: usize::MAX,
            old_ptr: usize::MAX,
        };
        let text = row_text(u32::MAX, widest);
        assert!(text.len() <= MAX_ROW_BYTES, "{}", text.len());
        assert_eq!(text.split(',').count(), 7);
        assert_eq!(row_text(0, Row { ptr: 0, ..free }), "0,80861,free,0x0,,,\n");
    }

    #[test]
    fn path_expansion() {
        let mut out = [0u8; MAX_PATH_BYTES];
        let n = expand_path(b"/tmp/t.%p.csv", 4242, &mut out).unwrap();
        assert_eq!(&out[..n], b"/tmp/t.4242.csv");
        assert_eq!(out[n], 0);
        assert!(expand_path(b"a\0b", 1, &mut out).is_none());
        assert!(expand_path(b"", 1, &mut out).is_none());
        assert!(expand_path(&[b'x'; MAX_PATH_BYTES], 1, &mut out).is_none());
    }
}
