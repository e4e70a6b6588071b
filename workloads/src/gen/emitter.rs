//! The generators' common output: event construction, a clock and pointer identities.

use rand::Rng;

use crate::event::{Event, OpKind};

/// Base of generated pointer identities; a recognisable, plausible heap address.
const ADDRESS_BASE: u64 = 0x7f00_0000_0000;
/// Spacing of generated pointer identities.
const ADDRESS_STEP: u64 = 0x40;

pub struct Emitter<'a> {
    sink: &'a mut dyn FnMut(Event),
    budget: u64,
    emitted: u64,
    live: u64,
    time_ns: u64,
    next_address: u64,
    /// Freed identities, reused last-in first-out as a real allocator would. Invariant: no
    /// identity here is live, so a generated trace never allocates a live pointer.
    free_addresses: Vec<u64>,
}

impl<'a> Emitter<'a> {
    pub fn new(budget: u64, sink: &'a mut dyn FnMut(Event)) -> Self {
        Emitter {
            sink,
            budget,
            emitted: 0,
            live: 0,
            time_ns: 0,
            next_address: ADDRESS_BASE,
            free_addresses: Vec::new(),
        }
    }

    /// Whether the budget is used up, counting the frees still owed to live blocks.
    pub fn done(&self) -> bool {
        self.emitted + self.live >= self.budget
    }

    /// Let time pass: uniform in `[1, 2 * mean_ns]`.
    pub fn advance(&mut self, rng: &mut impl Rng, mean_ns: u64) {
        self.time_ns += rng.gen_range(1..=2 * mean_ns.max(1));
    }

    /// Stamp `e` with the clock and its line, and hand it on.
    fn emit(&mut self, e: Event) {
        self.emitted += 1;
        (self.sink)(Event {
            time_ns: Some(self.time_ns),
            device: e.stream.map(|_| 0),
            // The line it will have in canonical CSV, after the header.
            line: self.emitted + 1,
            ..e
        });
    }

    fn new_address(&mut self) -> u64 {
        self.free_addresses.pop().unwrap_or_else(|| {
            self.next_address += ADDRESS_STEP;
            self.next_address
        })
    }

    pub fn alloc(&mut self, thread: u32, size: u64, align: u64, stream: Option<u64>) -> u64 {
        let ptr = self.new_address();
        self.live += 1;
        self.emit(event(thread, OpKind::Alloc, ptr, size, align, stream));
        ptr
    }

    pub fn free(&mut self, thread: u32, ptr: u64, stream: Option<u64>) {
        self.live -= 1;
        self.emit(event(thread, OpKind::Free, ptr, 0, 0, stream));
        self.free_addresses.push(ptr);
    }

    /// Resize `old` to `size`: the block moves to a new identity.
    pub fn realloc(&mut self, thread: u32, old: u64, size: u64) -> u64 {
        let ptr = self.new_address();
        self.emit(Event {
            old_ptr: old,
            ..event(thread, OpKind::Realloc, ptr, size, 0, None)
        });
        self.free_addresses.push(old);
        ptr
    }
}

fn event(thread: u32, op: OpKind, ptr: u64, size: u64, align: u64, stream: Option<u64>) -> Event {
    Event {
        thread: thread as u64,
        time_ns: None,
        op,
        ptr,
        size,
        align,
        old_ptr: 0,
        stream,
        device: None,
        line: 0,
    }
}
