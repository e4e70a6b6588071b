//! Recording real programs' allocations as canonical CSV traces.
//!
//! - [`record_command`]: run a dynamically linked program with the LD_PRELOAD recorder
//!   (`libpoolbench_recorder.so`, crate `workloads/recorder`), then put the rows in global
//!   `time_ns` order and write the trace (`.gz` / `.zst` compress it), atomically.
//!   Finding or building that library is the `replay record` command's job (harness).
//! - [`RecordingAlloc`]: the same recorder as a Rust `GlobalAlloc` wrapper, for Rust programs
//!   (statically linked, or to record only Rust-side allocations).
//!
//! Both write through one sink (`recorder/src/sink.rs`, shared by `#[path]`): per-thread
//! buffers in `mmap`ed memory, flushed at thread exit and process exit, that never allocate
//! through the allocator being recorded.

use std::alloc::{GlobalAlloc, Layout};
use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

#[path = "../recorder/src/sink.rs"]
mod sink;

/// File name of the LD_PRELOAD recorder library.
pub const RECORDER_LIB: &str = "libpoolbench_recorder.so";
/// Environment variable the recorder writes its rows to (`%p` becomes the pid).
pub const TRACE_OUT_ENV: &str = "POOLBENCH_TRACE_OUT";
/// Environment variable restricting recording to processes whose parent has this pid.
pub const TRACE_PARENT_ENV: &str = "POOLBENCH_TRACE_PPID";
/// Canonical CSV header of recorded traces (7 columns; `old_ptr` set on realloc rows only).
pub const RECORDED_HEADER: &str = "thread,time_ns,op,ptr,size,align,old_ptr";

const _: () = assert!(sink::HEADER.len() == RECORDED_HEADER.len() + 1);

/// zstd level for `.zst` output: near the best ratio at tens of MB/s.
const ZSTD_LEVEL: i32 = 9;

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("no command to record")]
    NoCommand,
    #[error(
        "the recorder path {} contains a space or ':', which LD_PRELOAD cannot express",
        path.display()
    )]
    PreloadPath { path: PathBuf },
    #[error("cannot start `{program}`: {source}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "`{program}` ({status}) wrote no trace: LD_PRELOAD has no effect on a statically \
         linked or setuid program (for Rust programs use workloads::record::RecordingAlloc)"
    )]
    NoTrace { program: String, status: ExitStatus },
    #[error("{}:{line}: malformed recorder row: {reason}", path.display())]
    Malformed {
        path: PathBuf,
        line: u64,
        reason: String,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> RecordError + '_ {
    move |source| RecordError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What one recording produced.
#[derive(Debug, Clone)]
pub struct RecordSummary {
    /// The trace written (canonical CSV, rows in `time_ns` order).
    pub out: PathBuf,
    /// The recorder library used.
    pub preload: PathBuf,
    pub events: u64,
    pub allocs: u64,
    pub frees: u64,
    pub reallocs: u64,
    /// Distinct recorded threads.
    pub threads: u64,
    /// Size of `out` in bytes (compressed, if it is).
    pub file_bytes: u64,
    /// A last row cut short (the program was killed while the recorder wrote it): dropped.
    pub partial_rows: u64,
    pub status: ExitStatus,
}

impl RecordSummary {
    /// The program's exit code as a shell reports it: its code, or 128 + the signal.
    pub fn exit_code(&self) -> i32 {
        exit_code(self.status)
    }
}

/// `status` as a shell exit code: the code, or 128 + the terminating signal.
pub fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => 1,
    }
}

/// Runs `cmd[0]` with arguments `cmd[1..]` under the LD_PRELOAD recorder `preload`
/// (`libpoolbench_recorder.so`), waits for it, and
/// writes its allocation trace to `out` (canonical CSV in `time_ns` order; `.gz` / `.zst`
/// compress it) through a temporary file renamed into place. The program inherits stdio;
/// Ctrl-C goes to it, and the trace of what ran is still written. Only the program itself
/// (and whatever it `exec`s) is recorded, not the processes it starts.
pub fn record_command(
    out: &Path,
    cmd: &[OsString],
    preload: &Path,
) -> Result<RecordSummary, RecordError> {
    let (program, args) = cmd.split_first().ok_or(RecordError::NoCommand)?;
    let preload_str = preload.to_string_lossy();
    if preload_str.contains([' ', ':']) {
        return Err(RecordError::PreloadPath {
            path: preload.to_path_buf(),
        });
    }
    let file_name = out
        .file_name()
        .ok_or_else(|| io_err(out)(io::Error::other("the output path names no file")))?;
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let temp_name = |suffix: &str| {
        let mut name = OsString::from(".");
        name.push(file_name);
        name.push(format!(".{}.{suffix}", std::process::id()));
        dir.join(name)
    };
    let raw = temp_name("recording.csv");
    let _ = fs::remove_file(&raw);

    let mut ld_preload = OsString::from(preload_str.as_ref());
    if let Some(existing) = std::env::var_os("LD_PRELOAD").filter(|v| !v.is_empty()) {
        ld_preload.push(":");
        ld_preload.push(existing);
    }
    let program_name = program.to_string_lossy().into_owned();
    let mut child = Command::new(program)
        .args(args)
        .env("LD_PRELOAD", &ld_preload)
        .env(TRACE_OUT_ENV, &raw)
        .env(TRACE_PARENT_ENV, std::process::id().to_string())
        .spawn()
        .map_err(|source| RecordError::Spawn {
            program: program_name.clone(),
            source,
        })?;
    let status = {
        let _ignore = IgnoreInterrupts::new();
        child.wait()
    }
    .map_err(|source| RecordError::Spawn {
        program: program_name.clone(),
        source,
    })?;

    let bytes = match fs::read(&raw) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(RecordError::NoTrace {
                program: program_name,
                status,
            })
        }
        Err(e) => return Err(io_err(&raw)(e)),
    };
    let result = write_ordered(&bytes, &raw, out);
    let _ = fs::remove_file(&raw);
    let counts = result?;
    let file_bytes = fs::metadata(out).map_err(io_err(out))?.len();
    Ok(RecordSummary {
        out: out.to_path_buf(),
        preload: preload.to_path_buf(),
        events: counts.events,
        allocs: counts.allocs,
        frees: counts.frees,
        reallocs: counts.reallocs,
        threads: counts.threads,
        file_bytes,
        partial_rows: counts.partial_rows,
        status,
    })
}

/// While alive, SIGINT and SIGQUIT are ignored by this process (they still reach the child,
/// which shares the terminal's process group), so a recording can be cut short with Ctrl-C
/// and its trace is still written.
struct IgnoreInterrupts {
    previous: [libc::sighandler_t; 2],
}

impl IgnoreInterrupts {
    fn new() -> Self {
        // SAFETY: installing SIG_IGN for two standard signals; the previous dispositions are
        // restored in Drop.
        let previous = unsafe {
            [
                libc::signal(libc::SIGINT, libc::SIG_IGN),
                libc::signal(libc::SIGQUIT, libc::SIG_IGN),
            ]
        };
        IgnoreInterrupts { previous }
    }
}

impl Drop for IgnoreInterrupts {
    fn drop(&mut self) {
        // SAFETY: restoring the dispositions `signal` returned in `new`.
        unsafe {
            libc::signal(libc::SIGINT, self.previous[0]);
            libc::signal(libc::SIGQUIT, self.previous[1]);
        }
    }
}

#[derive(Debug, Default, PartialEq, Eq)]
struct RowCounts {
    events: u64,
    allocs: u64,
    frees: u64,
    reallocs: u64,
    threads: u64,
    partial_rows: u64,
}

/// A recorded row: its `time_ns` and its byte range (newline included) in the raw file.
struct RawRow {
    time_ns: u64,
    start: usize,
    end: usize,
}

/// Parses the recorder's raw output (`raw_path` names it in errors) and returns its rows in
/// global order: a stable sort by `time_ns`, so each thread keeps its program order.
fn order_rows(bytes: &[u8], raw_path: &Path) -> Result<(Vec<RawRow>, RowCounts), RecordError> {
    let malformed = |line: u64, reason: String| RecordError::Malformed {
        path: raw_path.to_path_buf(),
        line,
        reason,
    };
    if !bytes.starts_with(sink::HEADER) {
        return Err(malformed(
            1,
            format!("expected the header '{RECORDED_HEADER}'"),
        ));
    }
    let mut counts = RowCounts::default();
    let mut threads = BTreeSet::new();
    let mut rows = Vec::with_capacity(bytes.len() / 40);
    let mut start = sink::HEADER.len();
    let mut line = 1u64;
    while start < bytes.len() {
        line += 1;
        let Some(len) = bytes[start..].iter().position(|&b| b == b'\n') else {
            counts.partial_rows += 1;
            break;
        };
        let end = start + len + 1;
        let text = &bytes[start..end - 1];
        let mut fields = text.split(|&b| b == b',');
        let thread = fields.next().and_then(parse_u64);
        let time_ns = fields.next().and_then(parse_u64);
        let op = fields.next();
        let field_count = 3 + fields.count();
        let (Some(thread), Some(time_ns), Some(op), 7) = (thread, time_ns, op, field_count) else {
            return Err(malformed(
                line,
                format!("'{}'", String::from_utf8_lossy(text)),
            ));
        };
        match op {
            b"alloc" => counts.allocs += 1,
            b"free" => counts.frees += 1,
            b"realloc" => counts.reallocs += 1,
            _ => {
                return Err(malformed(
                    line,
                    format!("unknown op '{}'", String::from_utf8_lossy(op)),
                ))
            }
        }
        threads.insert(thread);
        rows.push(RawRow {
            time_ns,
            start,
            end,
        });
        start = end;
    }
    rows.sort_by_key(|r| r.time_ns);
    counts.events = rows.len() as u64;
    counts.threads = threads.len() as u64;
    Ok((rows, counts))
}

fn parse_u64(s: &[u8]) -> Option<u64> {
    std::str::from_utf8(s).ok()?.parse().ok()
}

/// Writes the rows of `bytes` in global order to `out` (atomically), compressed as `out`'s
/// extension asks.
fn write_ordered(bytes: &[u8], raw_path: &Path, out: &Path) -> Result<RowCounts, RecordError> {
    let (rows, counts) = order_rows(bytes, raw_path)?;
    atomic_file::write_atomically(out, |file| -> io::Result<()> {
        let mut w: Box<dyn Write> = match out.extension().and_then(OsStr::to_str) {
            Some("gz") => Box::new(flate2::write::GzEncoder::new(
                file,
                flate2::Compression::default(),
            )),
            Some("zst") => Box::new(zstd::Encoder::new(file, ZSTD_LEVEL)?.auto_finish()),
            _ => Box::new(file),
        };
        w.write_all(sink::HEADER)?;
        for r in &rows {
            w.write_all(&bytes[r.start..r.end])?;
        }
        w.flush()?;
        drop(w); // finishes the compressed stream
        Ok(())
    })
    .map_err(io_err(out))?;
    Ok(counts)
}

/// Where a [`RecordingAlloc`] writes.
#[derive(Debug, Clone, Copy)]
enum Destination {
    Path(&'static str),
    Env(&'static str),
}

/// A `GlobalAlloc` wrapper that records every allocation of a Rust program as canonical CSV,
/// exactly as the LD_PRELOAD recorder does (same columns, per-thread buffers, flushed at
/// thread exit and at `exit`). Its own buffers never allocate (they are `mmap`ed), and
/// allocations made while it records pass through unrecorded, so it never recurses.
///
/// ```no_run
/// use std::alloc::System;
/// use workloads::record::RecordingAlloc;
///
/// #[global_allocator]
/// static GLOBAL: RecordingAlloc<System> = RecordingAlloc::from_env(System, "MY_TRACE");
/// ```
///
/// One per process: the first instance to allocate decides the destination. Alignment is
/// the `Layout`'s; `size` of a realloc row is the new size. Rows made before `main` are kept.
/// While recording, `realloc` is alloc + copy + dealloc (see its note), never in place.
/// A process that never returns from `main` normally (or calls `_exit`) should call
/// [`RecordingAlloc::flush`] first.
pub struct RecordingAlloc<A> {
    inner: A,
    destination: Destination,
}

impl<A> RecordingAlloc<A> {
    /// Records to `path` (`%p` becomes the pid), created or truncated at the first allocation.
    pub const fn with_path(inner: A, path: &'static str) -> Self {
        RecordingAlloc {
            inner,
            destination: Destination::Path(path),
        }
    }

    /// Records to the file named by environment variable `var` at the first allocation;
    /// passes everything through unrecorded if it is unset or empty.
    pub const fn from_env(inner: A, var: &'static str) -> Self {
        RecordingAlloc {
            inner,
            destination: Destination::Env(var),
        }
    }

    pub fn inner(&self) -> &A {
        &self.inner
    }

    /// Writes every thread's buffered rows now.
    pub fn flush(&self) {
        let _guard = sink::Guard::enter();
        sink::flush_all();
    }

    /// Whether rows are being kept; decides the destination on first call.
    #[inline]
    fn recording(&self) -> bool {
        if sink::undecided() {
            self.decide();
        }
        sink::active()
    }

    #[cold]
    fn decide(&self) {
        let started = match self.destination {
            Destination::Path(path) => sink::start(path.as_bytes()),
            Destination::Env(var) => match env_bytes(var) {
                Some(path) if !path.is_empty() => sink::start(path),
                _ => {
                    sink::disable();
                    false
                }
            },
        };
        if started {
            // SAFETY: `flush_at_exit` is an `extern "C" fn()` in this (never unloaded) binary.
            unsafe { libc::atexit(flush_at_exit) };
        }
    }
}

extern "C" fn flush_at_exit() {
    let _guard = sink::Guard::enter();
    sink::finish();
}

/// The value of environment variable `name` without allocating (None if the name is longer
/// than 255 bytes or contains a NUL).
fn env_bytes(name: &str) -> Option<&'static [u8]> {
    let mut cname = [0u8; 256];
    if name.len() >= cname.len() || name.as_bytes().contains(&0) {
        return None;
    }
    cname[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: `cname` is NUL-terminated; getenv returns NULL or a NUL-terminated string in
    // the environment, which nothing here modifies.
    unsafe {
        let v = libc::getenv(cname.as_ptr().cast());
        (!v.is_null()).then(|| std::ffi::CStr::from_ptr(v).to_bytes())
    }
}

// SAFETY: every method forwards to `inner` with the caller's arguments unchanged and returns
// its result; recording only reads the pointers and sizes.
unsafe impl<A: GlobalAlloc> GlobalAlloc for RecordingAlloc<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(_guard) = sink::Guard::enter() else {
            // SAFETY: forwarded contract.
            return unsafe { self.inner.alloc(layout) };
        };
        // SAFETY: forwarded contract.
        let p = unsafe { self.inner.alloc(layout) };
        if !p.is_null() && self.recording() {
            record_alloc(p, layout.size(), layout.align());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let Some(_guard) = sink::Guard::enter() else {
            // SAFETY: forwarded contract.
            return unsafe { self.inner.alloc_zeroed(layout) };
        };
        // SAFETY: forwarded contract.
        let p = unsafe { self.inner.alloc_zeroed(layout) };
        if !p.is_null() && self.recording() {
            record_alloc(p, layout.size(), layout.align());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(_guard) = sink::Guard::enter() {
            if self.recording() {
                // Stamped before the block is released: another thread that gets it back
                // stamps its allocation later.
                sink::record(&sink::Row {
                    time_ns: sink::now_ns(),
                    op: sink::Op::Free,
                    ptr: ptr as usize,
                    size: 0,
                    align: 0,
                    old_ptr: 0,
                });
            }
        }
        // SAFETY: forwarded contract.
        unsafe { self.inner.dealloc(ptr, layout) }
    }

    /// Performed as alloc, copy, stamp, dealloc (never the inner realloc): an inner realloc
    /// that moves the block releases the old one inside the call, where another thread could
    /// get it back before the row is stamped.
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Some(_guard) = sink::Guard::enter() else {
            // SAFETY: forwarded contract.
            return unsafe { self.inner.realloc(ptr, layout, new_size) };
        };
        if !self.recording() {
            // SAFETY: forwarded contract.
            return unsafe { self.inner.realloc(ptr, layout, new_size) };
        }
        // SAFETY: the caller guarantees `new_size`, rounded up to `layout.align()`, does not
        // overflow isize, which is what Layout requires.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: `new_layout` has a non-zero size (GlobalAlloc::realloc contract).
        let p = unsafe { self.inner.alloc(new_layout) };
        if p.is_null() {
            return p; // `ptr` stays valid
        }
        // SAFETY: `ptr` holds `layout.size()` bytes and `p` holds `new_size`; they are
        // distinct live blocks.
        unsafe { std::ptr::copy_nonoverlapping(ptr, p, layout.size().min(new_size)) };
        sink::record(&sink::Row {
            time_ns: sink::now_ns(),
            op: sink::Op::Realloc,
            ptr: p as usize,
            size: new_size,
            align: layout.align(),
            old_ptr: ptr as usize,
        });
        // SAFETY: `ptr` was allocated by `inner` with `layout` (caller's contract).
        unsafe { self.inner.dealloc(ptr, layout) };
        p
    }
}

fn record_alloc(p: *mut u8, size: usize, align: usize) {
    sink::record(&sink::Row {
        time_ns: sink::now_ns(),
        op: sink::Op::Alloc,
        ptr: p as usize,
        size,
        align,
        old_ptr: 0,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAW: &str = "thread,time_ns,op,ptr,size,align,old_ptr\n\
                       1,300,free,0x10,,,\n\
                       0,100,alloc,0x10,8,16,\n\
                       0,300,alloc,0x20,8,16,\n\
                       1,200,realloc,0x30,9,16,0x40\n\
                       0,50";

    #[test]
    fn rows_are_ordered_by_time_stably() {
        let (rows, counts) = order_rows(RAW.as_bytes(), Path::new("raw.csv")).unwrap();
        let times: Vec<u64> = rows.iter().map(|r| r.time_ns).collect();
        assert_eq!(times, [100, 200, 300, 300]);
        // Equal times keep file order: the free written first stays first.
        let third = &RAW.as_bytes()[rows[2].start..rows[2].end];
        assert_eq!(third, b"1,300,free,0x10,,,\n");
        assert_eq!(
            counts,
            RowCounts {
                events: 4,
                allocs: 2,
                frees: 1,
                reallocs: 1,
                threads: 2,
                partial_rows: 1,
            }
        );
    }

    #[test]
    fn malformed_rows_name_the_line() {
        let bad =
            "thread,time_ns,op,ptr,size,align,old_ptr\n0,1,alloc,0x1,1,16,\n0,x,free,0x1,,,\n";
        let err = order_rows(bad.as_bytes(), Path::new("raw.csv"))
            .err()
            .unwrap()
            .to_string();
        assert!(err.starts_with("raw.csv:3: malformed"), "{err}");
        let op = "thread,time_ns,op,ptr,size,align,old_ptr\n0,1,grow,0x1,1,16,\n";
        let err = order_rows(op.as_bytes(), Path::new("r")).err().unwrap();
        assert!(err.to_string().contains("unknown op 'grow'"), "{err}");
        assert!(order_rows(b"a,b\n", Path::new("r")).is_err());
    }

    #[test]
    fn exit_codes_follow_the_shell() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGKILL)), 128 + 9);
    }
}
