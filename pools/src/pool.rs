//! The public pool API: `MemoryPool`, implemented by `CpuPool` and `GpuPool`.

use crate::config::{MemoryType, PoolConfig};
use crate::error::PoolError;
use crate::stats::MemoryStats;
use std::ptr::NonNull;

/// Options of one allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocFlags {
    /// Alignment in bytes (a power of two); 0 means the pool's configured alignment.
    pub align: usize,
    /// Zero the block's bytes before returning it.
    pub zeroed: bool,
}

impl AllocFlags {
    pub const DEFAULT: AllocFlags = AllocFlags {
        align: 0,
        zeroed: false,
    };

    pub fn aligned(align: usize) -> Self {
        AllocFlags {
            align,
            zeroed: false,
        }
    }

    pub fn zeroed() -> Self {
        AllocFlags {
            align: 0,
            zeroed: true,
        }
    }
}

impl Default for AllocFlags {
    fn default() -> Self {
        AllocFlags::DEFAULT
    }
}

/// A memory pool. Implementations are thread-safe unless their config says
/// `SyncMode::SingleThreaded` (then the caller promises one thread at a time).
///
/// Pointers are addresses in the pool's memory type: host pointers for host pools,
/// device addresses (not dereferenceable on the host) for device pools.
pub trait MemoryPool: Send + Sync {
    /// A block of at least `size` bytes, aligned to the pool's alignment.
    fn allocate(&self, size: usize) -> Result<NonNull<u8>, PoolError> {
        self.allocate_with(size, AllocFlags::DEFAULT)
    }

    /// A block of at least `size` bytes with the given alignment and zeroing.
    fn allocate_with(&self, size: usize, flags: AllocFlags) -> Result<NonNull<u8>, PoolError>;

    /// Give a block back. With `debug.check_pointers`, a pointer this pool did not hand
    /// out or one already freed is `PoolError::InvalidPointer`; without it, such a pointer
    /// is a caller bug (the pool may not detect it).
    fn deallocate(&self, ptr: NonNull<u8>) -> Result<(), PoolError>;

    /// Resize a block, keeping the first `min(old, new)` bytes. The default allocates,
    /// copies and frees; strategies override it to grow or shrink in place.
    fn reallocate(&self, ptr: NonNull<u8>, new_size: usize) -> Result<NonNull<u8>, PoolError> {
        let old_size = self.usable_size(ptr)?;
        let new = self.allocate(new_size)?;
        if self.memory_type() == MemoryType::Host {
            // SAFETY: both blocks are live host blocks of this pool, at least
            // `min(old_size, new_size)` bytes long, and distinct (`new` was just handed out).
            unsafe {
                std::ptr::copy_nonoverlapping(ptr.as_ptr(), new.as_ptr(), old_size.min(new_size))
            };
        }
        self.deallocate(ptr)?;
        Ok(new)
    }

    /// Bytes usable at `ptr` (at least what was asked for).
    fn usable_size(&self, ptr: NonNull<u8>) -> Result<usize, PoolError>;

    /// Release every block at once. Chunks are kept or returned per `return_policy`.
    /// Every pointer handed out before is invalid afterwards.
    fn reset(&self) -> Result<(), PoolError>;

    fn stats(&self) -> MemoryStats;

    fn memory_type(&self) -> MemoryType;

    fn name(&self) -> &str;

    fn config(&self) -> &PoolConfig;
}
