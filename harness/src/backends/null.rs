//! `null`: hands out fake, unique, never-dereferenced addresses and frees nothing. Its
//! figures are the engine's own cost per op (slot table, waits, loop, clock reads).

use super::{BackendFactory, BackendSetup};
use crate::backends::{AddressSpace, Backend};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Spacing of fake addresses: every address is aligned to at least this.
const FAKE_BLOCK_BYTES: usize = 4096;
/// Each thread numbers its addresses from `(thread_tag + 1) << THREAD_SHIFT`.
const THREAD_SHIFT: u32 = 46;

static NEXT_THREAD_TAG: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's next fake address (0 until first use).
    static NEXT_ADDR: Cell<usize> = const { Cell::new(0) };
}

/// The null backend. Addresses are unique per process (thread-local counters under
/// distinct per-thread prefixes, so workers share no cache line).
#[derive(Debug, Default)]
pub struct NullBackend;

impl NullBackend {
    #[inline]
    fn next_addr(align: usize) -> usize {
        NEXT_ADDR.with(|next| {
            let mut addr = next.get();
            if addr == 0 {
                let tag = NEXT_THREAD_TAG.fetch_add(1, Ordering::Relaxed);
                addr = (tag + 1) << THREAD_SHIFT;
            }
            if align > FAKE_BLOCK_BYTES {
                addr = addr.next_multiple_of(align);
            }
            next.set(addr + FAKE_BLOCK_BYTES);
            addr
        })
    }
}

impl Backend for NullBackend {
    #[inline]
    fn alloc(&self, _size: usize, align: usize, _stream: u16) -> usize {
        Self::next_addr(align)
    }

    #[inline]
    unsafe fn free(&self, _addr: usize, _size: usize, _stream: u16) {}

    #[inline]
    unsafe fn realloc(
        &self,
        _addr: usize,
        _old_size: usize,
        _new_size: usize,
        align: usize,
        _stream: u16,
    ) -> usize {
        Self::next_addr(align)
    }

    fn address_space(&self) -> AddressSpace {
        AddressSpace::Device
    }
}

pub struct NullFactory;

impl BackendFactory for NullFactory {
    type Backend = NullBackend;

    fn name(&self) -> &'static str {
        "null"
    }

    fn description(&self) -> &'static str {
        "fake addresses, no memory: the engine's own cost"
    }

    fn in_default_set(&self) -> bool {
        false
    }

    fn create(&self, _setup: &BackendSetup) -> Result<NullBackend, String> {
        Ok(NullBackend)
    }

    fn reserved_source(&self) -> &'static str {
        "none"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_unique_aligned_and_nonzero() {
        let b = NullBackend;
        let a = b.alloc(10, 0, 0);
        let c = b.alloc(10, 1 << 20, 0);
        let other = std::thread::spawn(|| NullBackend.alloc(10, 0, 0))
            .join()
            .unwrap();
        assert!(a != 0 && c != 0 && other != 0);
        assert!(a != c && a != other && c != other);
        assert_eq!(c % (1 << 20), 0);
        assert_eq!(a % FAKE_BLOCK_BYTES, 0);
    }
}
