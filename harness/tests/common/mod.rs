//! Shared by the integration tests: small trace generators (global order, compiled with
//! the real compiler) and checking backends.

#![allow(dead_code)]

use harness::Backend;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use workloads::{CompiledTrace, Event, OpKind};

/// xorshift64*: deterministic and dependency-free.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

pub fn event(thread: u64, seq: u64, op: OpKind, ptr: u64, size: u64, old_ptr: u64) -> Event {
    Event {
        thread,
        time_ns: Some(seq * 100),
        op,
        ptr,
        size,
        align: 0,
        old_ptr,
        stream: None,
        device: None,
        line: seq + 2,
    }
}

pub fn compile(events: Vec<Event>) -> CompiledTrace {
    workloads::compile(Path::new("generated"), events, true).expect("generated traces compile")
}

/// Producer/consumer pairs: thread `2k` allocates, thread `2k+1` frees what `2k` made,
/// a few blocks behind. Every free is cross-thread.
pub fn producer_consumer(threads: u64, events: u64, seed: u64) -> Vec<Event> {
    assert!(threads >= 2 && threads.is_multiple_of(2));
    let mut rng = Rng::new(seed);
    let mut queues: Vec<std::collections::VecDeque<u64>> =
        vec![Default::default(); threads as usize / 2];
    let mut out = Vec::new();
    let mut next_ptr = 0x1000u64;
    while (out.len() as u64) < events {
        let t = rng.below(threads);
        let pair = (t / 2) as usize;
        let seq = out.len() as u64;
        if t.is_multiple_of(2) {
            let size = 8 + rng.below(2048);
            out.push(event(t, seq, OpKind::Alloc, next_ptr, size, 0));
            queues[pair].push_back(next_ptr);
            next_ptr += 0x10;
        } else if queues[pair].len() > 4 {
            let p = queues[pair].pop_front().unwrap();
            out.push(event(t, seq, OpKind::Free, p, 0, 0));
        }
    }
    for (pair, q) in queues.into_iter().enumerate() {
        for p in q {
            let seq = out.len() as u64;
            out.push(event(pair as u64 * 2 + 1, seq, OpKind::Free, p, 0, 0));
        }
    }
    out
}

/// Larson-like: every thread keeps a window of live blocks, replaces a random one each
/// step, and now and then frees a block another thread allocated or reallocs its own.
pub fn larson(threads: u64, events: u64, seed: u64) -> Vec<Event> {
    let mut rng = Rng::new(seed);
    let window = 16usize;
    let mut live: Vec<Vec<u64>> = vec![Vec::new(); threads as usize];
    let mut out = Vec::new();
    let mut next_ptr = 0x10_0000u64;
    while (out.len() as u64) < events {
        let t = rng.below(threads) as usize;
        let seq = out.len() as u64;
        let roll = rng.below(100);
        if live[t].len() < window || roll < 10 {
            let size = 16 + rng.below(512);
            out.push(event(t as u64, seq, OpKind::Alloc, next_ptr, size, 0));
            // Hand a third of the blocks to a random thread (larson's cross-thread frees).
            let owner = if rng.below(3) == 0 {
                rng.below(threads) as usize
            } else {
                t
            };
            live[owner].push(next_ptr);
            next_ptr += 0x10;
        } else if roll < 20 {
            let i = rng.below(live[t].len() as u64) as usize;
            let old = live[t][i];
            let size = 16 + rng.below(4096);
            out.push(event(t as u64, seq, OpKind::Realloc, next_ptr, size, old));
            live[t][i] = next_ptr;
            next_ptr += 0x10;
        } else {
            let i = rng.below(live[t].len() as u64) as usize;
            let p = live[t].swap_remove(i);
            out.push(event(t as u64, seq, OpKind::Free, p, 0, 0));
        }
    }
    for (t, blocks) in live.into_iter().enumerate() {
        for p in blocks {
            let seq = out.len() as u64;
            out.push(event(t as u64, seq, OpKind::Free, p, 0, 0));
        }
    }
    out
}

/// A shadow-model backend: unique fake addresses, a map of live blocks; panics on a free
/// or realloc of a block that is not live or with a size other than the one allocated.
#[derive(Default)]
pub struct CheckingBackend {
    next: AtomicUsize,
    live: Mutex<HashMap<usize, usize>>,
    pub allocs: AtomicU64,
    pub frees: AtomicU64,
    pub reallocs: AtomicU64,
}

impl CheckingBackend {
    pub fn new() -> Self {
        CheckingBackend {
            next: AtomicUsize::new(1),
            ..Default::default()
        }
    }

    fn fresh(&self, size: usize) -> usize {
        let addr = self.next.fetch_add(1, Ordering::Relaxed) << 6;
        self.live.lock().unwrap().insert(addr, size);
        addr
    }

    fn retire(&self, addr: usize, size: usize, what: &str) {
        match self.live.lock().unwrap().remove(&addr) {
            Some(s) => assert_eq!(s, size, "{what} of {addr:#x}: size {size}, allocated {s}"),
            None => panic!("{what} of {addr:#x}, which is not live"),
        }
    }

    pub fn live_blocks(&self) -> usize {
        self.live.lock().unwrap().len()
    }
}

impl Backend for CheckingBackend {
    fn alloc(&self, size: usize, _align: usize, _stream: u16) -> usize {
        self.allocs.fetch_add(1, Ordering::Relaxed);
        self.fresh(size)
    }

    unsafe fn free(&self, addr: usize, size: usize, _stream: u16) {
        self.frees.fetch_add(1, Ordering::Relaxed);
        self.retire(addr, size, "free");
    }

    unsafe fn realloc(
        &self,
        addr: usize,
        old_size: usize,
        new_size: usize,
        _a: usize,
        _s: u16,
    ) -> usize {
        self.reallocs.fetch_add(1, Ordering::Relaxed);
        if addr != 0 {
            self.retire(addr, old_size, "realloc");
        }
        self.fresh(new_size)
    }

    fn address_space(&self) -> harness::AddressSpace {
        harness::AddressSpace::Device
    }
}

/// Fails every allocation that would take live bytes over `capacity_bytes`.
pub struct LimitedBackend {
    pub inner: CheckingBackend,
    pub capacity_bytes: usize,
    used: AtomicUsize,
}

impl LimitedBackend {
    pub fn new(capacity_bytes: usize) -> Self {
        LimitedBackend {
            inner: CheckingBackend::new(),
            capacity_bytes,
            used: AtomicUsize::new(0),
        }
    }
}

impl Backend for LimitedBackend {
    fn alloc(&self, size: usize, align: usize, stream: u16) -> usize {
        let before = self.used.fetch_add(size, Ordering::Relaxed);
        if before + size > self.capacity_bytes {
            self.used.fetch_sub(size, Ordering::Relaxed);
            return 0;
        }
        self.inner.alloc(size, align, stream)
    }

    unsafe fn free(&self, addr: usize, size: usize, stream: u16) {
        self.used.fetch_sub(size, Ordering::Relaxed);
        // SAFETY: forwarded contract: a live block of the inner backend.
        unsafe { self.inner.free(addr, size, stream) }
    }

    unsafe fn realloc(
        &self,
        addr: usize,
        old: usize,
        new: usize,
        align: usize,
        stream: u16,
    ) -> usize {
        let before = self.used.fetch_add(new, Ordering::Relaxed);
        if before + new - old > self.capacity_bytes {
            self.used.fetch_sub(new, Ordering::Relaxed);
            return 0;
        }
        self.used.fetch_sub(old, Ordering::Relaxed);
        // SAFETY: forwarded contract: a live block of the inner backend.
        unsafe { self.inner.realloc(addr, old, new, align, stream) }
    }

    fn address_space(&self) -> harness::AddressSpace {
        harness::AddressSpace::Device
    }

    fn reserved_bytes(&self) -> Option<u64> {
        Some(self.used.load(Ordering::Relaxed) as u64)
    }
}

/// Run `f` on another thread; panic if it takes longer than `seconds` (a deadlock).
pub fn with_timeout<T: Send + 'static>(seconds: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(std::time::Duration::from_secs(seconds)) {
        Ok(v) => v,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("no result within {seconds} s: the replay deadlocked")
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            panic!("the replay thread panicked")
        }
    }
}
