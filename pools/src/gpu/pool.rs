//! `GpuPool`: a stream-ordered pool over a `DeviceUpstream`, with all metadata on the host.
//!
//! Allocation on stream `S` (RMM's `stream_ordered_memory_resource::get_block`):
//! 1. a block from `S`'s own free list: no synchronisation (S's work is already ordered after
//!    the free);
//! 2. else a block from another stream `O`'s list, after making `S` wait on `O`'s event
//!    (recorded at every free on `O`); the rest of that free block stays in `O`'s list;
//! 3. else merge other streams' lists into `S`'s one at a time (a wait each), retrying after
//!    each merge: blocks of different lists may now coalesce;
//! 4. else grow: a new chunk from the upstream (growth policy, halved on failure down to the
//!    request, like RMM's `try_to_expand`); blocks of separate chunks never coalesce;
//! 5. else `PoolError::OutOfMemory`, the pool unchanged and usable.

use super::blocks::{align_up, Block, FreeBlocks, FreeExtent};
use super::coalescing::CoalescingBlocks;
use super::simulated::SimulatedDevice;
use super::uniform_blocks::FixedBlocks;
use super::upstream::{CopyKind, DeviceUpstream, UpstreamCounts, UpstreamError};
use super::StreamId;
use crate::config::{AllocatorKind, MemoryType, PoolConfig, ReturnPolicy, POISON_BYTE};
use crate::error::PoolError;
use crate::pool::{AllocFlags, MemoryPool};
use crate::stats::{MemoryStats, StatsCounters};
use std::collections::BTreeMap;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard};

/// Default and minimum alignment of device blocks (what `cudaMalloc` guarantees).
pub const GPU_MIN_ALIGNMENT: usize = 256;

/// Counters of the stream-ordered paths, on top of `MemoryStats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GpuPoolStats {
    /// Allocations served from the allocating stream's own free list (step 1).
    pub same_stream_reuses: u64,
    /// Allocations served from another stream's list after an event wait (step 2).
    pub cross_stream_reuses: u64,
    /// Other streams' lists merged into the allocating stream's (step 3).
    pub stream_merges: u64,
    /// Event waits the pool issued (steps 2 and 3).
    pub event_waits: u64,
    /// Events the pool recorded (one per free of a pooled block).
    pub event_records: u64,
    /// Chunks taken from the upstream (step 4), large objects not included.
    pub chunks_grown: u64,
    /// Chunks given back to the upstream (return policy), large objects not included.
    pub chunks_returned: u64,
    /// What the upstream was asked to do, as it counted it.
    pub upstream: UpstreamCounts,
}

#[derive(Debug, Clone, Copy)]
struct Live {
    len: u64,
    requested: usize,
    /// Chunk start; `None` for a large object (its own upstream allocation).
    chunk: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
struct ChunkRec {
    len: u64,
    initial: bool,
}

struct State {
    upstream: Box<dyn DeviceUpstream>,
    free: Box<dyn FreeBlocks>,
    /// Live blocks, start -> record. Invariant: disjoint, each inside its chunk (or a large
    /// object), never overlapping a free extent.
    live: BTreeMap<u64, Live>,
    /// Chunks held from the upstream, start -> record.
    chunks: BTreeMap<u64, ChunkRec>,
    /// Invariant: sum of chunk lengths plus large-object lengths.
    reserved_bytes: u64,
    /// Growth steps taken since creation or the last reset that returned chunks.
    growth_steps: u32,
    counters: GpuPoolStats,
}

/// A device (or pinned, or managed) memory pool with stream-ordered reuse. See the module
/// docs for the allocation order, and `docs/gpu.md` for the design.
///
/// Pointers it returns are device addresses: never dereference them on the host (pinned
/// and managed pools excepted). Use the copy methods to move bytes.
pub struct GpuPool {
    name: String,
    config: PoolConfig,
    /// Effective minimum alignment: `max(config.alignment, 256)`.
    alignment: u64,
    memory_type: MemoryType,
    stream: AtomicU16,
    stats: StatsCounters,
    state: Mutex<State>,
}

impl GpuPool {
    /// A pool over any upstream. `config.memory_type` must be the upstream's, or `host`
    /// (then the upstream's is taken). Reserves `config.initial_size_bytes` at once.
    pub fn new(
        name: &str,
        config: PoolConfig,
        upstream: Box<dyn DeviceUpstream>,
    ) -> Result<Self, PoolError> {
        config
            .validate()
            .map_err(|e| PoolError::invalid_op(name, e.to_string()))?;
        let memory_type = upstream.memory_type();
        if config.memory_type != MemoryType::Host && config.memory_type != memory_type {
            return Err(PoolError::invalid_op(
                name,
                format!(
                    "config asks for {:?} memory but the upstream ({}) serves {:?}",
                    config.memory_type,
                    upstream.describe(),
                    memory_type
                ),
            ));
        }
        let mut config = config;
        config.memory_type = memory_type;
        config.device_id = upstream.device_id();
        let alignment = (config.alignment.max(GPU_MIN_ALIGNMENT)) as u64;
        let free: Box<dyn FreeBlocks> = match config.allocator {
            AllocatorKind::FixedSize => {
                let block =
                    align_up(config.block_size_bytes as u64, alignment).ok_or_else(|| {
                        PoolError::invalid_op(name, "block_size_bytes overflows when aligned")
                    })?;
                Box::new(FixedBlocks::new(block, alignment))
            }
            AllocatorKind::VariableSize => Box::new(CoalescingBlocks::new(config.fit)),
            other => {
                return Err(PoolError::invalid_op(
                    name,
                    format!(
                    "GpuPool serves allocator = \"fixed-size\" or \"variable-size\", not {other:?}"
                ),
                ))
            }
        };
        let pool = GpuPool {
            name: name.to_owned(),
            alignment,
            memory_type,
            stream: AtomicU16::new(0),
            stats: StatsCounters::new(),
            state: Mutex::new(State {
                upstream,
                free,
                live: BTreeMap::new(),
                chunks: BTreeMap::new(),
                reserved_bytes: 0,
                growth_steps: 0,
                counters: GpuPoolStats::default(),
            }),
            config,
        };
        if pool.config.initial_size_bytes > 0 {
            let mut st = pool.lock();
            let bytes = pool.config.initial_size_bytes as u64;
            let addr = st.upstream.alloc(bytes).map_err(|e| pool.upstream_err(e))?;
            let len = align_up(bytes, st.upstream.granularity_bytes()).unwrap_or(bytes);
            pool.add_chunk(&mut st, StreamId(0), addr, len, true);
        }
        Ok(pool)
    }

    /// A pool on the simulated device of `capacity_bytes` (see `SimulatedDevice`).
    pub fn simulated(
        name: &str,
        config: PoolConfig,
        capacity_bytes: u64,
    ) -> Result<Self, PoolError> {
        let mut device = SimulatedDevice::new(capacity_bytes);
        if config.memory_type != MemoryType::Host {
            device = device.with_memory_type(config.memory_type);
        }
        if config.device_id != 0 {
            device = device.with_device_count(config.device_id + 1);
            device
                .set_device(config.device_id)
                .map_err(|e| PoolError::invalid_op(name, e.to_string()))?;
        }
        GpuPool::new(name, config, Box::new(device))
    }

    /// A pool on CUDA device `config.device_id`. `PoolError::Cuda` when there is no driver
    /// or no device (the message says which), never a panic.
    pub fn cuda(name: &str, config: PoolConfig) -> Result<Self, PoolError> {
        #[cfg(feature = "cuda")]
        {
            let memory_type = match config.memory_type {
                MemoryType::Host => MemoryType::Device,
                other => other,
            };
            let upstream = super::CudaUpstream::new(config.device_id, memory_type)
                .map_err(|e| PoolError::cuda(name, e.to_string()))?;
            GpuPool::new(name, config, Box::new(upstream))
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = config;
            Err(PoolError::cuda(
                name,
                "this build of `pools` has no CUDA support (enable the `cuda` feature)",
            ))
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // breaks memory safety (they are plain host data), so recover the state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn upstream_err(&self, e: UpstreamError) -> PoolError {
        match e {
            UpstreamError::OutOfMemory {
                requested_bytes,
                free_bytes,
            } => PoolError::oom(
                &self.name,
                requested_bytes as usize,
                free_bytes as usize,
                self.limit_bytes(),
            ),
            UpstreamError::Cuda(m) => PoolError::cuda(&self.name, m),
            UpstreamError::Invalid(m) => PoolError::invalid_op(&self.name, m),
        }
    }

    fn limit_bytes(&self) -> usize {
        self.config.max_size_bytes.unwrap_or(usize::MAX)
    }

    /// The stream the `MemoryPool` methods use.
    pub fn current_stream(&self) -> StreamId {
        StreamId(self.stream.load(Relaxed))
    }

    /// Make `stream` the one the `MemoryPool` methods (and the `_async` copies) use.
    pub fn set_stream(&self, stream: StreamId) {
        self.stream.store(stream.0, Relaxed);
    }

    /// The device this pool allocates on.
    pub fn device_id(&self) -> u32 {
        self.config.device_id
    }

    /// Move the pool to another device. Only while it holds no memory (addresses belong to
    /// one device): create it with `initial_size_bytes = 0`, or call after `reset` with a
    /// return policy that gave every chunk back.
    pub fn set_device(&mut self, device_id: u32) -> Result<(), PoolError> {
        let st = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        if st.reserved_bytes != 0 {
            return Err(PoolError::invalid_op(
                &self.name,
                format!(
                    "cannot move to device {device_id}: the pool holds {} bytes of device {}",
                    st.reserved_bytes, self.config.device_id
                ),
            ));
        }
        st.upstream.set_device(device_id).map_err(|e| match e {
            UpstreamError::Cuda(m) => PoolError::cuda(&self.name, m),
            other => PoolError::invalid_op(&self.name, other.to_string()),
        })?;
        self.config.device_id = device_id;
        Ok(())
    }

    /// One line naming the upstream (`simulated device 0, 80 GiB ...`).
    pub fn describe_upstream(&self) -> String {
        self.lock().upstream.describe()
    }

    /// Stream-ordered counters and the upstream's own counts.
    pub fn gpu_stats(&self) -> GpuPoolStats {
        let st = self.lock();
        GpuPoolStats {
            upstream: st.upstream.counts(),
            ..st.counters
        }
    }

    /// Every free extent, sorted by address (see `FreeBlocks::free_extents`).
    pub fn free_extents(&self) -> Vec<FreeExtent> {
        self.lock().free.free_extents()
    }

    /// The chunks (upstream allocations) held now, as `(start, len)`, large objects excluded.
    pub fn chunks(&self) -> Vec<(u64, u64)> {
        self.lock()
            .chunks
            .iter()
            .map(|(&a, c)| (a, c.len))
            .collect()
    }

    /// Allocate on `stream` instead of the pool's current stream.
    pub fn allocate_on(&self, size: usize, stream: StreamId) -> Result<NonNull<u8>, PoolError> {
        self.allocate_with_on(size, AllocFlags::DEFAULT, stream)
    }

    /// `allocate_with` on `stream`.
    pub fn allocate_with_on(
        &self,
        size: usize,
        flags: AllocFlags,
        stream: StreamId,
    ) -> Result<NonNull<u8>, PoolError> {
        let result = self.try_allocate(size, flags, stream);
        match &result {
            Ok(_) => self.stats.on_alloc(size),
            Err(_) => self.stats.on_failure(),
        }
        result
    }

    fn try_allocate(
        &self,
        size: usize,
        flags: AllocFlags,
        stream: StreamId,
    ) -> Result<NonNull<u8>, PoolError> {
        if flags.align != 0 && !flags.align.is_power_of_two() {
            return Err(PoolError::invalid_op(
                &self.name,
                format!("alignment {} is not a power of two", flags.align),
            ));
        }
        if flags.align > 1 << 30 {
            return Err(PoolError::invalid_op(
                &self.name,
                format!("alignment {} exceeds 1 GiB", flags.align),
            ));
        }
        let align = self.alignment.max(flags.align as u64);
        let len = align_up((size as u64).max(1), self.alignment)
            .ok_or_else(|| PoolError::oom(&self.name, size, 0, self.limit_bytes()))?;
        let mut guard = self.lock();
        let st = &mut *guard;
        let (block, large) = if st.free.serves(len, align) {
            (self.take_block(st, stream, len, align)?, false)
        } else {
            (self.large_object(st, len, align)?, true)
        };
        if flags.zeroed {
            if let Err(e) = st.upstream.fill(block.addr, block.len, 0, stream) {
                self.release_block(st, stream, block, large);
                return Err(self.upstream_err(e));
            }
        }
        st.live.insert(
            block.addr,
            Live {
                len: block.len,
                requested: size,
                chunk: (!large).then_some(block.chunk),
            },
        );
        drop(guard);
        Ok(NonNull::new(block.addr as usize as *mut u8).expect("device addresses are non-zero"))
    }

    /// Steps 1 to 5 of the module docs.
    fn take_block(
        &self,
        st: &mut State,
        stream: StreamId,
        len: u64,
        align: u64,
    ) -> Result<Block, PoolError> {
        if let Some(b) = st.free.take(stream, len, align) {
            st.counters.same_stream_reuses += 1;
            return Ok(b);
        }
        let others = st.free.other_streams(stream);
        for &owner in &others {
            if let Some(b) = st.free.take(owner, len, align) {
                if let Err(e) = st.upstream.wait_event(stream, owner) {
                    // Without the wait the block is unsafe for `stream`: put it back.
                    st.free.give_back(owner, b, st.chunks[&b.chunk].len);
                    return Err(self.upstream_err(e));
                }
                st.counters.event_waits += 1;
                st.counters.cross_stream_reuses += 1;
                return Ok(b);
            }
        }
        for &owner in &others {
            st.upstream
                .wait_event(stream, owner)
                .map_err(|e| self.upstream_err(e))?;
            st.counters.event_waits += 1;
            st.counters.stream_merges += 1;
            st.free.merge(owner, stream);
            // The merged blocks are now in `stream`'s list, where a third stream would take
            // them after waiting on `stream`'s event: re-record it after the wait so that it
            // covers `owner`'s frees too (ordering must be transitive).
            st.upstream
                .record_event(stream)
                .map_err(|e| self.upstream_err(e))?;
            st.counters.event_records += 1;
            if let Some(b) = st.free.take(stream, len, align) {
                return Ok(b);
            }
        }
        self.grow(st, stream, len, align)?;
        Ok(st
            .free
            .take(stream, len, align)
            .expect("a fresh chunk sized for the request serves it"))
    }

    /// Bytes the pool may still take from the upstream under `max_size_bytes`.
    fn headroom(&self, st: &State) -> u64 {
        self.config.max_size_bytes.map_or(u64::MAX, |max| {
            (max as u64).saturating_sub(st.reserved_bytes)
        })
    }

    fn oom(&self, st: &State, requested: u64) -> PoolError {
        let pool_free: u64 = st.free.free_extents().iter().map(|e| e.len).sum();
        let device_free = st.upstream.mem_info().map_or(0, |m| m.free_bytes);
        let available = pool_free + device_free.min(self.headroom(st));
        PoolError::oom(
            &self.name,
            requested as usize,
            available as usize,
            self.limit_bytes(),
        )
    }

    /// Take a chunk able to serve `len` at `align` and add it to `stream`'s list.
    fn grow(
        &self,
        st: &mut State,
        stream: StreamId,
        len: u64,
        align: u64,
    ) -> Result<(), PoolError> {
        let g = st.upstream.granularity_bytes();
        // A chunk is aligned to the granularity; more alignment needs slack in the chunk.
        let needed = align_up(st.free.block_len(len), g)
            .and_then(|n| n.checked_add(align.saturating_sub(g)))
            .ok_or_else(|| self.oom(st, len))?;
        let headroom = self.headroom(st);
        if needed > headroom {
            return Err(self.oom(st, len));
        }
        let policy = self.config.chunk_size_bytes as f64
            * self
                .config
                .growth_factor
                .powi(st.growth_steps.min(62) as i32);
        let mut want = (policy.min(u64::MAX as f64 / 4.0) as u64)
            .max(needed)
            .min(headroom);
        want = align_up(want, g).unwrap_or(needed).max(needed);
        loop {
            match st.upstream.alloc(want) {
                Ok(addr) => {
                    st.growth_steps += 1;
                    self.add_chunk(st, stream, addr, want, false);
                    return Ok(());
                }
                Err(UpstreamError::OutOfMemory { .. }) if want > needed => {
                    want = align_up((want / 2).max(needed), g)
                        .unwrap_or(needed)
                        .max(needed);
                }
                Err(UpstreamError::OutOfMemory { .. }) => return Err(self.oom(st, len)),
                Err(e) => return Err(self.upstream_err(e)),
            }
        }
    }

    fn add_chunk(&self, st: &mut State, stream: StreamId, addr: u64, len: u64, initial: bool) {
        st.chunks.insert(addr, ChunkRec { len, initial });
        st.reserved_bytes += len;
        st.counters.chunks_grown += 1;
        self.stats.on_reserve(len as usize);
        st.free.add_chunk(stream, addr, len);
    }

    /// A request the strategy does not serve: its own upstream allocation.
    fn large_object(&self, st: &mut State, len: u64, align: u64) -> Result<Block, PoolError> {
        let g = st.upstream.granularity_bytes();
        if align > g {
            return Err(PoolError::invalid_op(
                &self.name,
                format!(
                    "alignment {align} above the block alignment needs the variable-size \
                     allocator (the device aligns large objects to {g})"
                ),
            ));
        }
        let len = align_up(len, g).ok_or_else(|| self.oom(st, len))?;
        if len > self.headroom(st) {
            return Err(self.oom(st, len));
        }
        let addr = match st.upstream.alloc(len) {
            Ok(a) => a,
            Err(UpstreamError::OutOfMemory { .. }) => return Err(self.oom(st, len)),
            Err(e) => return Err(self.upstream_err(e)),
        };
        st.reserved_bytes += len;
        self.stats.on_reserve(len as usize);
        self.stats.on_large_object();
        Ok(Block {
            addr,
            len,
            chunk: addr,
        })
    }

    /// Undo a successful take (used when a later step of the allocation fails).
    fn release_block(&self, st: &mut State, stream: StreamId, block: Block, large: bool) {
        if large {
            if st.upstream.free(block.addr, block.len).is_ok() {
                st.reserved_bytes -= block.len;
                self.stats.on_release(block.len as usize);
            }
        } else {
            let chunk_len = st.chunks[&block.chunk].len;
            st.free.give_back(stream, block, chunk_len);
        }
    }

    /// Free on `stream`: the block is reusable at once on `stream`, and on other streams
    /// after they wait on the event recorded here.
    pub fn deallocate_on(&self, ptr: NonNull<u8>, stream: StreamId) -> Result<(), PoolError> {
        let addr = ptr.as_ptr() as usize as u64;
        let mut guard = self.lock();
        let st = &mut *guard;
        let Some(live) = st.live.remove(&addr) else {
            let reason = if st
                .live
                .range(..addr)
                .next_back()
                .is_some_and(|(a, l)| addr < a + l.len)
            {
                "points inside a live block, not at its start"
            } else {
                "not allocated by this pool, or already freed"
            };
            return Err(PoolError::invalid_ptr(&self.name, addr as usize, reason));
        };
        let Some(chunk) = live.chunk else {
            // Large object: straight back to the upstream (cuMemFree waits for the device).
            st.upstream
                .free(addr, live.len)
                .map_err(|e| self.upstream_err(e))?;
            st.reserved_bytes -= live.len;
            self.stats.on_release(live.len as usize);
            self.stats.on_free(live.requested);
            return Ok(());
        };
        let mut result = Ok(());
        if self.config.debug.poison_on_free {
            if let Err(e) = st.upstream.fill(addr, live.len, POISON_BYTE, stream) {
                result = Err(self.upstream_err(e));
            }
        }
        // The event marks the point after which another stream may reuse the block. If it
        // cannot be recorded the block must not be reused by anyone: keep it out of the lists.
        if let Err(e) = st.upstream.record_event(stream) {
            self.stats.on_free(live.requested);
            return Err(self.upstream_err(e));
        }
        st.counters.event_records += 1;
        let chunk_rec = st.chunks[&chunk];
        let block = Block {
            addr,
            len: live.len,
            chunk,
        };
        let whole_chunk_free = st.free.give_back(stream, block, chunk_rec.len);
        if whole_chunk_free
            && self.config.return_policy == ReturnPolicy::WhenEmpty
            && !chunk_rec.initial
        {
            self.return_chunk(st, chunk)?;
        }
        self.stats.on_free(live.requested);
        result
    }

    fn return_chunk(&self, st: &mut State, chunk: u64) -> Result<(), PoolError> {
        let rec = st.chunks[&chunk];
        st.free.remove_chunk(chunk);
        st.chunks.remove(&chunk);
        st.reserved_bytes -= rec.len;
        st.counters.chunks_returned += 1;
        self.stats.on_release(rec.len as usize);
        st.upstream
            .free(chunk, rec.len)
            .map_err(|e| self.upstream_err(e))
    }

    /// Wait for all work on every stream, then merge every stream's free list into the
    /// current stream's (no ordering is left to respect), coalescing.
    pub fn synchronize(&self) -> Result<(), PoolError> {
        let stream = self.current_stream();
        let mut st = self.lock();
        st.upstream
            .synchronize()
            .map_err(|e| self.upstream_err(e))?;
        for owner in st.free.other_streams(stream) {
            st.free.merge(owner, stream);
        }
        Ok(())
    }

    /// Wait on the host for all work on `stream` (for example an `_async` copy).
    pub fn synchronize_stream(&self, stream: StreamId) -> Result<(), PoolError> {
        self.lock()
            .upstream
            .synchronize_stream(stream)
            .map_err(|e| self.upstream_err(e))
    }

    /// Check that `[addr, addr + bytes)` lies inside one live block of this pool.
    fn check_range(&self, st: &State, addr: u64, bytes: u64, what: &str) -> Result<(), PoolError> {
        let inside = st
            .live
            .range(..=addr)
            .next_back()
            .is_some_and(|(&a, l)| addr.checked_add(bytes).is_some_and(|end| end <= a + l.len));
        if inside {
            Ok(())
        } else {
            Err(PoolError::invalid_ptr(
                &self.name,
                addr as usize,
                format!("{what} range of {bytes} bytes is not inside a live block of this pool"),
            ))
        }
    }

    fn copy_checked(
        &self,
        dst: u64,
        src: u64,
        bytes: u64,
        kind: CopyKind,
        stream: Option<StreamId>,
    ) -> Result<(), PoolError> {
        let mut st = self.lock();
        if matches!(kind, CopyKind::HostToDevice | CopyKind::DeviceToDevice) {
            self.check_range(&st, dst, bytes, "destination")?;
        }
        if matches!(kind, CopyKind::DeviceToHost | CopyKind::DeviceToDevice) {
            self.check_range(&st, src, bytes, "source")?;
        }
        // SAFETY: device ranges were just checked to be inside live blocks; host ranges are
        // the caller's slices (synchronous callers) or covered by the caller's contract
        // (`_async` callers), valid until the copy completes.
        unsafe { st.upstream.copy(dst, src, bytes, kind, stream) }.map_err(|e| self.upstream_err(e))
    }

    /// Copy `src` to the device at `dst` (inside a live block of this pool); synchronous.
    pub fn copy_host_to_device(&self, dst: NonNull<u8>, src: &[u8]) -> Result<(), PoolError> {
        self.copy_checked(
            dst.as_ptr() as usize as u64,
            src.as_ptr() as usize as u64,
            src.len() as u64,
            CopyKind::HostToDevice,
            None,
        )
    }

    /// Copy from the device at `src` (inside a live block) into `dst`; synchronous.
    pub fn copy_device_to_host(&self, dst: &mut [u8], src: NonNull<u8>) -> Result<(), PoolError> {
        self.copy_checked(
            dst.as_mut_ptr() as usize as u64,
            src.as_ptr() as usize as u64,
            dst.len() as u64,
            CopyKind::DeviceToHost,
            None,
        )
    }

    /// Copy `bytes` between two live blocks of this pool; synchronous.
    pub fn copy_device_to_device(
        &self,
        dst: NonNull<u8>,
        src: NonNull<u8>,
        bytes: usize,
    ) -> Result<(), PoolError> {
        self.copy_checked(
            dst.as_ptr() as usize as u64,
            src.as_ptr() as usize as u64,
            bytes as u64,
            CopyKind::DeviceToDevice,
            None,
        )
    }

    /// `copy_host_to_device` ordered on the pool's current stream; may still run after return.
    ///
    /// # Safety
    /// `src` must stay valid and unmodified until the stream is synchronized
    /// ([`GpuPool::synchronize_stream`] or [`GpuPool::synchronize`]).
    pub unsafe fn copy_host_to_device_async(
        &self,
        dst: NonNull<u8>,
        src: &[u8],
    ) -> Result<(), PoolError> {
        self.copy_checked(
            dst.as_ptr() as usize as u64,
            src.as_ptr() as usize as u64,
            src.len() as u64,
            CopyKind::HostToDevice,
            Some(self.current_stream()),
        )
    }

    /// `copy_device_to_host` ordered on the pool's current stream; may still run after return.
    ///
    /// # Safety
    /// `dst` must stay valid, and must be neither read nor written, until the stream is
    /// synchronized ([`GpuPool::synchronize_stream`] or [`GpuPool::synchronize`]).
    pub unsafe fn copy_device_to_host_async(
        &self,
        dst: &mut [u8],
        src: NonNull<u8>,
    ) -> Result<(), PoolError> {
        self.copy_checked(
            dst.as_mut_ptr() as usize as u64,
            src.as_ptr() as usize as u64,
            dst.len() as u64,
            CopyKind::DeviceToHost,
            Some(self.current_stream()),
        )
    }

    /// `copy_device_to_device` ordered on the pool's current stream.
    pub fn copy_device_to_device_async(
        &self,
        dst: NonNull<u8>,
        src: NonNull<u8>,
        bytes: usize,
    ) -> Result<(), PoolError> {
        self.copy_device_to_device_on(dst, src, bytes, self.current_stream())
    }

    /// `copy_device_to_device` ordered on `stream`.
    pub fn copy_device_to_device_on(
        &self,
        dst: NonNull<u8>,
        src: NonNull<u8>,
        bytes: usize,
        stream: StreamId,
    ) -> Result<(), PoolError> {
        self.copy_checked(
            dst.as_ptr() as usize as u64,
            src.as_ptr() as usize as u64,
            bytes as u64,
            CopyKind::DeviceToDevice,
            Some(stream),
        )
    }

    /// Walk all host metadata and check every invariant: free extents and live blocks are
    /// disjoint and inside their chunks, no two free extents of one list and chunk touch
    /// (for the variable strategy: they would have been coalesced), and for the variable
    /// strategy free plus live bytes tile every chunk exactly. `Err` describes the first
    /// violation.
    pub fn check_invariants(&self) -> Result<(), String> {
        let st = self.lock();
        let mut ranges: Vec<(u64, u64, Option<u64>, &str)> = st
            .free
            .free_extents()
            .iter()
            .map(|e| (e.addr, e.len, Some(e.chunk), "free"))
            .chain(st.live.iter().map(|(&a, l)| (a, l.len, l.chunk, "live")))
            .collect();
        ranges.sort_unstable_by_key(|r| r.0);
        for w in ranges.windows(2) {
            if w[0].0 + w[0].1 > w[1].0 {
                return Err(format!(
                    "{} block {:#x}+{} overlaps {} block {:#x}",
                    w[0].3, w[0].0, w[0].1, w[1].3, w[1].0
                ));
            }
        }
        let mut covered: BTreeMap<u64, u64> = BTreeMap::new();
        for &(addr, len, chunk, what) in &ranges {
            let Some(chunk) = chunk else { continue };
            let Some(rec) = st.chunks.get(&chunk) else {
                return Err(format!(
                    "{what} block {addr:#x} names unknown chunk {chunk:#x}"
                ));
            };
            if addr < chunk || addr + len > chunk + rec.len {
                return Err(format!(
                    "{what} block {addr:#x}+{len} outside its chunk {chunk:#x}+{}",
                    rec.len
                ));
            }
            *covered.entry(chunk).or_default() += len;
        }
        if st.free.tiles_chunks_exactly() {
            for (&chunk, rec) in &st.chunks {
                let c = covered.get(&chunk).copied().unwrap_or(0);
                if c != rec.len {
                    return Err(format!(
                        "chunk {chunk:#x}: free + live = {c} bytes, chunk is {} bytes",
                        rec.len
                    ));
                }
            }
            let extents = st.free.free_extents();
            for w in extents.windows(2) {
                if w[0].chunk == w[1].chunk
                    && w[0].stream == w[1].stream
                    && w[0].addr + w[0].len == w[1].addr
                {
                    return Err(format!(
                        "free blocks {:#x} and {:#x} of one list and chunk were not coalesced",
                        w[0].addr, w[1].addr
                    ));
                }
            }
        }
        let large: u64 = st
            .live
            .values()
            .filter(|l| l.chunk.is_none())
            .map(|l| l.len)
            .sum();
        let chunk_bytes: u64 = st.chunks.values().map(|c| c.len).sum();
        if chunk_bytes + large != st.reserved_bytes {
            return Err(format!(
                "reserved {} bytes but chunks {} + large objects {}",
                st.reserved_bytes, chunk_bytes, large
            ));
        }
        Ok(())
    }
}

impl MemoryPool for GpuPool {
    fn allocate_with(&self, size: usize, flags: AllocFlags) -> Result<NonNull<u8>, PoolError> {
        self.allocate_with_on(size, flags, self.current_stream())
    }

    /// Always checked: the block map lives on the host, so a foreign or freed pointer is
    /// `InvalidPointer` whatever the config says.
    unsafe fn deallocate(&self, ptr: NonNull<u8>) -> Result<(), PoolError> {
        self.deallocate_checked(ptr)
    }

    unsafe fn reallocate(
        &self,
        ptr: NonNull<u8>,
        new_size: usize,
    ) -> Result<NonNull<u8>, PoolError> {
        self.reallocate_checked(ptr, new_size)
    }

    unsafe fn usable_size(&self, ptr: NonNull<u8>) -> Result<usize, PoolError> {
        self.usable_size_checked(ptr)
    }

    fn deallocate_checked(&self, ptr: NonNull<u8>) -> Result<(), PoolError> {
        self.deallocate_on(ptr, self.current_stream())
    }

    /// Allocate, copy `min(old, new)` bytes device to device on the current stream, free.
    fn reallocate_checked(
        &self,
        ptr: NonNull<u8>,
        new_size: usize,
    ) -> Result<NonNull<u8>, PoolError> {
        let old = self.usable_size_checked(ptr)?;
        let new = self.allocate(new_size)?;
        let bytes = old.min(new_size);
        if bytes > 0 {
            if let Err(e) = self.copy_device_to_device_async(new, ptr, bytes) {
                let _ = self.deallocate_checked(new);
                return Err(e);
            }
        }
        self.deallocate_checked(ptr)?;
        Ok(new)
    }

    fn usable_size_checked(&self, ptr: NonNull<u8>) -> Result<usize, PoolError> {
        let addr = ptr.as_ptr() as usize as u64;
        self.lock()
            .live
            .get(&addr)
            .map(|l| l.len as usize)
            .ok_or_else(|| {
                PoolError::invalid_ptr(&self.name, addr as usize, "not a live block of this pool")
            })
    }

    /// Waits for the device, releases every block, gives chunks back per `return_policy`
    /// (`keep`: none; otherwise all but the initial one) and puts the kept chunks, whole,
    /// in the current stream's list.
    unsafe fn reset(&self) -> Result<(), PoolError> {
        let stream = self.current_stream();
        let mut guard = self.lock();
        let st = &mut *guard;
        st.upstream
            .synchronize()
            .map_err(|e| self.upstream_err(e))?;
        let mut first_err = None;
        let large: Vec<(u64, u64)> = st
            .live
            .iter()
            .filter(|(_, l)| l.chunk.is_none())
            .map(|(&a, l)| (a, l.len))
            .collect();
        for (addr, len) in large {
            st.reserved_bytes -= len;
            self.stats.on_release(len as usize);
            if let Err(e) = st.upstream.free(addr, len) {
                first_err.get_or_insert(self.upstream_err(e));
            }
        }
        st.live.clear();
        st.free.clear();
        let return_grown = self.config.return_policy != ReturnPolicy::Keep;
        let chunks: Vec<(u64, ChunkRec)> = st.chunks.iter().map(|(&a, &c)| (a, c)).collect();
        for (addr, rec) in chunks {
            if return_grown && !rec.initial {
                st.chunks.remove(&addr);
                st.reserved_bytes -= rec.len;
                st.counters.chunks_returned += 1;
                self.stats.on_release(rec.len as usize);
                if let Err(e) = st.upstream.free(addr, rec.len) {
                    first_err.get_or_insert(self.upstream_err(e));
                }
            } else {
                st.free.add_chunk(stream, addr, rec.len);
            }
        }
        if return_grown {
            st.growth_steps = 0;
        }
        self.stats.on_reset();
        first_err.map_or(Ok(()), Err)
    }

    fn stats(&self) -> MemoryStats {
        self.stats.snapshot()
    }

    fn memory_type(&self) -> MemoryType {
        self.memory_type
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn config(&self) -> &PoolConfig {
        &self.config
    }
}

impl Drop for GpuPool {
    fn drop(&mut self) {
        let name = self.name.clone();
        let leak_report = self.config.debug.leak_report;
        let st = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        // Pending stream work may still use the blocks: finish it before freeing.
        let _ = st.upstream.synchronize();
        if leak_report && !st.live.is_empty() {
            let bytes: usize = st.live.values().map(|l| l.requested).sum();
            eprintln!(
                "pool '{name}': {} block(s), {bytes} bytes still live at drop:",
                st.live.len()
            );
            for (addr, l) in st.live.iter().take(20) {
                eprintln!("  {addr:#x}: {} bytes", l.requested);
            }
        }
        for (&addr, l) in st.live.iter().filter(|(_, l)| l.chunk.is_none()) {
            let _ = st.upstream.free(addr, l.len);
        }
        for (&addr, rec) in &st.chunks {
            let _ = st.upstream.free(addr, rec.len);
        }
    }
}

impl std::fmt::Debug for GpuPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuPool")
            .field("name", &self.name)
            .field("memory_type", &self.memory_type)
            .field("alignment", &self.alignment)
            .field("stream", &self.current_stream())
            .finish_non_exhaustive()
    }
}
