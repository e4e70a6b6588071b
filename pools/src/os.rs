//! `OsChunks`: chunks straight from the kernel with `mmap`, the upstream of every CPU pool.
//!
//! Nothing here touches the Rust global heap, so a pool built on it can itself serve as the
//! global allocator (`adapters::PoolGlobalAlloc`).
//!
//! Alignment above the page size is asked of the kernel first as an address hint, an
//! aligned address in an area from 2 TiB that moves up with each mapping (x86-64 Linux;
//! the kernel takes a hint where the range is free, and never maps over anything without
//! `MAP_FIXED`): one `mmap`. Where it is not taken, over-mapping `len + align - page`
//! bytes and unmapping the misaligned head and the unused tail does it. Either way the
//! chunk handed out is exactly the aligned range and `free_chunk` can `munmap` it as one
//! piece.
//!
//! Chunks given back by a pool being dropped or reset (`retire_chunk`) are kept, zeroed, in a
//! process-wide recycle list of at most [`recycle_limit_bytes`] (32 MiB by default) and
//! handed to the next request of the same length and alignment: a new pool in a process
//! that dropped one skips the `mmap`, the alignment trim and, above all, the page faults
//! of fresh memory (one per 4 KiB page on first touch; glibc and mimalloc reuse the
//! pages they have too). Zeroed at release, so a recycled chunk reads as zeros like a
//! fresh mapping (the chunk contract every pool layer relies on) and the cost is paid
//! when a pool goes away, not while one serves requests. Normal pages only.

use crate::alloc::{Chunk, ChunkSource};
use crate::config::HugePages;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;

/// Size of an explicit (hugetlbfs) huge page on the platforms we map them on (x86-64 and
/// aarch64 with 4 KiB base pages). `MAP_HUGETLB` without a size flag uses the default huge
/// page size, which is this on every mainstream kernel configuration.
pub const HUGE_PAGE_BYTES: usize = 2 * 1024 * 1024;

/// Process-wide count of `MAP_HUGETLB` requests that fell back to normal pages.
static HUGETLB_FALLBACKS: AtomicU64 = AtomicU64::new(0);

/// Process-wide count of `MAP_HUGETLB` requests that fell back to normal pages (no huge
/// pages reserved in `/proc/sys/vm/nr_hugepages`, or an alignment above the huge page).
pub fn hugetlb_fallback_count() -> u64 {
    HUGETLB_FALLBACKS.load(Relaxed)
}

/// The base page size in bytes (`sysconf(_SC_PAGESIZE)`).
pub fn page_bytes() -> usize {
    // SAFETY: sysconf has no preconditions; it only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if page > 0 {
        page as usize
    } else {
        4096
    }
}

/// Chunks kept for reuse (see the module doc). A fixed array: this code may run inside
/// the global allocator and must not allocate.
struct Recycled {
    chunks: [Option<Chunk>; RECYCLE_SLOTS],
    bytes: usize,
}

const RECYCLE_SLOTS: usize = 64;
/// Largest chunk kept for reuse.
const RECYCLE_MAX_CHUNK_BYTES: usize = 8 * 1024 * 1024;

static RECYCLED: Mutex<Recycled> = Mutex::new(Recycled {
    chunks: [None; RECYCLE_SLOTS],
    bytes: 0,
});
static RECYCLE_LIMIT_BYTES: AtomicUsize = AtomicUsize::new(32 * 1024 * 1024);

/// Bytes of freed chunks the process keeps for reuse by later pools (default 32 MiB).
pub fn recycle_limit_bytes() -> usize {
    RECYCLE_LIMIT_BYTES.load(Relaxed)
}

/// Set [`recycle_limit_bytes`]; 0 turns recycling off. Chunks already kept beyond the new
/// limit are unmapped now.
pub fn set_recycle_limit_bytes(bytes: usize) {
    RECYCLE_LIMIT_BYTES.store(bytes, Relaxed);
    let mut recycled = lock_recycled();
    for slot in 0..RECYCLE_SLOTS {
        if recycled.bytes <= bytes {
            break;
        }
        if let Some(chunk) = recycled.chunks[slot].take() {
            recycled.bytes -= chunk.len;
            // SAFETY: a recycled chunk is one of our mappings that nobody uses.
            unsafe { libc::munmap(chunk.ptr.as_ptr().cast(), chunk.len) };
        }
    }
}

/// Bytes kept for reuse now.
pub fn recycled_bytes() -> usize {
    lock_recycled().bytes
}

fn lock_recycled() -> std::sync::MutexGuard<'static, Recycled> {
    // Every critical section leaves the list consistent: a panic cannot poison it halfway.
    RECYCLED.lock().unwrap_or_else(|e| e.into_inner())
}

/// A recycled chunk of exactly `len` bytes aligned to `align`, if one is kept.
fn take_recycled(len: usize, align: usize) -> Option<Chunk> {
    let mut recycled = lock_recycled();
    if recycled.bytes == 0 {
        return None;
    }
    let slot = recycled.chunks.iter().position(|c| {
        c.is_some_and(|c| c.len == len && (c.ptr.as_ptr() as usize).is_multiple_of(align))
    })?;
    let chunk = recycled.chunks[slot].take()?;
    recycled.bytes -= chunk.len;
    Some(chunk)
}

/// Keep `chunk` (zeroed) for reuse if it fits the list; `false`: the caller unmaps it.
///
/// # Safety
/// `chunk` is one of our normal-page mappings, whole, that nobody uses.
unsafe fn recycle(chunk: Chunk) -> bool {
    let limit = recycle_limit_bytes();
    if chunk.len > RECYCLE_MAX_CHUNK_BYTES || chunk.len > limit {
        return false;
    }
    {
        let recycled = lock_recycled();
        if recycled.bytes + chunk.len > limit || recycled.chunks.iter().all(Option::is_some) {
            return false;
        }
    }
    // Zeroed outside the lock: a recycled chunk must read as a fresh mapping does.
    // SAFETY: the chunk is ours and unused (contract), `len` bytes long.
    unsafe { zero_resident(chunk) };
    let mut recycled = lock_recycled();
    let free_slot = recycled.chunks.iter().position(Option::is_none);
    match free_slot {
        Some(slot) if recycled.bytes + chunk.len <= limit => {
            recycled.chunks[slot] = Some(chunk);
            recycled.bytes += chunk.len;
            true
        }
        // Another thread filled the list meanwhile.
        _ => false,
    }
}

/// Zero the pages of `chunk` that are resident; the others read as zeros already (never
/// touched, or dropped by `decommit`), and writing them would fault them in.
///
/// # Safety
/// `chunk` is one of our normal-page mappings, whole, that nobody uses, at most
/// `RECYCLE_MAX_CHUNK_BYTES` long.
unsafe fn zero_resident(chunk: Chunk) {
    let page = page_bytes();
    let pages = chunk.len / page;
    // One byte per page; a stack buffer (no allocation here), 2 KiB for 8 MiB of 4 KiB
    // pages.
    let mut resident = [0u8; RECYCLE_MAX_CHUNK_BYTES / 4096];
    let known = pages <= resident.len()
        && chunk.len.is_multiple_of(page)
        // SAFETY: the range is one of our mappings (contract), page-aligned, and the
        // vector has a byte per page.
        && unsafe { libc::mincore(chunk.ptr.as_ptr().cast(), chunk.len, resident.as_mut_ptr()) }
            == 0;
    if !known {
        // SAFETY: the chunk is ours and unused (contract).
        unsafe { chunk.ptr.as_ptr().write_bytes(0, chunk.len) };
        return;
    }
    for (i, state) in resident[..pages].iter().enumerate() {
        if state & 1 != 0 {
            // SAFETY: page `i` lies inside the chunk.
            unsafe { chunk.ptr.as_ptr().add(i * page).write_bytes(0, page) };
        }
    }
}

/// A `ChunkSource` over anonymous private mappings.
#[derive(Debug)]
pub struct OsChunks {
    huge_pages: HugePages,
    /// Base page size; every chunk length and address is a multiple of it.
    page_bytes: usize,
    /// `MAP_HUGETLB` attempts of this source that fell back to normal pages.
    hugetlb_fallbacks: u64,
}

impl OsChunks {
    pub fn new(huge_pages: HugePages) -> Self {
        OsChunks {
            huge_pages,
            page_bytes: page_bytes(),
            hugetlb_fallbacks: 0,
        }
    }

    /// `MAP_HUGETLB` attempts of this source that fell back to normal pages.
    pub fn hugetlb_fallbacks(&self) -> u64 {
        self.hugetlb_fallbacks
    }

    /// Map `len` bytes (a multiple of the page size) aligned to `align` (a power of two, at
    /// least a page) with normal pages: at an aligned address hint first (one `mmap`
    /// where the kernel takes the hint, as it does where the range is free), else by
    /// over-mapping and trimming (an `mmap` and up to two `munmap`s).
    fn map_aligned(&self, len: usize, align: usize) -> Option<NonNull<u8>> {
        if align > self.page_bytes {
            if let Some(ptr) = map_at_hint(len, align) {
                return Some(ptr);
            }
        }
        let extra = align - self.page_bytes;
        let map_len = len.checked_add(extra)?;
        let raw = map_anonymous(map_len, 0)?;
        let start = raw.as_ptr() as usize;
        let aligned = (start + align - 1) & !(align - 1);
        let head = aligned - start;
        let tail = map_len - head - len;
        // SAFETY: [start, start + head) and [aligned + len, start + map_len) lie inside the
        // mapping just created and nobody else knows about them; both are page multiples
        // because `start`, `aligned`, `len` and `map_len` are.
        unsafe {
            if head > 0 {
                libc::munmap(start as *mut libc::c_void, head);
            }
            if tail > 0 {
                libc::munmap((aligned + len) as *mut libc::c_void, tail);
            }
        }
        NonNull::new(aligned as *mut u8)
    }

    #[cfg(target_os = "linux")]
    fn map_hugetlb(&mut self, len: usize, align: usize) -> Option<Chunk> {
        let huge_len = len.checked_add(HUGE_PAGE_BYTES - 1)? & !(HUGE_PAGE_BYTES - 1);
        // Huge page mappings are aligned to the huge page; beyond that we would have to
        // over-map reserved huge pages, which are scarce, so fall back instead.
        if align <= HUGE_PAGE_BYTES {
            if let Some(ptr) = map_anonymous(huge_len, libc::MAP_HUGETLB) {
                return Some(Chunk { ptr, len: huge_len });
            }
        }
        self.hugetlb_fallbacks += 1;
        HUGETLB_FALLBACKS.fetch_add(1, Relaxed);
        None
    }

    #[cfg(not(target_os = "linux"))]
    fn map_hugetlb(&mut self, _len: usize, _align: usize) -> Option<Chunk> {
        self.hugetlb_fallbacks += 1;
        HUGETLB_FALLBACKS.fetch_add(1, Relaxed);
        None
    }
}

impl Default for OsChunks {
    fn default() -> Self {
        OsChunks::new(HugePages::Off)
    }
}

/// Where aligned mappings are asked for first (`map_at_hint`): an area of the address
/// space that programs seldom use (from 2 TiB, as mimalloc's hints), at an offset drawn
/// from this process's randomised layout so that the pools' addresses stay unpredictable,
/// moving up by each mapping's size and wrapping within `HINT_AREA_BYTES`.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod hint {
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

    const HINT_BASE: usize = 2 << 40;
    const HINT_AREA_BYTES: usize = 4 << 40;
    /// Offset in the area of the next hint (`usize::MAX`: not drawn yet).
    static NEXT: AtomicUsize = AtomicUsize::new(usize::MAX);

    /// An address aligned to `align` for a mapping of `len` bytes, inside the area.
    pub(super) fn next(len: usize, align: usize) -> Option<usize> {
        let span = len.checked_next_multiple_of(align)?;
        if span > HINT_AREA_BYTES / 4 || align > HINT_AREA_BYTES / 4 {
            return None;
        }
        let mut current = NEXT.load(Relaxed);
        loop {
            let offset = if current == usize::MAX {
                // The address of a static moves with the binary's load address (ASLR):
                // 16 bits of it pick the start, in steps of 16 GiB.
                let seed = std::ptr::addr_of!(NEXT) as usize >> 12;
                ((seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 48) << 34) % (HINT_AREA_BYTES / 2)
            } else {
                current
            };
            let at = offset.next_multiple_of(align);
            let (at, end) = if at + span > HINT_AREA_BYTES {
                (0, span)
            } else {
                (at, at + span)
            };
            match NEXT.compare_exchange_weak(current, end, Relaxed, Relaxed) {
                Ok(_) => return Some(HINT_BASE + at),
                Err(now) => current = now,
            }
        }
    }
}

/// `len` bytes aligned to `align` in one `mmap`, at `hint::next`'s address if the kernel
/// takes it; `None` (nothing left mapped) where it does not.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn map_at_hint(len: usize, align: usize) -> Option<NonNull<u8>> {
    let hint = hint::next(len, align)?;
    let ptr = map_anonymous_at(hint, len, 0)?;
    if ptr.as_ptr() as usize & (align - 1) == 0 {
        return Some(ptr);
    }
    // SAFETY: the mapping was just made by this call and nobody else knows it.
    unsafe { libc::munmap(ptr.as_ptr().cast(), len) };
    None
}

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
fn map_at_hint(_len: usize, _align: usize) -> Option<NonNull<u8>> {
    None
}

/// `mmap(NULL, len, RW, PRIVATE | ANONYMOUS | extra_flags)`, `None` on failure.
fn map_anonymous(len: usize, extra_flags: libc::c_int) -> Option<NonNull<u8>> {
    map_anonymous_at(0, len, extra_flags)
}

/// `map_anonymous` at address `hint` if the kernel takes it (without `MAP_FIXED`: never
/// over an existing mapping), else where the kernel chooses.
fn map_anonymous_at(hint: usize, len: usize, extra_flags: libc::c_int) -> Option<NonNull<u8>> {
    // SAFETY: an anonymous mapping without MAP_FIXED goes where nothing is mapped, so it
    // cannot alias anything we own; the result is checked against MAP_FAILED before use.
    let raw = unsafe {
        libc::mmap(
            hint as *mut libc::c_void,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | extra_flags,
            -1,
            0,
        )
    };
    if raw == libc::MAP_FAILED {
        None
    } else {
        NonNull::new(raw.cast::<u8>())
    }
}

impl ChunkSource for OsChunks {
    fn alloc_chunk(&mut self, min_bytes: usize, align: usize) -> Option<Chunk> {
        let page = self.page_bytes;
        let len = min_bytes.max(1).checked_add(page - 1)? & !(page - 1);
        let align = align.max(page);
        if !align.is_power_of_two() {
            return None;
        }
        if self.huge_pages == HugePages::Explicit {
            if let Some(chunk) = self.map_hugetlb(len, align) {
                return Some(chunk);
            }
        }
        if self.huge_pages == HugePages::Off {
            if let Some(chunk) = take_recycled(len, align) {
                return Some(chunk);
            }
        }
        let ptr = self.map_aligned(len, align)?;
        #[cfg(target_os = "linux")]
        if self.huge_pages == HugePages::Madvise {
            // SAFETY: [ptr, ptr + len) is a mapping we just created; madvise only changes
            // how the kernel backs it. Failure (THP disabled) is harmless and ignored.
            unsafe {
                libc::madvise(ptr.as_ptr().cast(), len, libc::MADV_HUGEPAGE);
            }
        }
        Some(Chunk { ptr, len })
    }

    unsafe fn free_chunk(&mut self, chunk: Chunk) {
        // SAFETY: by the caller's contract the chunk is one we mapped, unchanged (so its
        // whole range is one mapping, or the huge-page mapping of exactly `len`), and unused.
        unsafe {
            libc::munmap(chunk.ptr.as_ptr().cast(), chunk.len);
        }
    }

    unsafe fn retire_chunk(&mut self, chunk: Chunk) {
        // SAFETY: by the caller's contract the chunk is one we mapped, unchanged, and
        // unused; with huge pages off it is a normal-page mapping.
        if self.huge_pages == HugePages::Off && unsafe { recycle(chunk) } {
            return;
        }
        // SAFETY: as above.
        unsafe { self.free_chunk(chunk) };
    }

    unsafe fn decommit(&mut self, addr: usize, len: usize) -> bool {
        if self.huge_pages != HugePages::Off
            || !addr.is_multiple_of(self.page_bytes)
            || !len.is_multiple_of(self.page_bytes)
        {
            // Huge pages are backed whole; dropping part of one would split it.
            return false;
        }
        // SAFETY: the range is inside one of our private anonymous mappings and unused
        // (caller); MADV_DONTNEED only drops its pages, which read as zeros afterwards.
        unsafe { libc::madvise(addr as *mut libc::c_void, len, libc::MADV_DONTNEED) == 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_chunks_are_aligned_writable_and_disjoint() {
        let mut os = OsChunks::new(HugePages::Off);
        let mut chunks = Vec::new();
        for (i, align) in [1usize << 16, 1 << 20, 4 << 20, 32 << 20]
            .iter()
            .cycle()
            .take(24)
            .enumerate()
        {
            let len = (i + 1) * 3 * page_bytes();
            let chunk = os.alloc_chunk(len, *align).unwrap();
            assert_eq!(chunk.addr() % align, 0, "{len} bytes at {align}");
            assert!(chunk.len >= len);
            // SAFETY: a fresh chunk of ours: its first and last bytes are writable.
            unsafe {
                chunk.ptr.as_ptr().write(1);
                chunk.ptr.as_ptr().add(chunk.len - 1).write(1);
            }
            chunks.push(chunk);
        }
        for (i, a) in chunks.iter().enumerate() {
            for b in &chunks[i + 1..] {
                assert!(a.addr() + a.len <= b.addr() || b.addr() + b.len <= a.addr());
            }
        }
        for chunk in chunks {
            // SAFETY: ours, unused from now.
            unsafe { os.free_chunk(chunk) };
        }
    }

    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    #[test]
    fn hints_are_aligned_successive_and_inside_their_area() {
        let mut last_end = 0;
        for align in [1usize << 16, 4 << 20, 1 << 30] {
            let at = hint::next(5 << 20, align).unwrap();
            assert_eq!(at % align, 0);
            assert!(at >= 2 << 40 && at + (5 << 20) <= 6 << 40);
            // Other tests map at hints too: later hints only move up (or wrap to the base).
            assert!(
                at >= last_end || at == 2 << 40,
                "{at:#x} after {last_end:#x}"
            );
            last_end = at + (5 << 20);
        }
        assert_eq!(
            hint::next(2 << 40, 4096),
            None,
            "more than a quarter of the area"
        );
    }

    #[test]
    fn recycled_chunks_read_as_zeros() {
        let mut os = OsChunks::new(HugePages::Off);
        let len = 3 * page_bytes() + 64 * 1024;
        let chunk = os.alloc_chunk(len, 1 << 16).unwrap();
        // SAFETY: a fresh chunk of ours; touch a page in the middle only.
        unsafe {
            chunk
                .ptr
                .as_ptr()
                .add(page_bytes() + 5)
                .write_bytes(0xAB, 64)
        };
        // SAFETY: ours, whole, unused from here.
        unsafe { os.retire_chunk(chunk) };
        // Whatever comes back for this length and alignment (the recycled chunk or a
        // fresh one, other tests share the list) reads as zeros and is aligned.
        for _ in 0..4 {
            let again = os.alloc_chunk(len, 1 << 16).unwrap();
            assert!((again.ptr.as_ptr() as usize).is_multiple_of(1 << 16));
            // SAFETY: a chunk of ours, `again.len` bytes.
            let bytes = unsafe { std::slice::from_raw_parts(again.ptr.as_ptr(), again.len) };
            assert!(bytes.iter().all(|&b| b == 0));
            // SAFETY: ours, whole, unused from here.
            unsafe { os.retire_chunk(again) };
        }
    }

    #[test]
    fn chunks_are_page_rounded_aligned_and_writable() {
        let mut os = OsChunks::new(HugePages::Off);
        let page = page_bytes();
        for (min_bytes, align) in [(1, 1), (page + 1, 16), (100_000, 1 << 20), (4096, 1 << 16)] {
            let chunk = os.alloc_chunk(min_bytes, align).expect("mmap");
            assert_eq!(chunk.len % page, 0);
            assert!(chunk.len >= min_bytes);
            assert_eq!(chunk.addr() % align.max(page), 0);
            // SAFETY: the chunk is a fresh read-write mapping of `len` bytes.
            unsafe {
                chunk.ptr.as_ptr().write_bytes(0xAB, chunk.len);
                assert_eq!(*chunk.ptr.as_ptr().add(chunk.len - 1), 0xAB);
                os.free_chunk(chunk);
            }
        }
    }

    #[test]
    fn explicit_huge_pages_fall_back_and_count() {
        let mut os = OsChunks::new(HugePages::Explicit);
        // An alignment above the huge page always falls back (by design), whatever the
        // machine's hugetlb reservation.
        let chunk = os
            .alloc_chunk(4096, 2 * HUGE_PAGE_BYTES)
            .expect("fallback mmap");
        assert_eq!(chunk.addr() % (2 * HUGE_PAGE_BYTES), 0);
        assert!(os.hugetlb_fallbacks() >= 1);
        assert!(hugetlb_fallback_count() >= 1);
        // SAFETY: returned by this source, unused.
        unsafe { os.free_chunk(chunk) };
        let chunk = os.alloc_chunk(4096, 4096).expect("huge or fallback mmap");
        assert!(chunk.len >= 4096);
        // SAFETY: returned by this source, unused.
        unsafe { os.free_chunk(chunk) };
    }

    #[test]
    fn madvise_chunks_work() {
        let mut os = OsChunks::new(HugePages::Madvise);
        let chunk = os
            .alloc_chunk(HUGE_PAGE_BYTES, HUGE_PAGE_BYTES)
            .expect("mmap");
        assert_eq!(chunk.addr() % HUGE_PAGE_BYTES, 0);
        // SAFETY: fresh mapping of `len` bytes; returned unchanged afterwards.
        unsafe {
            chunk.ptr.as_ptr().write_bytes(1, chunk.len);
            os.free_chunk(chunk);
        }
    }
}
