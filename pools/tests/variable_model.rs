//! Shadow-model tests of the TLSF allocator (`pools::alloc::variable::Tlsf`).
//!
//! Random programs of alloc / free / resize / reset / pointer probes are decoded from
//! random bytes and run against the allocator and a shadow model (a `BTreeMap` of the
//! live address ranges) that panics on overlap or double free. Every block is filled with
//! its own byte pattern, checked when it is freed or resized, so any overlap or header
//! corruption shows up at once. The heap walker `check_invariants` runs after every
//! operation. Several parameter sets cover both fit policies, alignments 8/16/64, small
//! and large chunks, physically adjacent chunks, size limits (out of memory) and
//! returning empty chunks; each runs with the front cache on and off.

use pools::alloc::variable::Tlsf;
use pools::alloc::{BlockState, Chunk, ChunkSource, Strategy, Upstream};
use pools::{CpuPool, FitPolicy, MemoryPool, PoolConfig, PoolError, ReturnPolicy, StatsCounters};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::alloc::Layout;
use std::collections::{BTreeMap, HashMap};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

/// Where test chunks come from.
#[derive(Debug, Clone, Copy)]
enum SourceKind {
    /// Each chunk its own `std::alloc` allocation, length rounded up to `round_bytes`.
    Heap { round_bytes: usize },
    /// Chunks cut from one arena, so consecutive chunks are physically adjacent: blocks
    /// of different chunks must still never merge.
    Arena { arena_bytes: usize },
}

/// A `ChunkSource` that counts the bytes it has out, so tests can check the upstream's
/// and the allocator's reserved bytes against it.
struct TestChunks {
    kind: SourceKind,
    outstanding_bytes: Arc<AtomicUsize>,
    /// Heap mode: live chunks by address.
    layouts: HashMap<usize, Layout>,
    /// Arena mode: the arena and its free ranges (start -> length), address ordered.
    arena: Option<(NonNull<u8>, Layout)>,
    arena_free: BTreeMap<usize, usize>,
}

// SAFETY: the arena pointer is owned by this source alone.
unsafe impl Send for TestChunks {}

impl TestChunks {
    fn new(kind: SourceKind, outstanding_bytes: Arc<AtomicUsize>) -> Self {
        let mut source = TestChunks {
            kind,
            outstanding_bytes,
            layouts: HashMap::new(),
            arena: None,
            arena_free: BTreeMap::new(),
        };
        if let SourceKind::Arena { arena_bytes } = kind {
            let layout = Layout::from_size_align(arena_bytes, 4096).unwrap();
            // SAFETY: the layout has a non-zero size.
            let ptr = NonNull::new(unsafe { std::alloc::alloc(layout) }).expect("arena");
            source.arena = Some((ptr, layout));
            source.arena_free.insert(ptr.as_ptr() as usize, arena_bytes);
        }
        source
    }
}

impl Drop for TestChunks {
    fn drop(&mut self) {
        if let Some((ptr, layout)) = self.arena {
            // SAFETY: allocated in `new` with this layout; the pool is gone.
            unsafe { std::alloc::dealloc(ptr.as_ptr(), layout) };
        }
    }
}

impl ChunkSource for TestChunks {
    fn alloc_chunk(&mut self, min_bytes: usize, align: usize) -> Option<Chunk> {
        let chunk = match self.kind {
            SourceKind::Heap { round_bytes } => {
                let len = min_bytes.checked_next_multiple_of(round_bytes)?;
                let layout = Layout::from_size_align(len, align).ok()?;
                // SAFETY: `len >= min_bytes > 0`.
                let ptr = NonNull::new(unsafe { std::alloc::alloc(layout) })?;
                self.layouts.insert(ptr.as_ptr() as usize, layout);
                Chunk { ptr, len }
            }
            SourceKind::Arena { .. } => {
                let len = min_bytes.checked_next_multiple_of(4096)?;
                let (&start, &free_len) = self
                    .arena_free
                    .iter()
                    .find(|&(&s, &l)| s % align == 0 && l >= len)?;
                self.arena_free.remove(&start);
                if free_len > len {
                    self.arena_free.insert(start + len, free_len - len);
                }
                let base = self.arena.unwrap().0;
                // SAFETY: `start` lies inside the arena allocation.
                let ptr = unsafe { base.add(start - base.as_ptr() as usize) };
                Chunk { ptr, len }
            }
        };
        self.outstanding_bytes.fetch_add(chunk.len, Relaxed);
        Some(chunk)
    }

    unsafe fn free_chunk(&mut self, chunk: Chunk) {
        self.outstanding_bytes.fetch_sub(chunk.len, Relaxed);
        match self.kind {
            SourceKind::Heap { .. } => {
                let layout = self
                    .layouts
                    .remove(&chunk.addr())
                    .expect("freeing a chunk this source never gave out");
                assert_eq!(layout.size(), chunk.len, "chunk length changed");
                // SAFETY: allocated by `alloc_chunk` with this layout (caller contract).
                unsafe { std::alloc::dealloc(chunk.ptr.as_ptr(), layout) };
            }
            SourceKind::Arena { .. } => {
                let (mut start, mut len) = (chunk.addr(), chunk.len);
                if let Some((&next, &next_len)) = self.arena_free.range(start..).next() {
                    assert!(start + len <= next, "chunk overlaps a free arena range");
                    if start + len == next {
                        self.arena_free.remove(&next);
                        len += next_len;
                    }
                }
                if let Some((&prev, &prev_len)) = self.arena_free.range(..start).next_back() {
                    assert!(
                        prev + prev_len <= start,
                        "chunk overlaps a free arena range"
                    );
                    if prev + prev_len == start {
                        self.arena_free.remove(&prev);
                        start = prev;
                        len += prev_len;
                    }
                }
                self.arena_free.insert(start, len);
            }
        }
    }
}

/// One parameter set of the model test.
#[derive(Debug, Clone, Copy)]
struct Params {
    fit: FitPolicy,
    alignment: usize,
    initial_size_bytes: usize,
    chunk_size_bytes: usize,
    growth_factor: f64,
    max_size_bytes: Option<usize>,
    return_policy: ReturnPolicy,
    source: SourceKind,
    /// Largest request of the size distribution (bytes).
    max_request_bytes: usize,
    /// `Tlsf::set_front_cache`.
    front_cache: bool,
}

impl Params {
    fn config(&self) -> PoolConfig {
        PoolConfig {
            fit: self.fit,
            alignment: self.alignment,
            initial_size_bytes: self.initial_size_bytes,
            chunk_size_bytes: self.chunk_size_bytes,
            growth_factor: self.growth_factor,
            max_size_bytes: self.max_size_bytes,
            return_policy: self.return_policy,
            ..PoolConfig::default_cpu()
        }
    }
}

/// A `Tlsf` over a `TestChunks`, with the handles the checks need.
struct Harness {
    tlsf: Tlsf,
    params: Params,
    stats: Arc<StatsCounters>,
    outstanding_bytes: Arc<AtomicUsize>,
}

impl Harness {
    fn new(params: Params) -> Self {
        let outstanding_bytes = Arc::new(AtomicUsize::new(0));
        let stats = Arc::new(StatsCounters::new());
        let config = params.config();
        config.validate().expect("test config is valid");
        let upstream = Upstream::new(
            Box::new(TestChunks::new(params.source, outstanding_bytes.clone())),
            Arc::from("model"),
            config.chunk_size_bytes,
            config.growth_factor,
            config.max_size_bytes,
            stats.clone(),
        );
        let mut tlsf = Tlsf::new(upstream, &config).expect("initial chunk");
        tlsf.set_front_cache(params.front_cache);
        Harness {
            tlsf,
            params,
            stats,
            outstanding_bytes,
        }
    }

    /// Invariants of the heap and agreement of the three reserved-bytes figures.
    fn check(&self) {
        if let Err(message) = self.tlsf.check_invariants() {
            panic!("heap invariant broken: {message}");
        }
        let reserved = self.tlsf.reserved_bytes();
        assert_eq!(reserved, self.outstanding_bytes.load(Relaxed));
        assert_eq!(reserved as u64, self.stats.snapshot().reserved_bytes);
        if let Some(max) = self.params.max_size_bytes {
            assert!(reserved <= max, "reserved {reserved} over the limit {max}");
        }
    }
}

/// Reads decisions from the random bytes; yields zeros once they run out.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from(self.u8()) | (u16::from(self.u8()) << 8)
    }

    fn size(&mut self, max_request_bytes: usize) -> usize {
        let limit = match self.u8() % 16 {
            0..=9 => 256,
            10..=13 => 4 * KIB,
            14 => 64 * KIB,
            _ => max_request_bytes,
        };
        let raw = (usize::from(self.u16()) << 8) | usize::from(self.u8());
        1 + raw % limit.min(max_request_bytes)
    }

    fn align(&mut self, min_align: usize) -> usize {
        let b = self.u8();
        if b < 192 {
            min_align
        } else {
            (1usize << (3 + b % 10)).max(min_align)
        }
    }
}

/// One live block in the shadow model.
#[derive(Debug, Clone, Copy)]
struct Live {
    usable_bytes: usize,
    pattern: u8,
}

/// The shadow model: live blocks by address, plus the addresses in a vector so a random
/// index picks one.
#[derive(Default)]
struct Shadow {
    blocks: BTreeMap<usize, Live>,
    addrs: Vec<usize>,
    next_pattern: u8,
}

impl Shadow {
    /// Record a new block; panics if it overlaps a live one.
    fn insert(&mut self, addr: usize, usable_bytes: usize) -> u8 {
        self.assert_no_overlap(addr, usable_bytes);
        self.next_pattern = self.next_pattern.wrapping_add(1).max(1);
        let live = Live {
            usable_bytes,
            pattern: self.next_pattern,
        };
        assert!(self.blocks.insert(addr, live).is_none());
        self.addrs.push(addr);
        live.pattern
    }

    fn assert_no_overlap(&self, addr: usize, len: usize) {
        if let Some((&prev, live)) = self.blocks.range(..=addr).next_back() {
            assert!(
                prev + live.usable_bytes <= addr,
                "{addr:#x}+{len} overlaps live {prev:#x}+{}",
                live.usable_bytes
            );
        }
        if let Some((&next, live)) = self.blocks.range(addr + 1..).next() {
            assert!(
                addr + len <= next,
                "{addr:#x}+{len} overlaps live {next:#x}+{}",
                live.usable_bytes
            );
        }
    }

    fn remove(&mut self, index: usize) -> (usize, Live) {
        let addr = self.addrs.swap_remove(index);
        let live = self.blocks.remove(&addr).expect("double free in the model");
        (addr, live)
    }
}

fn fill(addr: usize, len: usize, pattern: u8) {
    // SAFETY: `[addr, addr + len)` is a live block's usable range, owned by the test.
    unsafe { std::ptr::write_bytes(addr as *mut u8, pattern, len) };
}

fn assert_filled(addr: usize, len: usize, pattern: u8) {
    // SAFETY: `[addr, addr + len)` is a live block's usable range, owned by the test.
    let bytes = unsafe { std::slice::from_raw_parts(addr as *const u8, len) };
    if let Some(at) = bytes.iter().position(|&b| b != pattern) {
        panic!(
            "block {addr:#x}: byte {at} is {:#x}, expected {pattern:#x} (overwritten)",
            bytes[at]
        );
    }
}

fn ptr(addr: usize) -> NonNull<u8> {
    NonNull::new(addr as *mut u8).unwrap()
}

/// Runs one program; returns the number of operations executed.
fn run_program(params: Params, program: &[u8]) -> usize {
    let mut h = Harness::new(params);
    let mut shadow = Shadow::default();
    let mut bytes = Bytes(program);
    let mut ops = 0;
    // `reset(false)` keeps every chunk, even where empty chunks would go back on free.
    let mut kept_chunks_on_reset = false;
    while !bytes.0.is_empty() {
        ops += 1;
        match bytes.u8() % 32 {
            0..=11 => {
                let size = bytes.size(params.max_request_bytes);
                let align = bytes.align(params.alignment);
                alloc(&mut h, &mut shadow, size, align);
            }
            12..=13 => {
                let size = bytes.size(params.max_request_bytes);
                let count = 1 + usize::from(bytes.u8() % 24);
                alloc_batch(&mut h, &mut shadow, size, count);
            }
            14..=24 if !shadow.addrs.is_empty() => {
                let index = usize::from(bytes.u16()) % shadow.addrs.len();
                let (addr, live) = shadow.remove(index);
                assert_filled(addr, live.usable_bytes, live.pattern);
                // SAFETY: `addr` is live in the model, so live in the allocator.
                let usable = unsafe { h.tlsf.deallocate(ptr(addr)) };
                assert_eq!(usable, live.usable_bytes);
                assert!(!matches!(
                    h.tlsf.block_state(ptr(addr)),
                    BlockState::Live(_)
                ));
            }
            25..=29 if !shadow.addrs.is_empty() => {
                let index = usize::from(bytes.u16()) % shadow.addrs.len();
                let new_size = bytes.size(params.max_request_bytes);
                resize(&mut h, &mut shadow, index, new_size);
            }
            30 if bytes.u8() % 8 == 0 => {
                let return_chunks = bytes.u8() % 2 == 0;
                h.tlsf.reset(return_chunks);
                kept_chunks_on_reset |= !return_chunks;
                shadow = Shadow::default();
                assert_eq!(h.tlsf.cached_block_count(), 0);
                assert_eq!(h.tlsf.free_block_count(), h.tlsf.chunk_count());
                if return_chunks {
                    assert_eq!(
                        h.tlsf.chunk_count(),
                        usize::from(params.initial_size_bytes > 0)
                    );
                }
            }
            31 if bytes.u8() % 4 == 0 => {
                h.tlsf.flush_cache();
                assert_eq!((h.tlsf.cached_block_count(), h.tlsf.cached_bytes()), (0, 0));
            }
            _ => probe(&h, &shadow, bytes.u16()),
        }
        h.check();
    }
    while let Some(&addr) = shadow.addrs.last() {
        let (_, live) = shadow.remove(shadow.addrs.len() - 1);
        assert_filled(addr, live.usable_bytes, live.pattern);
        // SAFETY: live in the model.
        unsafe { h.tlsf.deallocate(ptr(addr)) };
    }
    h.check();
    if !params.front_cache {
        assert_eq!(
            h.tlsf.cached_block_count(),
            0,
            "the disabled cache holds blocks"
        );
    }
    // Before any flush: the cache must not keep an empty grown chunk.
    if params.return_policy == ReturnPolicy::WhenEmpty && !kept_chunks_on_reset {
        assert!(h.tlsf.chunk_count() <= 1, "empty grown chunks were kept");
    }
    h.tlsf.flush_cache();
    h.check();
    assert_eq!(
        h.tlsf.free_block_count(),
        h.tlsf.chunk_count(),
        "after freeing everything and flushing each chunk must be one free block"
    );
    ops
}

fn alloc(h: &mut Harness, shadow: &mut Shadow, size: usize, align: usize) {
    match h.tlsf.allocate(size, align) {
        Ok(p) => {
            let addr = p.as_ptr() as usize;
            assert_eq!(addr % align, 0, "{addr:#x} not aligned to {align}");
            // SAFETY: just allocated.
            let usable = unsafe { h.tlsf.usable_size(p) };
            assert!(usable >= size, "usable {usable} < requested {size}");
            assert_eq!(h.tlsf.block_state(p), BlockState::Live(usable));
            let pattern = shadow.insert(addr, usable);
            fill(addr, usable, pattern);
        }
        Err(PoolError::OutOfMemory {
            requested_bytes,
            available_bytes,
            limit_bytes,
            ..
        }) => {
            let max = h
                .params
                .max_size_bytes
                .expect("out of memory without a size limit");
            assert_eq!(requested_bytes, size);
            assert_eq!(limit_bytes, max);
            assert_eq!(available_bytes, max - h.tlsf.reserved_bytes());
            // It failed because the chunk it needed did not fit under the limit.
            // (Plus a page: the source may round the chunk up past the limit.)
            assert!(
                available_bytes < size + 2 * align + 256 + 4096,
                "OOM for {size} bytes with {available_bytes} available"
            );
        }
        Err(other) => panic!("allocate({size}, {align}): {other}"),
    }
}

/// Bytes of a block's header (a used block's usable bytes are its size less these).
const HDR_BYTES: usize = 16;

/// `allocate_batch` of `count` blocks of `size` bytes at the allocator's granularity, as
/// a thread cache's refill asks: every block it hands out has exactly the usable size
/// asked for and is checked as `alloc` checks one.
fn alloc_batch(h: &mut Harness, shadow: &mut Shadow, size: usize, count: usize) {
    let granularity = h.tlsf.granularity_bytes();
    let size = size.max(2 * HDR_BYTES);
    let usable = (size + HDR_BYTES).next_multiple_of(granularity) - HDR_BYTES;
    let mut out = vec![std::ptr::null_mut(); count];
    let taken = h.tlsf.allocate_batch(size, granularity, usable, &mut out);
    assert!(taken <= count);
    for &p in &out[..taken] {
        let p = NonNull::new(p).expect("a batch block is non-null");
        let addr = p.as_ptr() as usize;
        assert_eq!(
            addr % granularity,
            0,
            "{addr:#x} not aligned to {granularity}"
        );
        // SAFETY: just allocated.
        assert_eq!(unsafe { h.tlsf.usable_size(p) }, usable);
        assert_eq!(h.tlsf.block_state(p), BlockState::Live(usable));
        let pattern = shadow.insert(addr, usable);
        fill(addr, usable, pattern);
    }
    if taken < count && h.params.max_size_bytes.is_none() {
        // Without a byte limit a batch stops early only at a block of another usable
        // size (a remainder absorbed), which then went back: the allocator still
        // serves the size.
        let mut one = [std::ptr::null_mut()];
        let again = h.tlsf.allocate_batch(size, granularity, usable, &mut one);
        if again == 1 {
            let p = NonNull::new(one[0]).expect("non-null");
            // SAFETY: just allocated.
            assert_eq!(unsafe { h.tlsf.usable_size(p) }, usable);
            let pattern = shadow.insert(p.as_ptr() as usize, usable);
            fill(p.as_ptr() as usize, usable, pattern);
        }
    }
}

fn resize(h: &mut Harness, shadow: &mut Shadow, index: usize, new_size: usize) {
    let addr = shadow.addrs[index];
    let live = shadow.blocks[&addr];
    // SAFETY: `addr` is live in the model.
    if unsafe { h.tlsf.resize_in_place(ptr(addr), new_size) } {
        // SAFETY: still live.
        let usable = unsafe { h.tlsf.usable_size(ptr(addr)) };
        assert!(usable >= new_size, "resized to {usable} < {new_size}");
        assert_filled(addr, live.usable_bytes.min(usable), live.pattern);
        shadow.blocks.remove(&addr);
        shadow.assert_no_overlap(addr, usable);
        shadow.blocks.insert(
            addr,
            Live {
                usable_bytes: usable,
                pattern: live.pattern,
            },
        );
        fill(addr, usable, live.pattern);
        return;
    }
    // Not in place: allocate, copy, free, as `MemoryPool::reallocate` does.
    let Ok(new) = h.tlsf.allocate(new_size, h.params.alignment) else {
        return;
    };
    assert_filled(addr, live.usable_bytes, live.pattern);
    shadow.remove(index);
    // SAFETY: just allocated.
    let usable = unsafe { h.tlsf.usable_size(new) };
    let pattern = shadow.insert(new.as_ptr() as usize, usable);
    fill(new.as_ptr() as usize, usable, pattern);
    // SAFETY: live in the allocator, removed from the model above.
    unsafe { h.tlsf.deallocate(ptr(addr)) };
}

/// Pointer probes: interior pointers are not live blocks, foreign pointers are foreign.
fn probe(h: &Harness, shadow: &Shadow, pick: u16) {
    let on_stack = 0u64;
    let foreign = NonNull::from(&on_stack).cast::<u8>();
    assert_eq!(h.tlsf.block_state(foreign), BlockState::Foreign);
    if shadow.addrs.is_empty() {
        return;
    }
    let addr = shadow.addrs[usize::from(pick) % shadow.addrs.len()];
    let live = shadow.blocks[&addr];
    assert_eq!(
        h.tlsf.block_state(ptr(addr)),
        BlockState::Live(live.usable_bytes)
    );
    if live.usable_bytes > 16 {
        assert_eq!(h.tlsf.block_state(ptr(addr + 16)), BlockState::NotLive);
    }
}

/// Runs `cases` random programs of one parameter set; returns the operations executed.
fn run_model(params: Params, cases: u32) -> usize {
    let ops = AtomicUsize::new(0);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let programs = proptest::collection::vec(any::<u8>(), 512..2048);
    let result = runner.run(&programs, |program| {
        ops.fetch_add(run_program(params, &program), Relaxed);
        Ok(())
    });
    if let Err(err) = result {
        panic!("{params:?}: {err}");
    }
    let ops = ops.into_inner();
    eprintln!("{params:?}: {ops} operations");
    ops
}

/// Each parameter set runs at least this many operations, so the eight sets together run
/// over 10^5 (counting the shrinking runs of a failure too, but those end in a panic).
const MIN_OPS_PER_SET: usize = 13_000;
const CASES: u32 = 64;

fn base() -> Params {
    Params {
        fit: FitPolicy::BestFit,
        alignment: 16,
        initial_size_bytes: 64 * KIB,
        chunk_size_bytes: 64 * KIB,
        growth_factor: 2.0,
        max_size_bytes: None,
        return_policy: ReturnPolicy::OnReset,
        source: SourceKind::Heap { round_bytes: 4096 },
        max_request_bytes: 128 * KIB,
        front_cache: true,
    }
}

/// Runs a parameter set with the front cache on, then off.
fn model(params: Params) {
    for front_cache in [true, false] {
        let ops = run_model(
            Params {
                front_cache,
                ..params
            },
            CASES,
        );
        assert!(ops >= MIN_OPS_PER_SET, "only {ops} operations ran");
    }
}

#[test]
fn model_best_fit_align16() {
    model(base());
}

#[test]
fn model_first_fit_align16() {
    model(Params {
        fit: FitPolicy::FirstFit,
        ..base()
    });
}

#[test]
fn model_best_fit_align8_small_odd_chunks() {
    model(Params {
        alignment: 8,
        initial_size_bytes: 0,
        chunk_size_bytes: 4 * KIB,
        growth_factor: 1.0,
        source: SourceKind::Heap { round_bytes: 8 },
        max_request_bytes: 16 * KIB,
        ..base()
    });
}

#[test]
fn model_first_fit_align64_adjacent_chunks_return_empty() {
    model(Params {
        fit: FitPolicy::FirstFit,
        alignment: 64,
        initial_size_bytes: 16 * KIB,
        chunk_size_bytes: 16 * KIB,
        growth_factor: 1.5,
        max_size_bytes: Some(4 * MIB),
        return_policy: ReturnPolicy::WhenEmpty,
        source: SourceKind::Arena {
            arena_bytes: 12 * MIB,
        },
        ..base()
    });
}

#[test]
fn model_best_fit_align64_large_chunks_limited() {
    model(Params {
        alignment: 64,
        initial_size_bytes: MIB,
        chunk_size_bytes: MIB,
        max_size_bytes: Some(2 * MIB),
        max_request_bytes: 512 * KIB,
        ..base()
    });
}

#[test]
fn model_first_fit_align8_tight_limit_adjacent_chunks() {
    model(Params {
        fit: FitPolicy::FirstFit,
        alignment: 8,
        initial_size_bytes: 32 * KIB,
        chunk_size_bytes: 8 * KIB,
        growth_factor: 1.0,
        max_size_bytes: Some(160 * KIB),
        source: SourceKind::Arena {
            arena_bytes: 512 * KIB,
        },
        max_request_bytes: 48 * KIB,
        ..base()
    });
}

#[test]
fn model_best_fit_align16_return_empty_limited() {
    model(Params {
        initial_size_bytes: 4 * KIB,
        chunk_size_bytes: 4 * KIB,
        max_size_bytes: Some(512 * KIB),
        return_policy: ReturnPolicy::WhenEmpty,
        source: SourceKind::Heap { round_bytes: 1 },
        max_request_bytes: 32 * KIB,
        ..base()
    });
}

#[test]
fn model_first_fit_align16_no_initial_chunk_growth() {
    model(Params {
        fit: FitPolicy::FirstFit,
        initial_size_bytes: 0,
        chunk_size_bytes: 8 * KIB,
        growth_factor: 1.25,
        max_size_bytes: Some(32 * MIB),
        source: SourceKind::Arena {
            arena_bytes: 64 * MIB,
        },
        max_request_bytes: 64 * KIB,
        ..base()
    });
}

#[test]
fn out_of_memory_reports_numbers_and_recovers() {
    let params = Params {
        initial_size_bytes: 64 * KIB,
        chunk_size_bytes: 64 * KIB,
        growth_factor: 1.0,
        max_size_bytes: Some(128 * KIB),
        ..base()
    };
    let mut h = Harness::new(params);
    let mut blocks = Vec::new();
    let err = loop {
        match h.tlsf.allocate(1000, 16) {
            Ok(p) => blocks.push(p),
            Err(err) => break err,
        }
        assert!(blocks.len() < 1000, "never ran out of memory");
    };
    assert_eq!(h.tlsf.reserved_bytes(), 128 * KIB);
    match err {
        PoolError::OutOfMemory {
            requested_bytes,
            available_bytes,
            limit_bytes,
            ref pool,
        } => {
            assert_eq!(
                (requested_bytes, available_bytes, limit_bytes),
                (1000, 0, 128 * KIB)
            );
            assert_eq!(pool, "model");
            assert!(err.to_string().contains("requested 1000 bytes"), "{err}");
        }
        other => panic!("expected OutOfMemory, got {other}"),
    }
    h.check();
    // Requests no chunk can hold fail the same way, without touching the heap.
    assert!(matches!(
        h.tlsf.allocate(usize::MAX / 2, 16),
        Err(PoolError::OutOfMemory { .. })
    ));
    assert!(matches!(
        h.tlsf.allocate(16, 24),
        Err(PoolError::InvalidOperation { .. })
    ));
    // SAFETY: live blocks of this allocator.
    unsafe { h.tlsf.deallocate(blocks.pop().unwrap()) };
    let again = h
        .tlsf
        .allocate(1000, 16)
        .expect("allocation works again after a free");
    blocks.push(again);
    for p in blocks {
        // SAFETY: live blocks of this allocator.
        unsafe { h.tlsf.deallocate(p) };
    }
    h.tlsf.flush_cache();
    h.check();
    assert_eq!(h.tlsf.free_block_count(), h.tlsf.chunk_count());
    assert_eq!(h.tlsf.chunk_count(), 2);
}

#[test]
fn reset_returns_grown_chunks_and_keeps_the_initial_one() {
    let mut h = Harness::new(Params {
        initial_size_bytes: 8 * KIB,
        chunk_size_bytes: 8 * KIB,
        ..base()
    });
    for _ in 0..64 {
        h.tlsf.allocate(1024, 16).unwrap();
    }
    assert!(h.tlsf.chunk_count() > 2);
    h.tlsf.reset(false);
    h.check();
    assert!(h.tlsf.chunk_count() > 2);
    assert_eq!(h.tlsf.free_block_count(), h.tlsf.chunk_count());
    h.tlsf.reset(true);
    h.check();
    assert_eq!(h.tlsf.chunk_count(), 1);
    assert_eq!(h.tlsf.free_block_count(), 1);
    assert_eq!(h.tlsf.reserved_bytes(), 8 * KIB);
}

#[test]
fn resize_in_place_grows_into_the_next_free_block_and_shrinks() {
    let mut h = Harness::new(base());
    let a = h.tlsf.allocate(100, 16).unwrap();
    let b = h.tlsf.allocate(100, 16).unwrap();
    let c = h.tlsf.allocate(100, 16).unwrap();
    // SAFETY (all blocks below): live blocks of this allocator.
    // SAFETY: every block used below is live in `h.tlsf` and freed once.
    unsafe {
        // `a` is hemmed in by `b`: no growth.
        assert!(!h.tlsf.resize_in_place(a, 500));
        h.tlsf.deallocate(b);
        // A cached `b` is still used to its neighbours: flush it to free it for real.
        h.tlsf.flush_cache();
        assert!(h.tlsf.resize_in_place(a, 200));
        assert!(h.tlsf.usable_size(a) >= 200);
        h.check();
        assert!(h.tlsf.resize_in_place(a, 16));
        assert!(h.tlsf.usable_size(a) < 100);
        h.check();
        // `c` grows into the rest of the chunk.
        assert!(h.tlsf.resize_in_place(c, 32 * KIB));
        h.check();
        h.tlsf.deallocate(a);
        h.tlsf.deallocate(c);
    }
    h.tlsf.flush_cache();
    h.check();
    assert_eq!(h.tlsf.free_block_count(), 1);
}

#[test]
fn high_alignments_are_honoured() {
    let mut h = Harness::new(base());
    let mut blocks = Vec::new();
    for log2 in 3..=12 {
        for size in [1, 100, 5000] {
            let align = 1usize << log2;
            let p = h.tlsf.allocate(size, align).unwrap();
            assert_eq!(p.as_ptr() as usize % align, 0);
            blocks.push(p);
            h.check();
        }
    }
    for p in blocks {
        // SAFETY: live blocks of this allocator.
        unsafe { h.tlsf.deallocate(p) };
    }
    h.tlsf.flush_cache();
    h.check();
    assert_eq!(h.tlsf.free_block_count(), h.tlsf.chunk_count());
}

#[test]
fn best_fit_picks_the_smallest_fitting_block_of_the_list() {
    // Blocks of 2096 and 2080 bytes share the list of 2048..2112-byte blocks. A request
    // needing a 2080-byte block takes the exact one under best fit and the list head (the
    // 2096-byte block, freed last) under first fit.
    for (fit, expect_smaller) in [(FitPolicy::BestFit, true), (FitPolicy::FirstFit, false)] {
        let mut h = Harness::new(Params { fit, ..base() });
        // The lists' policy alone: the front cache would serve the exact size first.
        h.tlsf.set_front_cache(false);
        let mut take = |size| h.tlsf.allocate(size, 16).unwrap();
        // Payload sizes giving blocks of 2096 and 2080 bytes, separated by guards.
        let big = take(2096 - 16);
        let _guard1 = take(16);
        let small = take(2080 - 16);
        let _guard2 = take(16);
        // SAFETY: live blocks; freeing `small` first puts `big` at the list head.
        unsafe {
            h.tlsf.deallocate(small);
            h.tlsf.deallocate(big);
        }
        h.check();
        let p = h.tlsf.allocate(2070 - 16, 16).unwrap();
        assert_eq!(p == small, expect_smaller, "{fit:?}");
        assert_eq!(p == big, !expect_smaller, "{fit:?}");
    }
}

#[test]
fn freed_small_blocks_are_cached_not_live_and_reused_first() {
    let mut h = Harness::new(base());
    let a = h.tlsf.allocate(100, 16).unwrap();
    let _guard = h.tlsf.allocate(100, 16).unwrap();
    // SAFETY: live block of this allocator.
    let usable = unsafe { h.tlsf.deallocate(a) };
    h.check();
    assert_eq!(h.tlsf.cached_block_count(), 1);
    assert_eq!(h.tlsf.cached_bytes(), usable + 16);
    // Freed, though still used as far as the free lists are concerned.
    assert_eq!(h.tlsf.block_state(a), BlockState::NotLive);
    // The same block size comes back from the cache: last freed, first served.
    let again = h.tlsf.allocate(usable, 16).unwrap();
    assert_eq!(again, a);
    assert_eq!(h.tlsf.block_state(a), BlockState::Live(usable));
    assert_eq!(h.tlsf.cached_block_count(), 0);
    h.check();
}

#[test]
fn front_cache_is_bounded_without_a_flush() {
    let mut h = Harness::new(Params {
        initial_size_bytes: 16 * MIB,
        ..base()
    });
    // One size (128-byte blocks): at most 32 of them are cached, the rest coalesce.
    let blocks: Vec<_> = (0..100)
        .map(|_| h.tlsf.allocate(100, 16).unwrap())
        .collect();
    for &p in &blocks {
        // SAFETY: live blocks of this allocator.
        unsafe { h.tlsf.deallocate(p) };
    }
    h.check();
    assert_eq!(h.tlsf.cached_block_count(), 32);
    // Every cached size (payloads of 16 B to 4 KiB), more blocks each than a bin holds:
    // each bin fills to exactly its bound, 32 blocks and at most 64 KiB (the walker
    // checks the per-size bound too). Larger blocks are not cached.
    let mut blocks = Vec::new();
    for size in (16..=4096 + 64).step_by(16) {
        for _ in 0..40 {
            blocks.push(h.tlsf.allocate(size, 16).unwrap());
        }
    }
    for p in blocks {
        // SAFETY: live blocks of this allocator.
        unsafe { h.tlsf.deallocate(p) };
    }
    h.check();
    let bound: usize = (16..=4096)
        .step_by(16)
        .map(|size| {
            let block = size + 16;
            (64 * KIB / block).clamp(1, 32) * block
        })
        .sum();
    assert_eq!(h.tlsf.cached_bytes(), bound);
    assert!(h.tlsf.free_block_count() > h.tlsf.chunk_count());
    h.tlsf.flush_cache();
    h.check();
    assert_eq!((h.tlsf.cached_block_count(), h.tlsf.cached_bytes()), (0, 0));
    assert_eq!(h.tlsf.free_block_count(), h.tlsf.chunk_count());
}

#[test]
fn disabled_front_cache_frees_to_the_lists_at_once() {
    let mut h = Harness::new(base());
    let a = h.tlsf.allocate(100, 16).unwrap();
    // SAFETY: live block of this allocator.
    unsafe { h.tlsf.deallocate(a) };
    assert_eq!(h.tlsf.cached_block_count(), 1);
    // Turning the cache off flushes it.
    h.tlsf.set_front_cache(false);
    assert_eq!(h.tlsf.cached_block_count(), 0);
    assert_eq!(h.tlsf.free_block_count(), h.tlsf.chunk_count());
    let b = h.tlsf.allocate(100, 16).unwrap();
    // SAFETY: live block of this allocator.
    unsafe { h.tlsf.deallocate(b) };
    h.check();
    assert_eq!(h.tlsf.cached_block_count(), 0);
    assert_eq!(h.tlsf.free_block_count(), h.tlsf.chunk_count());
    h.tlsf.set_front_cache(true);
    let c = h.tlsf.allocate(100, 16).unwrap();
    // SAFETY: live block of this allocator.
    unsafe { h.tlsf.deallocate(c) };
    assert_eq!(h.tlsf.cached_block_count(), 1);
    h.check();
}

#[test]
fn cached_blocks_never_cause_growth_or_out_of_memory() {
    // No room to grow: a large request after many small frees must be served by
    // flushing the cache, whose blocks coalesce with the rest of the chunk.
    let mut h = Harness::new(Params {
        initial_size_bytes: 64 * KIB,
        chunk_size_bytes: 64 * KIB,
        max_size_bytes: Some(64 * KIB),
        ..base()
    });
    let small: Vec<_> = (0..32)
        .flat_map(|_| [48, 112, 496, 1008])
        .map(|size| h.tlsf.allocate(size, 16).unwrap())
        .collect();
    for p in small {
        // SAFETY: live blocks of this allocator.
        unsafe { h.tlsf.deallocate(p) };
    }
    assert!(
        h.tlsf.cached_bytes() >= 8 * KIB,
        "{}",
        h.tlsf.cached_bytes()
    );
    let big = h
        .tlsf
        .allocate(48 * KIB, 16)
        .expect("the cache was flushed to serve the request");
    assert_eq!(h.tlsf.chunk_count(), 1);
    assert_eq!(h.tlsf.cached_block_count(), 0);
    h.check();
    // SAFETY: live block of this allocator.
    unsafe { h.tlsf.deallocate(big) };
    h.check();
}

#[test]
fn when_empty_grown_chunks_go_back_although_the_cache_is_on() {
    let mut h = Harness::new(Params {
        initial_size_bytes: 4 * KIB,
        chunk_size_bytes: 4 * KIB,
        growth_factor: 1.0,
        return_policy: ReturnPolicy::WhenEmpty,
        ..base()
    });
    let blocks: Vec<_> = (0..200).map(|_| h.tlsf.allocate(48, 16).unwrap()).collect();
    assert!(h.tlsf.chunk_count() > 2);
    // Newest first: the grown chunks' blocks reach the cache before the initial chunk's.
    for p in blocks.into_iter().rev() {
        // SAFETY: live blocks of this allocator.
        unsafe { h.tlsf.deallocate(p) };
        h.check();
    }
    // Without a flush: only blocks of the initial chunk were cached.
    assert_eq!(h.tlsf.chunk_count(), 1);
    assert!(h.tlsf.cached_block_count() > 0);
    h.tlsf.flush_cache();
    h.check();
    assert_eq!(h.tlsf.free_block_count(), 1);
}

#[test]
fn checked_pool_catches_a_double_free_of_a_cached_block() {
    let mut config = PoolConfig::debug_cpu();
    config.allocator = pools::AllocatorKind::VariableSize;
    // Leave the detection to `block_state` alone (the live tracker would catch it first).
    config.debug.track_live = false;
    config.debug.leak_report = false;
    let pool = CpuPool::new("double-free", config).unwrap();
    let _guard = pool.allocate(64).unwrap();
    let p = pool.allocate(64).unwrap();
    // SAFETY: a live block of this pool, freed once (checked pools get bad ones on purpose).
    unsafe { pool.deallocate(p) }.unwrap();
    assert!(matches!(
        // SAFETY: a live block of this pool, freed once (checked pools get bad ones on purpose).
        unsafe { pool.deallocate(p) },
        Err(PoolError::InvalidPointer { .. })
    ));
    // The cache is intact: the next two blocks of that size are distinct.
    let a = pool.allocate(64).unwrap();
    let b = pool.allocate(64).unwrap();
    assert_ne!(a, b);
    // SAFETY: a live block of this pool, freed once (checked pools get bad ones on purpose).
    unsafe { pool.deallocate(a) }.unwrap();
    // SAFETY: a live block of this pool, freed once (checked pools get bad ones on purpose).
    unsafe { pool.deallocate(b) }.unwrap();
}

/// Quick private comparison with mimalloc and glibc: `cargo test -p pools --release --test
/// variable_model -- --ignored --nocapture` (the dev profile has debug assertions on).
/// Thread CPU time, 64 live blocks of 16..1016 bytes, every subject in the same run.
#[test]
#[ignore]
fn alloc_free_pairs_vs_mimalloc() {
    /// This thread's CPU time in ns: the machine is shared, and wall time counts the
    /// time other processes ran.
    fn cpu_ns() -> u64 {
        let mut t = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `t` is a valid timespec to write; the clock id is a constant.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
        t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
    }
    const ROUNDS: usize = 2_000_000;
    let sizes: Vec<usize> = (0..1024).map(|i| 16 + (i * 7919) % 1000).collect();
    /// ns per alloc+free pair; `alloc` and `free` must pair up (`free` takes null).
    fn time_pairs<S>(
        sizes: &[usize],
        state: &mut S,
        alloc: impl Fn(&mut S, usize) -> *mut u8,
        free: impl Fn(&mut S, *mut u8),
    ) -> f64 {
        let mut window = [std::ptr::null_mut::<u8>(); 64];
        let start = cpu_ns();
        for i in 0..ROUNDS {
            let slot = &mut window[i % 64];
            free(state, *slot);
            *slot = alloc(state, sizes[i % 1024]);
        }
        let ns = (cpu_ns() - start) as f64 / ROUNDS as f64;
        window.into_iter().for_each(|p| free(state, p));
        ns
    }
    let mut tlsf_ns = [0.0; 2];
    for (front_cache, ns) in [true, false].into_iter().zip(&mut tlsf_ns) {
        let mut h = Harness::new(Params {
            initial_size_bytes: 16 * MIB,
            front_cache,
            ..base()
        });
        *ns = time_pairs(
            &sizes,
            &mut h.tlsf,
            |tlsf, size| tlsf.allocate(size, 16).unwrap().as_ptr(),
            |tlsf, p| {
                if let Some(p) = NonNull::new(p) {
                    // SAFETY: a live block of this allocator, freed once.
                    unsafe { tlsf.deallocate(p) };
                }
            },
        );
        h.check();
        eprintln!(
            "front cache {front_cache}: {} free blocks, {} cached blocks",
            h.tlsf.free_block_count(),
            h.tlsf.cached_block_count()
        );
    }
    let mi_ns = time_pairs(
        &sizes,
        &mut (),
        // SAFETY: `mi_malloc` has no precondition.
        |_, size| unsafe { libmimalloc_sys::mi_malloc(size).cast() },
        // SAFETY: `p` is null or a live mimalloc block, freed once.
        |_, p| unsafe { libmimalloc_sys::mi_free(p.cast()) },
    );
    let glibc_ns = time_pairs(
        &sizes,
        &mut (),
        // SAFETY: `malloc` has no precondition.
        |_, size| unsafe { libc::malloc(size).cast() },
        // SAFETY: `p` is null or a live glibc block, freed once.
        |_, p| unsafe { libc::free(p.cast()) },
    );
    eprintln!(
        "alloc+free pair: tlsf {:.1} ns ({:.2}x mimalloc), tlsf without front cache {:.1} ns, \
         mimalloc {mi_ns:.1} ns, glibc {glibc_ns:.1} ns",
        tlsf_ns[0],
        tlsf_ns[0] / mi_ns,
        tlsf_ns[1]
    );
}
