//! `allocator_api2::alloc::Allocator` for pools: `&CpuPool` directly, any
//! `Arc<dyn MemoryPool>` (host memory) through [`PoolAllocator`].

use crate::config::MemoryType;
use crate::cpu_pool::CpuPool;
use crate::pool::{AllocFlags, MemoryPool};
use allocator_api2::alloc::{AllocError, Allocator, Layout};
use std::ptr::NonNull;
use std::sync::Arc;

/// Allocate `layout` from `pool` as the `Allocator` trait wants it.
fn allocate_in(
    pool: &dyn MemoryPool,
    layout: Layout,
    zeroed: bool,
) -> Result<NonNull<[u8]>, AllocError> {
    let ptr = pool
        .allocate_with(
            layout.size(),
            AllocFlags {
                align: layout.align(),
                zeroed,
            },
        )
        .map_err(|_| AllocError)?;
    Ok(NonNull::slice_from_raw_parts(ptr, layout.size()))
}

/// Give a block back, with the layout's size as the pool's hint (`deallocate_sized`). A
/// pool error here means the caller broke the `Allocator` contract (the pointer was not
/// from this allocator); checked pools report it in debug builds.
///
/// # Safety
/// `ptr` is a block currently allocated by `pool` (the `Allocator::deallocate` contract).
unsafe fn deallocate_in(pool: &dyn MemoryPool, ptr: NonNull<u8>, layout: Layout) {
    // SAFETY: the caller's contract: ptr is a live block of this pool (the size is a hint).
    let result = unsafe { pool.deallocate_sized(ptr, layout.size()) };
    debug_assert!(result.is_ok(), "{result:?}");
}

// SAFETY: blocks handed out stay valid until deallocated (pools never move blocks, and the
// only safe way to reset a `CpuPool`, `reset_exclusive(&mut self)`, cannot be called while
// this shared borrow lives; `MemoryPool::reset` is `unsafe`); every
// block is at least `layout.size()` bytes aligned to `layout.align()` (allocate_with
// honours the alignment or fails); a copy of `&CpuPool` is the same pool, so any copy may
// free what another allocated.
unsafe impl Allocator for &CpuPool {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        allocate_in(*self, layout, false)
    }

    fn allocate_zeroed(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        allocate_in(*self, layout, true)
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: `Allocator::deallocate`'s contract: ptr is currently allocated by this
        // allocator, i.e. a live block of this pool.
        unsafe { deallocate_in(*self, ptr, layout) };
    }
}

/// A cloneable handle on a shared host pool (from `PoolManager`, for instance) that
/// implements `Allocator`.
#[derive(Clone)]
pub struct PoolAllocator {
    /// Invariant: a host-memory pool (its pointers are dereferenceable).
    pool: Arc<dyn MemoryPool>,
}

impl PoolAllocator {
    /// `None` for device pools, whose pointers the CPU cannot use.
    pub fn new(pool: Arc<dyn MemoryPool>) -> Option<Self> {
        (pool.memory_type() == MemoryType::Host).then_some(PoolAllocator { pool })
    }

    pub fn pool(&self) -> &Arc<dyn MemoryPool> {
        &self.pool
    }
}

// SAFETY: as for `&CpuPool`: clones share the one pool; blocks are valid, sized and aligned
// as the layout asks until deallocated; the pool is host memory (field invariant).
unsafe impl Allocator for PoolAllocator {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        allocate_in(&*self.pool, layout, false)
    }

    fn allocate_zeroed(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        allocate_in(&*self.pool, layout, true)
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: `Allocator::deallocate`'s contract: ptr is currently allocated by this
        // allocator (a clone of it), i.e. a live block of the shared pool.
        unsafe { deallocate_in(&*self.pool, ptr, layout) };
    }
}
