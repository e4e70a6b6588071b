//! Shadow-model tests of the lock-free allocator (`pools::alloc::lockfree`) on one thread.
//!
//! Random programs of alloc / free / double free / probe / reset run against the allocator
//! and a shadow model (a `BTreeMap` of live address ranges) that panics on overlap or
//! double free. Every block is filled with its own byte pattern, checked when freed, and
//! every pointer is checked for its alignment. Parameter sets cover the class shapes,
//! pointer checking on and off, alignments from 16 to 64 KiB, large objects and resets.
//! The default run executes well over 10^5 operations.

use pools::alloc::lockfree::LockFreeAllocator;
use pools::alloc::BlockState;
use pools::{PoolConfig, SizeClasses, StatsCounters};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::collections::BTreeMap;
use std::ptr::NonNull;
use std::sync::Arc;

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

#[derive(Debug, Clone, Copy)]
enum Op {
    Alloc {
        size: usize,
        align: usize,
    },
    Free {
        pick: usize,
    },
    /// Free a block already freed (only with checking: must be ignored and return 0).
    DoubleFree {
        pick: usize,
    },
    /// `block_state` of a live block's interior and of a foreign address.
    Probe {
        pick: usize,
    },
    Reset {
        return_chunks: bool,
    },
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let size = prop_oneof![
        8 => 0usize..=256,
        4 => 257usize..=4 * KIB,
        2 => 4 * KIB + 1..=40 * KIB,
        1 => 40 * KIB + 1..=300 * KIB,
    ];
    let align = prop_oneof![
        12 => Just(0usize),
        2 => (5u32..=8).prop_map(|s| 1usize << s),
        1 => (9u32..=12).prop_map(|s| 1usize << s),
        1 => (13u32..=16).prop_map(|s| 1usize << s),
    ];
    prop_oneof![
        10 => (size, align).prop_map(|(size, align)| Op::Alloc { size, align }),
        8 => any::<usize>().prop_map(|pick| Op::Free { pick }),
        1 => any::<usize>().prop_map(|pick| Op::DoubleFree { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Probe { pick }),
        // Rare: one reset per ~2000 operations.
        1 => (0u32..100, any::<bool>()).prop_map(|(n, r)| if n == 0 {
            Op::Reset { return_chunks: r }
        } else {
            Op::Probe { pick: n as usize }
        }),
    ]
}

/// A live block in the shadow: end address, requested size, fill byte.
#[derive(Debug, Clone, Copy)]
struct Live {
    end: usize,
    size: usize,
    fill: u8,
}

/// Bytes of a block filled and checked: all of a small block, the ends of a big one.
fn pattern_ranges(size: usize) -> [(usize, usize); 2] {
    if size <= 8 * KIB {
        [(0, size), (size, size)]
    } else {
        [(0, 2 * KIB), (size - 2 * KIB, size)]
    }
}

fn fill(ptr: NonNull<u8>, size: usize, byte: u8) {
    for (from, to) in pattern_ranges(size) {
        // SAFETY: the block has at least `size` usable bytes (checked before).
        unsafe { ptr.as_ptr().add(from).write_bytes(byte, to - from) };
    }
}

fn check_fill(ptr: NonNull<u8>, size: usize, byte: u8) {
    for (from, to) in pattern_ranges(size) {
        // SAFETY: a live block of at least `size` bytes.
        let bytes = unsafe { std::slice::from_raw_parts(ptr.as_ptr().add(from), to - from) };
        if let Some(i) = bytes.iter().position(|&b| b != byte) {
            panic!(
                "block {ptr:p}: byte {} is {:#x}, expected {byte:#x}",
                from + i,
                bytes[i]
            );
        }
    }
}

struct Harness {
    alloc: LockFreeAllocator,
    live: BTreeMap<usize, Live>,
    /// Recently freed addresses (for double-free probes).
    freed: Vec<usize>,
    checking: bool,
    min_align: usize,
    next_fill: u8,
    max_bytes: Option<usize>,
}

impl Harness {
    fn new(config: &PoolConfig) -> Self {
        let alloc =
            LockFreeAllocator::new(Arc::from("model"), config, Arc::new(StatsCounters::new()))
                .expect("valid config");
        Harness {
            alloc,
            live: BTreeMap::new(),
            freed: Vec::new(),
            checking: config.debug.check_pointers,
            min_align: config.alignment.max(16),
            next_fill: 1,
            max_bytes: config.max_size_bytes,
        }
    }

    fn pick(&self, pick: usize) -> Option<(usize, Live)> {
        if self.live.is_empty() {
            return None;
        }
        let n = pick % self.live.len();
        self.live.iter().nth(n).map(|(a, l)| (*a, *l))
    }

    fn run(&mut self, op: Op) {
        match op {
            Op::Alloc { size, align } => self.alloc(size, align),
            Op::Free { pick } => {
                if let Some((addr, live)) = self.pick(pick) {
                    self.free(addr, live);
                }
            }
            Op::DoubleFree { pick } => {
                if self.checking && !self.freed.is_empty() {
                    let addr = self.freed[pick % self.freed.len()];
                    if !self.live.contains_key(&addr) {
                        let ptr = NonNull::new(addr as *mut u8).unwrap();
                        let state = self.alloc.block_state(ptr);
                        assert!(
                            !matches!(state, BlockState::Live(_)),
                            "freed block {addr:#x} reported {state:?}"
                        );
                        // SAFETY: checking is on: a block that is not live is ignored.
                        let usable = unsafe { self.alloc.deallocate(ptr) };
                        assert_eq!(usable, 0, "double free of {addr:#x} was not ignored");
                    }
                }
            }
            Op::Probe { pick } => {
                if let Some((addr, live)) = self.pick(pick) {
                    let ptr = NonNull::new(addr as *mut u8).unwrap();
                    // SAFETY: a live block.
                    let usable = unsafe { self.alloc.usable_size(ptr) };
                    assert_eq!(self.alloc.block_state(ptr), BlockState::Live(usable));
                    if live.size > 1 {
                        let inner = NonNull::new((addr + 1) as *mut u8).unwrap();
                        assert_ne!(self.alloc.block_state(inner), BlockState::Live(usable));
                    }
                }
                let stack_byte = 0u8;
                let foreign = NonNull::from(&stack_byte).cast::<u8>();
                assert_eq!(self.alloc.block_state(foreign), BlockState::Foreign);
            }
            Op::Reset { return_chunks } => {
                self.alloc.reset(return_chunks);
                self.live.clear();
                self.freed.clear();
            }
        }
        if let Some(max) = self.max_bytes {
            assert!(
                self.alloc.reserved_bytes() <= max,
                "reserved above the limit"
            );
        }
    }

    fn alloc(&mut self, size: usize, align: usize) {
        let ptr = match self.alloc.allocate(size, align) {
            Ok(ptr) => ptr,
            Err(pools::PoolError::OutOfMemory { .. }) if self.max_bytes.is_some() => return,
            // The documented limit: alignments above half a slab (64 KiB slabs here).
            Err(pools::PoolError::InvalidOperation { .. }) if align > 32 * KIB => return,
            Err(e) => panic!("allocate({size}, {align}): {e}"),
        };
        let addr = ptr.as_ptr() as usize;
        let want_align = align.max(self.min_align);
        assert_eq!(
            addr % want_align,
            0,
            "{addr:#x} not aligned to {want_align}"
        );
        // SAFETY: just allocated.
        let usable = unsafe { self.alloc.usable_size(ptr) };
        assert!(usable >= size, "usable {usable} < requested {size}");
        let end = addr + size.max(1);
        if let Some((&prev, prev_live)) = self.live.range(..=addr).next_back() {
            assert!(
                prev_live.end <= addr,
                "{addr:#x} overlaps live block {prev:#x}"
            );
        }
        if let Some((&next, _)) = self.live.range(addr..).next() {
            assert!(
                end <= next,
                "{addr:#x}+{size} overlaps live block {next:#x}"
            );
        }
        assert_eq!(self.alloc.block_state(ptr), BlockState::Live(usable));
        let fill_byte = self.next_fill;
        self.next_fill = self.next_fill.wrapping_add(1).max(1);
        fill(ptr, size, fill_byte);
        self.live.insert(
            addr,
            Live {
                end,
                size,
                fill: fill_byte,
            },
        );
        self.freed.retain(|&a| a != addr);
    }

    fn free(&mut self, addr: usize, live: Live) {
        let ptr = NonNull::new(addr as *mut u8).unwrap();
        check_fill(ptr, live.size, live.fill);
        // SAFETY: a live block of this allocator.
        let usable_before = unsafe { self.alloc.usable_size(ptr) };
        // SAFETY: a live block of this allocator, not used after.
        let usable = unsafe { self.alloc.deallocate(ptr) };
        assert_eq!(usable, usable_before);
        self.live.remove(&addr);
        if self.freed.len() >= 64 {
            self.freed.swap_remove(0);
        }
        self.freed.push(addr);
        if self.checking {
            assert!(!matches!(self.alloc.block_state(ptr), BlockState::Live(_)));
        }
    }

    fn drain(&mut self) {
        while let Some((&addr, &live)) = self.live.iter().next() {
            self.free(addr, live);
        }
    }
}

fn config(classes_per_doubling: u32, max_class_bytes: usize, checking: bool) -> PoolConfig {
    let mut config = PoolConfig::high_performance_cpu();
    config.initial_size_bytes = 0;
    config.chunk_size_bytes = MIB;
    config.size_classes = SizeClasses {
        classes_per_doubling,
        max_class_bytes,
    };
    config.debug.check_pointers = checking;
    config
}

fn run_programs(config: PoolConfig, cases: u32, ops: usize) {
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&prop::collection::vec(op_strategy(), ops), |program| {
            let mut harness = Harness::new(&config);
            for op in program {
                harness.run(op);
            }
            harness.drain();
            Ok(())
        })
        .unwrap();
}

#[test]
fn model_default_classes_checked() {
    run_programs(config(4, 32 * KIB, true), 16, 2500);
}

#[test]
fn model_default_classes_unchecked() {
    run_programs(config(4, 32 * KIB, false), 16, 2500);
}

#[test]
fn model_coarse_classes_small_slabs() {
    // max class 4 KiB: 64 KiB slabs, so 40 KiB+ requests take the large path.
    run_programs(config(1, 4 * KIB, true), 8, 2500);
}

#[test]
fn model_fine_classes_big_alignment() {
    let mut config = config(8, 64 * KIB, true);
    config.alignment = 64;
    run_programs(config, 8, 2500);
}

#[test]
fn model_under_a_size_limit() {
    let mut config = config(4, 16 * KIB, true);
    config.max_size_bytes = Some(3 * MIB);
    config.chunk_size_bytes = 256 * KIB;
    run_programs(config, 8, 2500);
}

/// Blocks freed on one thread are reused by the next allocation of the same class.
#[test]
fn local_free_is_reused_lifo() {
    let h = Harness::new(&config(4, 32 * KIB, false));
    let a = h.alloc.allocate(100, 16).unwrap();
    // SAFETY: live block.
    unsafe { h.alloc.deallocate(a) };
    let b = h.alloc.allocate(100, 16).unwrap();
    assert_eq!(a, b);
    // SAFETY: live block.
    unsafe { h.alloc.deallocate(b) };
}
