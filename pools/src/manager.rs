//! `PoolManager`: named pools, shared process-wide (or per instance in tests).
//!
//! Lookups are read-mostly, so the registry sits behind an `RwLock`; pools themselves are
//! `Arc<dyn MemoryPool>` and are used without holding the registry lock.

use crate::config::PoolConfig;
use crate::cpu_pool::CpuPool;
use crate::error::PoolError;
use crate::pool::MemoryPool;
use crate::stats::MemoryStats;
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Named pools. `PoolManager::global()` is the process-wide instance; `PoolManager::new()`
/// makes an independent one.
#[derive(Default)]
pub struct PoolManager {
    /// Name -> pool; a name is in the map at most once (`BTreeMap` keeps `list` sorted).
    pools: RwLock<BTreeMap<String, Arc<dyn MemoryPool>>>,
}

impl PoolManager {
    pub fn new() -> Self {
        Self::default()
    }

    /// The process-wide manager.
    pub fn global() -> &'static PoolManager {
        static GLOBAL: OnceLock<PoolManager> = OnceLock::new();
        GLOBAL.get_or_init(PoolManager::new)
    }

    // A panic while holding the lock cannot leave the map half-updated (each critical
    // section is one map operation), so a poisoned lock is still usable.
    fn read(&self) -> RwLockReadGuard<'_, BTreeMap<String, Arc<dyn MemoryPool>>> {
        self.pools.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, BTreeMap<String, Arc<dyn MemoryPool>>> {
        self.pools.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Create a `CpuPool` and register it under `name`; a name already in use is
    /// `InvalidOperation` (and no pool is created).
    pub fn create_cpu_pool(
        &self,
        name: &str,
        config: PoolConfig,
    ) -> Result<Arc<dyn MemoryPool>, PoolError> {
        if self.read().contains_key(name) {
            return Err(duplicate(name));
        }
        let pool: Arc<dyn MemoryPool> = Arc::new(CpuPool::new(name, config)?);
        self.insert(name, Arc::clone(&pool))?;
        Ok(pool)
    }

    /// Create a `GpuPool` on CUDA device `config.device_id` and register it under `name`
    /// (`PoolError::Cuda` when there is no driver). The typed handle gives the stream and
    /// copy API; the registry holds it as a `MemoryPool`.
    pub fn create_gpu_pool(
        &self,
        name: &str,
        config: PoolConfig,
    ) -> Result<Arc<crate::gpu::GpuPool>, PoolError> {
        if self.read().contains_key(name) {
            return Err(duplicate(name));
        }
        let pool = Arc::new(crate::gpu::GpuPool::cuda(name, config)?);
        self.insert(name, Arc::clone(&pool) as Arc<dyn MemoryPool>)?;
        Ok(pool)
    }

    /// Create a `GpuPool` on a simulated device of `capacity_bytes` and register it.
    pub fn create_simulated_gpu_pool(
        &self,
        name: &str,
        config: PoolConfig,
        capacity_bytes: u64,
    ) -> Result<Arc<crate::gpu::GpuPool>, PoolError> {
        if self.read().contains_key(name) {
            return Err(duplicate(name));
        }
        let pool = Arc::new(crate::gpu::GpuPool::simulated(
            name,
            config,
            capacity_bytes,
        )?);
        self.insert(name, Arc::clone(&pool) as Arc<dyn MemoryPool>)?;
        Ok(pool)
    }

    /// Register an existing pool (a GPU pool, a custom one) under `name`.
    pub fn insert(&self, name: &str, pool: Arc<dyn MemoryPool>) -> Result<(), PoolError> {
        let mut pools = self.write();
        if pools.contains_key(name) {
            return Err(duplicate(name));
        }
        pools.insert(name.to_owned(), pool);
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<Arc<dyn MemoryPool>> {
        self.read().get(name).cloned()
    }

    /// Unregister a pool; it lives on while other `Arc`s hold it.
    pub fn remove(&self, name: &str) -> Option<Arc<dyn MemoryPool>> {
        self.write().remove(name)
    }

    /// Names of the registered pools, sorted.
    pub fn list(&self) -> Vec<String> {
        self.read().keys().cloned().collect()
    }

    /// The sum of every registered pool's statistics (peaks are summed per pool, so the
    /// aggregate peak is an upper bound of the joint peak).
    pub fn aggregate_stats(&self) -> MemoryStats {
        let pools: Vec<Arc<dyn MemoryPool>> = self.read().values().cloned().collect();
        let mut total = MemoryStats::default();
        for pool in pools {
            total.merge(&pool.stats());
        }
        total
    }
}

fn duplicate(name: &str) -> PoolError {
    PoolError::invalid_op(
        name,
        "a pool with this name already exists in the manager (remove it first)",
    )
}
