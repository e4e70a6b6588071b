//! Adapters from pools to Rust's allocator interfaces.
//!
//! - [`PoolGlobalAlloc`]: a `#[global_allocator]` over a lazily created `CpuPool`.
//! - [`PoolAllocator`] and `&CpuPool`: `allocator_api2::alloc::Allocator`, for
//!   `allocator_api2::vec::Vec::new_in(&pool)` and friends.

mod allocator_api;
mod global_alloc;

pub use allocator_api::PoolAllocator;
pub use global_alloc::PoolGlobalAlloc;
