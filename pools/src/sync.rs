//! The one facade for atomics and interior mutability used by the lock-free code.
//!
//! Under `cfg(loom)` everything here is loom's model-checked version, so the same code
//! that runs in production is explored by `pools/tests/loom.rs`:
//!
//! ```sh
//! RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target-loom cargo test -p pools --test loom --release
//! ```
//!
//! Code outside this module must not name `std::sync::atomic` for synchronisation (plain
//! statistics counters and process-wide id generators, which never order other memory,
//! are the exception and say so where they are declared).

#[cfg(loom)]
pub use loom::sync::atomic::{fence, AtomicPtr, AtomicU64, AtomicU8, AtomicUsize, Ordering};
#[cfg(not(loom))]
pub use std::sync::atomic::{fence, AtomicPtr, AtomicU64, AtomicU8, AtomicUsize, Ordering};

#[cfg(loom)]
pub use loom::cell::UnsafeCell;

/// `core::cell::UnsafeCell` with loom's closure API (`with`, `with_mut`), so owner-only
/// data is written the same way in production and under the model checker (where each
/// access is checked for races).
#[cfg(not(loom))]
#[derive(Debug, Default)]
#[repr(transparent)]
pub struct UnsafeCell<T>(core::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    #[inline(always)]
    pub const fn new(value: T) -> Self {
        UnsafeCell(core::cell::UnsafeCell::new(value))
    }

    /// Run `f` with a shared raw pointer to the value; the caller upholds aliasing.
    #[inline(always)]
    pub fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    /// Run `f` with a mutable raw pointer to the value; the caller upholds aliasing.
    #[inline(always)]
    pub fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}
