//! The bootstrap arena: serves the allocations `dlsym` makes while we are still looking up
//! the real allocator. Bump allocation from static memory; blocks are never reused, so
//! `free` ignores them and `calloc` gets zeroed memory. Each block is preceded by its size.

use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::sync::atomic::AtomicUsize;
use core::sync::atomic::Ordering::Relaxed;

const ARENA_BYTES: usize = 256 * 1024;
/// Bytes before each block holding its size; keeps blocks 16-byte aligned.
const HEADER_BYTES: usize = 16;

#[repr(C, align(4096))]
struct Arena(UnsafeCell<[u8; ARENA_BYTES]>);

// SAFETY: disjoint ranges are handed out by an atomic bump pointer; each range is written
// only by the thread that received it (and later by the program that owns the block).
unsafe impl Sync for Arena {}

static ARENA: Arena = Arena(UnsafeCell::new([0; ARENA_BYTES]));
/// Offset of the first unused byte of `ARENA`; only grows.
static USED: AtomicUsize = AtomicUsize::new(0);

fn base() -> usize {
    ARENA.0.get() as usize
}

/// A block of `size` bytes aligned to `align` (at least 16, a power of two up to 4096), or
/// null when the arena is exhausted or the alignment is unsupported.
pub fn alloc(size: usize, align: usize) -> *mut c_void {
    let align = align.max(HEADER_BYTES);
    if !align.is_power_of_two() || align > 4096 {
        return core::ptr::null_mut();
    }
    let mut used = USED.load(Relaxed);
    loop {
        let Some(data) = (used + HEADER_BYTES).checked_next_multiple_of(align) else {
            return core::ptr::null_mut();
        };
        let end = match data.checked_add(size) {
            Some(end) if end <= ARENA_BYTES => end,
            _ => return core::ptr::null_mut(),
        };
        match USED.compare_exchange_weak(used, end, Relaxed, Relaxed) {
            Ok(_) => {
                let block = (base() + data) as *mut u8;
                // SAFETY: `data - 8 .. end` lies inside the arena (data >= HEADER_BYTES) and
                // belongs to this call alone after the successful CAS; the size slot is
                // 8-aligned because `data` is 16-aligned and the arena 4096-aligned.
                unsafe { block.sub(8).cast::<usize>().write(size) };
                return block.cast();
            }
            Err(u) => used = u,
        }
    }
}

/// Whether `ptr` points into the arena.
#[inline]
pub fn contains(ptr: *mut c_void) -> bool {
    (ptr as usize).wrapping_sub(base()) < ARENA_BYTES
}

/// The size requested for `ptr`, a block returned by `alloc`; 0 for any other pointer.
pub fn size_of(ptr: *mut c_void) -> usize {
    let offset = (ptr as usize).wrapping_sub(base());
    // Blocks start 16-aligned and after their header.
    if !(HEADER_BYTES..ARENA_BYTES).contains(&offset) || offset & (HEADER_BYTES - 1) != 0 {
        return 0;
    }
    // SAFETY: `ptr` is a block start inside the arena, so the 8 bytes before it are its
    // size slot, written by `alloc` before the pointer was handed out.
    unsafe { ptr.cast::<u8>().sub(8).cast::<usize>().read() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_disjoint_aligned_and_sized() {
        let a = alloc(10, 16);
        let b = alloc(100, 256);
        assert!(contains(a) && contains(b));
        assert_eq!(a as usize % 16, 0);
        assert_eq!(b as usize % 256, 0);
        assert!(b as usize >= a as usize + 10);
        assert_eq!(size_of(a), 10);
        assert_eq!(size_of(b), 100);
        assert!(alloc(ARENA_BYTES, 16).is_null());
        assert!(alloc(8, 48).is_null());
        assert!(alloc(8, 8192).is_null());
        let mut local = 0u8;
        assert!(!contains((&mut local as *mut u8).cast()));
    }
}
