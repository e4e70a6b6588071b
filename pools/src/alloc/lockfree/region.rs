//! Where slabs come from: regions (chunks from the OS) carved by an atomic bump, under a
//! byte budget that enforces `max_size_bytes` without a lock.

use super::stack::{IntrusiveStack, Linked};
use crate::alloc::{Chunk, ChunkSource};
use crate::config::HugePages;
use crate::error::PoolError;
use crate::os::OsChunks;
use crate::stats::StatsCounters;
use crate::sync::{AtomicPtr, AtomicUsize, Ordering, UnsafeCell};
use std::ptr::{self, NonNull};
use std::sync::Arc;

/// Bytes taken from the OS, bounded by a limit; shared by regions and large objects.
///
/// Invariant: `reserved_bytes <= limit_bytes` at every instant, and `reserved_bytes`
/// equals the bytes mapped now plus those reserved by mappings in progress.
#[derive(Debug)]
pub struct ByteBudget {
    reserved_bytes: AtomicUsize,
    /// `usize::MAX` when the config sets no limit.
    limit_bytes: usize,
}

impl ByteBudget {
    pub fn new(limit_bytes: Option<usize>) -> Self {
        ByteBudget {
            reserved_bytes: AtomicUsize::new(0),
            limit_bytes: limit_bytes.unwrap_or(usize::MAX),
        }
    }

    /// Reserve `bytes`, or say how many bytes were available when it failed.
    pub fn try_reserve(&self, bytes: usize) -> Result<(), usize> {
        let mut reserved = self.reserved_bytes.load(Ordering::Relaxed);
        loop {
            let available = self.limit_bytes - reserved;
            if bytes > available {
                return Err(available);
            }
            // Relaxed: the counter orders no other memory; the CAS alone keeps the sum
            // under the limit.
            match self.reserved_bytes.compare_exchange_weak(
                reserved,
                reserved + bytes,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(actual) => reserved = actual,
            }
        }
    }

    pub fn release(&self, bytes: usize) {
        let before = self.reserved_bytes.fetch_sub(bytes, Ordering::Relaxed);
        debug_assert!(before >= bytes, "released more than reserved");
    }

    pub fn reserved_bytes(&self) -> usize {
        self.reserved_bytes.load(Ordering::Relaxed)
    }

    pub fn available_bytes(&self) -> usize {
        self.limit_bytes - self.reserved_bytes()
    }

    pub fn limit_bytes(&self) -> usize {
        self.limit_bytes
    }
}

/// Hands out disjoint `slab_bytes` pieces of `[0, len_bytes)` to concurrent callers.
///
/// Invariant: every offset returned by `carve` is a distinct multiple of `slab_bytes` with
/// `offset + slab_bytes <= len_bytes`. `next_bytes` may run past `len_bytes` (failed
/// carves still add), which only means "exhausted".
#[derive(Debug)]
pub struct SlabBump {
    next_bytes: AtomicUsize,
    len_bytes: usize,
    slab_bytes: usize,
}

impl SlabBump {
    pub fn new(len_bytes: usize, slab_bytes: usize) -> Self {
        SlabBump {
            next_bytes: AtomicUsize::new(0),
            len_bytes,
            slab_bytes,
        }
    }

    /// The offset of a fresh slab, or `None` when exhausted. Relaxed: the offset is the
    /// caller's alone (fetch_add hands every value out once) and the memory is fresh.
    #[inline]
    pub fn carve(&self) -> Option<usize> {
        if self.next_bytes.load(Ordering::Relaxed) >= self.len_bytes {
            return None;
        }
        let offset = self
            .next_bytes
            .fetch_add(self.slab_bytes, Ordering::Relaxed);
        (offset + self.slab_bytes <= self.len_bytes).then_some(offset)
    }

    pub fn has_room(&self) -> bool {
        self.next_bytes.load(Ordering::Relaxed) + self.slab_bytes <= self.len_bytes
    }

    /// Bytes handed out so far (slabs that may hold blocks).
    pub fn carved_bytes(&self) -> usize {
        self.next_bytes.load(Ordering::Relaxed).min(self.len_bytes)
    }

    /// Start again from offset 0 (under exclusive access: every slab is dead).
    pub fn reset(&mut self) {
        self.next_bytes.store(0, Ordering::Relaxed);
    }
}

/// One chunk from the OS, carved into slabs.
#[derive(Debug)]
pub struct Region {
    chunk: Chunk,
    bump: SlabBump,
    /// The region mapped at creation (`initial_size_bytes`): kept by `reset(true)`.
    initial: bool,
    /// Link in `Regions::list`.
    list_link: UnsafeCell<*mut Region>,
}

// SAFETY: `list_link` is the region's one link field and only `IntrusiveStack` touches it.
unsafe impl Linked for Region {
    fn link(&self) -> &UnsafeCell<*mut Region> {
        &self.list_link
    }
}

/// The regions of one allocator.
///
/// Invariants: every region ever mapped and not yet unmapped is on `list` (pushed before it
/// can become `current`); `current` is null or on `list`; regions are unmapped only under
/// `&mut self` (`reset`, `Drop`).
pub struct Regions {
    list: IntrusiveStack<Region>,
    current: AtomicPtr<Region>,
    /// Regions mapped after the initial one since creation or the last returning `reset`;
    /// the exponent of the growth factor.
    regions_grown: AtomicUsize,
    budget: ByteBudget,
    slab_bytes: usize,
    chunk_size_bytes: usize,
    growth_factor: f64,
    huge_pages: HugePages,
    stats: Arc<StatsCounters>,
    pool_name: Arc<str>,
}

/// No single region is mapped larger than this, whatever the growth factor says.
const MAX_REGION_BYTES: usize = 1 << 30;

impl Regions {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        pool_name: Arc<str>,
        slab_bytes: usize,
        chunk_size_bytes: usize,
        growth_factor: f64,
        max_size_bytes: Option<usize>,
        huge_pages: HugePages,
        stats: Arc<StatsCounters>,
    ) -> Self {
        Regions {
            list: IntrusiveStack::new(),
            current: AtomicPtr::new(ptr::null_mut()),
            regions_grown: AtomicUsize::new(0),
            budget: ByteBudget::new(max_size_bytes),
            slab_bytes,
            chunk_size_bytes,
            growth_factor,
            huge_pages,
            stats,
            pool_name,
        }
    }

    pub fn budget(&self) -> &ByteBudget {
        &self.budget
    }

    pub fn pool_name(&self) -> &str {
        &self.pool_name
    }

    pub fn stats(&self) -> &StatsCounters {
        &self.stats
    }

    /// Map the initial region of `bytes` (rounded up to slabs) and make it current.
    pub fn map_initial(&self, bytes: usize) -> Result<(), PoolError> {
        let region = self.map_region(bytes, true)?;
        self.current.store(region.as_ptr(), Ordering::Release);
        Ok(())
    }

    /// A fresh, slab-aligned slab of `slab_bytes`, exclusively the caller's.
    pub fn carve_slab(&self) -> Result<NonNull<u8>, PoolError> {
        loop {
            let current = self.current.load(Ordering::Acquire);
            if let Some(region) = NonNull::new(current) {
                // SAFETY: regions on the list (and `current` is one) stay mapped and their
                // records alive until `&mut self` methods run.
                let region = unsafe { region.as_ref() };
                if let Some(offset) = region.bump.carve() {
                    // SAFETY: `offset + slab_bytes <= len`, so the slab is inside the chunk.
                    return Ok(unsafe { region.chunk.ptr.add(offset) });
                }
            }
            // The current region is exhausted: use any listed region with room (a region
            // kept by `reset`, or one a racing thread mapped), else map a new one. Either
            // way, only try to swing `current`; losing the race is fine, the loop retries.
            let next = match self.find_region_with_room() {
                Some(region) => region,
                None => self.map_region(self.next_region_bytes(), false)?,
            };
            let _ = self.current.compare_exchange(
                current,
                next.as_ptr(),
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
    }

    fn find_region_with_room(&self) -> Option<NonNull<Region>> {
        let mut node = self.list.head();
        while let Some(region) = NonNull::new(node) {
            // SAFETY: listed regions stay alive while `&self` is held (type invariant).
            if unsafe { region.as_ref() }.bump.has_room() {
                return Some(region);
            }
            // SAFETY: `region` was reached from the list head and is alive.
            node = unsafe { IntrusiveStack::next(region) };
        }
        None
    }

    /// The growth policy's next region size: `chunk_size_bytes * growth_factor^k`.
    fn next_region_bytes(&self) -> usize {
        let grown = self.regions_grown.fetch_add(1, Ordering::Relaxed);
        let bytes = self.chunk_size_bytes as f64 * self.growth_factor.powi(grown.min(64) as i32);
        (bytes.min(MAX_REGION_BYTES as f64) as usize).max(self.slab_bytes)
    }

    /// Map a region of about `want_bytes` (rounded to whole slabs, cut to the budget but
    /// never below one slab) and put it on the list.
    fn map_region(&self, want_bytes: usize, initial: bool) -> Result<NonNull<Region>, PoolError> {
        let slab = self.slab_bytes;
        let want = want_bytes.max(slab).div_ceil(slab) * slab;
        let len = want.min(self.budget.available_bytes() / slab * slab);
        if len < slab {
            return Err(self.oom(slab));
        }
        let chunk = self.map_chunk(len, slab)?;
        let region = Box::new(Region {
            bump: SlabBump::new(chunk.len / slab * slab, slab),
            chunk,
            initial,
            list_link: UnsafeCell::new(ptr::null_mut()),
        });
        let region = NonNull::from(Box::leak(region));
        // SAFETY: the record is leaked (freed only by `&mut self` methods after it is taken
        // off the list) and on no stack yet.
        unsafe { self.list.push(region) };
        Ok(region)
    }

    /// Reserve and map `len` bytes aligned to `align` (used for regions and large objects).
    pub fn map_chunk(&self, len: usize, align: usize) -> Result<Chunk, PoolError> {
        self.budget
            .try_reserve(len)
            .map_err(|available| self.oom_with(len, available))?;
        let Some(chunk) = OsChunks::new(self.huge_pages).alloc_chunk(len, align) else {
            self.budget.release(len);
            return Err(self.oom_with(len, 0));
        };
        // The source may round up (pages, huge pages): the extra must fit the budget too.
        if chunk.len > len {
            if let Err(available) = self.budget.try_reserve(chunk.len - len) {
                self.budget.release(len);
                // SAFETY: the chunk was just mapped by this source and nothing uses it.
                unsafe { OsChunks::new(self.huge_pages).free_chunk(chunk) };
                return Err(self.oom_with(len, available));
            }
        }
        self.stats.on_reserve(chunk.len);
        Ok(chunk)
    }

    /// Unmap a chunk from `map_chunk` and release its budget.
    ///
    /// # Safety
    /// `chunk` came from `map_chunk` of this `Regions`, unchanged, and no byte of it is used.
    pub unsafe fn unmap_chunk(&self, chunk: Chunk) {
        // SAFETY: forwarded from the caller; `OsChunks` holds no per-source state that
        // `free_chunk` depends on (it is a plain `munmap`).
        unsafe { OsChunks::new(self.huge_pages).free_chunk(chunk) };
        self.budget.release(chunk.len);
        self.stats.on_release(chunk.len);
    }

    fn oom(&self, requested_bytes: usize) -> PoolError {
        self.oom_with(requested_bytes, self.budget.available_bytes())
    }

    fn oom_with(&self, requested_bytes: usize, available_bytes: usize) -> PoolError {
        PoolError::oom(
            &self.pool_name,
            requested_bytes,
            available_bytes,
            self.budget.limit_bytes(),
        )
    }

    /// The base of the carved slab holding `addr`, if `addr` is inside one; reads only
    /// region records, never slab memory.
    pub fn carved_slab_of(&self, addr: usize) -> Option<usize> {
        let mut node = self.list.head();
        while let Some(region) = NonNull::new(node) {
            // SAFETY: listed regions stay alive while `&self` is held (type invariant).
            let r = unsafe { region.as_ref() };
            let base = r.chunk.addr();
            if addr >= base && addr - base < r.bump.carved_bytes() {
                return Some(addr & !(self.slab_bytes - 1));
            }
            // SAFETY: `region` was reached from the list head and is alive.
            node = unsafe { IntrusiveStack::next(region) };
        }
        None
    }

    /// Forget every slab. With `return_chunks`, unmap every region but the initial one.
    pub fn reset(&mut self, return_chunks: bool) {
        let mut node = self.list.replace(ptr::null_mut());
        let mut kept: Vec<NonNull<Region>> = Vec::new();
        while let Some(region) = NonNull::new(node) {
            // SAFETY: `&mut self`: nobody else can reach the list; the node is alive.
            node = unsafe { IntrusiveStack::next(region) };
            // SAFETY: as above; the record was leaked from a `Box` by `map_region`.
            let record = unsafe { &mut *region.as_ptr() };
            if return_chunks && !record.initial {
                // SAFETY: every slab is dead after a reset (the caller's contract on
                // `reset`), and the record is off the list and dropped right here.
                unsafe {
                    self.unmap_chunk(record.chunk);
                    drop(Box::from_raw(region.as_ptr()));
                }
            } else {
                record.bump.reset();
                kept.push(region);
            }
        }
        if return_chunks {
            self.regions_grown.store(0, Ordering::Relaxed);
        }
        // Re-push oldest first so the list keeps its order (newest on top).
        for region in kept.iter().rev() {
            // SAFETY: alive, and off every stack since the `replace` above.
            unsafe { self.list.push(*region) };
        }
        let current = kept
            .iter()
            // SAFETY: kept records are alive.
            .find(|r| unsafe { r.as_ref() }.initial)
            .or(kept.first())
            .map_or(ptr::null_mut(), |r| r.as_ptr());
        self.current.store(current, Ordering::Release);
    }
}

impl Drop for Regions {
    fn drop(&mut self) {
        let mut node = self.list.replace(ptr::null_mut());
        while let Some(region) = NonNull::new(node) {
            // SAFETY: `&mut self` in drop: the list is ours alone and every slab is dead
            // (the allocator is being dropped).
            unsafe {
                node = IntrusiveStack::next(region);
                let record = Box::from_raw(region.as_ptr());
                self.unmap_chunk(record.chunk);
            }
        }
    }
}
