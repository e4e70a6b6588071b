//! The global order of a canonical CSV trace with `time_ns`: the rows' stable sort by time
//! (docs/formats.md, "Canonical trace CSV"), computed without holding a row's worth of `Event` per event.
//!
//! Within one thread, file order is program order, and a recorder's per-thread times rarely
//! step back. So the rows are kept per trace thread, packed to 32 bytes each (`Packed`),
//! and the threads are merged by `(time_ns, line)`. The line is the row's file position,
//! so this is exactly the stable sort by time of the whole file. A thread whose own times
//! step back is first sorted by `(time_ns, line)` on its own.
//!
//! ```text
//!  thread 0: [t=10 l=5][t=30 l=6]...   chunks of CHUNK_EVENTS, freed once merged
//!  thread 1: [t=20 l=2][t=30 l=3]...  --heap of each thread's next (time_ns, line)--> events
//! ```
//!
//! Memory: 32 bytes per event, plus 8 per `realloc` (its `old_ptr`), plus 4 per event when
//! a trace has more than `INLINE_ATTRS` distinct (stream, device) pairs; each thread wastes
//! at most one partly filled chunk. Chunks are freed as the merge passes them, so a
//! consumer that builds its own form (the compiler) grows while this shrinks.

use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::BuildHasherDefault;

use crate::event::{Event, OpKind};
use crate::ptrmap::{PtrHasher, PtrMap};

/// Events per full chunk (128 KiB of `Packed`).
const CHUNK_EVENTS: usize = 4096;
/// Capacity of a thread's first chunk; chunks double up to `CHUNK_EVENTS`, so a thread of
/// a few events costs a few events.
const FIRST_CHUNK_EVENTS: usize = 16;

/// `(stream, device)` pairs numbered `1..=INLINE_ATTRS` in `Packed::word`; `ATTRS_WIDE`
/// there means the pair's index is in the thread's `wide_attrs` column.
const INLINE_ATTRS: u64 = 254;
const ATTRS_WIDE: u64 = 255;

const SIZE_BITS: u32 = 49;
const OP_SHIFT: u32 = SIZE_BITS;
const ALIGN_SHIFT: u32 = OP_SHIFT + 2;
const ATTRS_SHIFT: u32 = ALIGN_SHIFT + 5;

/// One event without its thread (implied by its column) and `old_ptr` (in a side column).
///
/// `word`: bits 0..49 size (at most `MAX_SIZE_BYTES` = 2^48), 49..51 `OpKind`,
/// 51..56 alignment code (0 = none, else log2 + 1; at most 2^30), 56..64 attrs code
/// (0 = no stream and no device, `1..=INLINE_ATTRS` = pair index + 1, `ATTRS_WIDE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Packed {
    time_ns: u64,
    line: u64,
    ptr: u64,
    word: u64,
}

const _: () = assert!(std::mem::size_of::<Packed>() == 32);
const _: () = assert!(crate::formats::MAX_SIZE_BYTES < 1 << SIZE_BITS);
const _: () = assert!(crate::formats::MAX_ALIGN_BYTES.trailing_zeros() + 1 < 32);

impl Packed {
    fn op(&self) -> OpKind {
        match (self.word >> OP_SHIFT) & 3 {
            0 => OpKind::Alloc,
            1 => OpKind::Free,
            _ => OpKind::Realloc,
        }
    }

    fn size(&self) -> u64 {
        self.word & ((1 << SIZE_BITS) - 1)
    }

    fn align(&self) -> u64 {
        match (self.word >> ALIGN_SHIFT) & 0x1f {
            0 => 0,
            code => 1 << (code - 1),
        }
    }

    fn attrs_code(&self) -> u64 {
        self.word >> ATTRS_SHIFT
    }

    /// `(time_ns, line)` as one number, so the merge compares once.
    fn key(&self) -> u128 {
        (self.time_ns as u128) << 64 | self.line as u128
    }
}

/// A column that grows and is consumed in chunks: pushing never copies more than one
/// chunk, and popping frees each chunk once it is passed.
#[derive(Debug)]
struct Column<T> {
    chunks: VecDeque<Vec<T>>,
    /// Position in the front chunk of the next element to pop.
    read: usize,
}

impl<T: Copy> Column<T> {
    fn new() -> Self {
        Column {
            chunks: VecDeque::new(),
            read: 0,
        }
    }

    #[inline]
    fn push(&mut self, v: T) {
        if let Some(c) = self.chunks.back_mut() {
            if c.len() < c.capacity() {
                c.push(v);
                return;
            }
            if c.capacity() < CHUNK_EVENTS {
                c.reserve_exact((c.capacity() * 2).min(CHUNK_EVENTS) - c.len());
                c.push(v);
                return;
            }
        }
        let first = self.chunks.is_empty();
        let mut c = Vec::with_capacity(if first {
            FIRST_CHUNK_EVENTS
        } else {
            CHUNK_EVENTS
        });
        c.push(v);
        self.chunks.push_back(c);
    }

    #[inline]
    fn peek(&self) -> Option<&T> {
        self.chunks.front().map(|c| &c[self.read])
    }

    #[inline]
    fn pop(&mut self) -> Option<T> {
        let front = self.chunks.front()?;
        let v = front[self.read];
        self.read += 1;
        if self.read == front.len() {
            self.chunks.pop_front();
            self.read = 0;
        }
        Some(v)
    }

    fn heap_bytes(&self) -> usize {
        self.chunks
            .iter()
            .map(|c| c.capacity() * std::mem::size_of::<T>())
            .sum()
    }
}

/// One trace thread's events in program order.
#[derive(Debug)]
struct ThreadColumn {
    thread: u64,
    events: Column<Packed>,
    /// `old_ptr` of each `realloc` event, in the order of `events`.
    old_ptrs: Column<u64>,
    /// Attrs index of each event whose attrs code is `ATTRS_WIDE`, in the order of `events`.
    wide_attrs: Column<u32>,
    /// Whether the times so far never step back.
    in_time_order: bool,
    last_time_ns: u64,
}

impl ThreadColumn {
    fn new(thread: u64) -> Self {
        ThreadColumn {
            thread,
            events: Column::new(),
            old_ptrs: Column::new(),
            wide_attrs: Column::new(),
            in_time_order: true,
            last_time_ns: 0,
        }
    }

    /// Sort by `(time_ns, line)`; needed only when the thread's times step back. Holds the
    /// thread's events unpacked (48 bytes each) while it runs.
    fn sort(&mut self) {
        let mut all = Vec::with_capacity(self.events.chunks.iter().map(Vec::len).sum());
        while let Some(p) = self.events.pop() {
            let old_ptr = if p.op() == OpKind::Realloc {
                self.old_ptrs.pop().unwrap_or(0)
            } else {
                0
            };
            let wide = if p.attrs_code() == ATTRS_WIDE {
                self.wide_attrs.pop().unwrap_or(0)
            } else {
                0
            };
            all.push((p, old_ptr, wide));
        }
        // Lines are unique: the unstable sort gives the one order.
        all.sort_unstable_by_key(|(p, _, _)| p.key());
        for (p, old_ptr, wide) in all {
            self.events.push(p);
            if p.op() == OpKind::Realloc {
                self.old_ptrs.push(old_ptr);
            }
            if p.attrs_code() == ATTRS_WIDE {
                self.wide_attrs.push(wide);
            }
        }
        self.in_time_order = true;
    }
}

/// An event's `(stream, device)`.
type Attrs = (Option<u64>, Option<u64>);
type AttrsMap = HashMap<Attrs, u32, BuildHasherDefault<PtrHasher>>;

/// Collects events (each with `time_ns`) in file order; `into_merge` gives the global order.
#[derive(Debug)]
pub(super) struct TimeOrder {
    threads: Vec<ThreadColumn>,
    thread_index: PtrMap<u32>,
    /// The last event's thread and its index, for the common run of one thread's rows.
    last_thread: Option<(u64, u32)>,
    /// Distinct `(stream, device)` pairs; attrs index `i` is `attrs[i]`.
    attrs: Vec<Attrs>,
    attrs_index: AttrsMap,
    last_attrs: Option<(Attrs, u32)>,
    events: u64,
}

impl TimeOrder {
    pub fn new() -> Self {
        TimeOrder {
            threads: Vec::new(),
            thread_index: PtrMap::default(),
            last_thread: None,
            attrs: Vec::new(),
            attrs_index: AttrsMap::default(),
            last_attrs: None,
            events: 0,
        }
    }

    fn thread(&mut self, thread: u64) -> usize {
        if let Some((t, i)) = self.last_thread {
            if t == thread {
                return i as usize;
            }
        }
        let next = self.threads.len() as u32;
        let i = *self.thread_index.entry(thread).or_insert(next);
        if i == next {
            self.threads.push(ThreadColumn::new(thread));
        }
        self.last_thread = Some((thread, i));
        i as usize
    }

    fn attrs(&mut self, pair: Attrs) -> u32 {
        if let Some((last, i)) = self.last_attrs {
            if last == pair {
                return i;
            }
        }
        let next = self.attrs.len() as u32;
        let i = *self.attrs_index.entry(pair).or_insert(next);
        if i == next {
            self.attrs.push(pair);
        }
        self.last_attrs = Some((pair, i));
        i
    }

    /// Add the next event in file order. `e.time_ns` must be set, `e.size` at most
    /// `MAX_SIZE_BYTES` and `e.align` 0 or a power of two up to `MAX_ALIGN_BYTES`, as the
    /// CSV reader guarantees.
    pub fn push(&mut self, e: &Event) {
        debug_assert!(e.time_ns.is_some());
        let time_ns = e.time_ns.unwrap_or(0);
        let pair = (e.stream, e.device);
        let (attrs_code, wide) = if pair == (None, None) {
            (0, None)
        } else {
            let i = self.attrs(pair);
            if (i as u64) < INLINE_ATTRS {
                (i as u64 + 1, None)
            } else {
                (ATTRS_WIDE, Some(i))
            }
        };
        let align_code = if e.align == 0 {
            0
        } else {
            e.align.trailing_zeros() as u64 + 1
        };
        debug_assert!(e.size < 1 << SIZE_BITS && align_code < 32);
        let word = e.size
            | (e.op as u64) << OP_SHIFT
            | align_code << ALIGN_SHIFT
            | attrs_code << ATTRS_SHIFT;
        let t = self.thread(e.thread);
        let column = &mut self.threads[t];
        column.in_time_order &= column.last_time_ns <= time_ns;
        column.last_time_ns = time_ns;
        column.events.push(Packed {
            time_ns,
            line: e.line,
            ptr: e.ptr,
            word,
        });
        if e.op == OpKind::Realloc {
            column.old_ptrs.push(e.old_ptr);
        }
        if let Some(i) = wide {
            column.wide_attrs.push(i);
        }
        self.events += 1;
    }

    /// Bytes of heap the collected events occupy (the columns' chunks).
    pub fn heap_bytes(&self) -> usize {
        self.threads
            .iter()
            .map(|t| t.events.heap_bytes() + t.old_ptrs.heap_bytes() + t.wide_attrs.heap_bytes())
            .sum()
    }

    pub fn into_merge(mut self) -> Merge {
        let mut heap = BinaryHeap::with_capacity(self.threads.len());
        for (i, t) in self.threads.iter_mut().enumerate() {
            if !t.in_time_order {
                t.sort();
            }
            if let Some(p) = t.events.peek() {
                heap.push(Head {
                    key: p.key(),
                    thread: i as u32,
                });
            }
        }
        Merge {
            threads: self.threads,
            heap,
            attrs: self.attrs,
            remaining: self.events,
        }
    }
}

/// A thread's next event in the merge: a max-heap entry that puts the least key on top.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    key: u128,
    thread: u32,
}

impl Ord for Head {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Keys are unique (lines are): the thread never decides.
        other.key.cmp(&self.key)
    }
}

impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// The collected events in global order: a k-way merge of the threads by `(time_ns, line)`.
#[derive(Debug)]
pub(super) struct Merge {
    threads: Vec<ThreadColumn>,
    /// Each non-empty thread's next event.
    heap: BinaryHeap<Head>,
    attrs: Vec<Attrs>,
    remaining: u64,
}

impl Iterator for Merge {
    type Item = Event;

    #[inline]
    fn next(&mut self) -> Option<Event> {
        let mut top = self.heap.peek_mut()?;
        let t = top.thread as usize;
        let column = &mut self.threads[t];
        let p = column.events.pop()?;
        match column.events.peek() {
            Some(next) => top.key = next.key(),
            None => {
                std::collections::binary_heap::PeekMut::pop(top);
            }
        }
        let op = p.op();
        let old_ptr = if op == OpKind::Realloc {
            column.old_ptrs.pop().unwrap_or(0)
        } else {
            0
        };
        let (stream, device) = match p.attrs_code() {
            0 => (None, None),
            ATTRS_WIDE => self.attrs[column.wide_attrs.pop().unwrap_or(0) as usize],
            code => self.attrs[code as usize - 1],
        };
        self.remaining -= 1;
        Some(Event {
            thread: column.thread,
            time_ns: Some(p.time_ns),
            op,
            ptr: p.ptr,
            size: p.size(),
            align: p.align(),
            old_ptr,
            stream,
            device,
            line: p.line,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = usize::try_from(self.remaining).unwrap_or(usize::MAX);
        (n, Some(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // `%` rather than `is_multiple_of`, which is newer than the workspace's rust-version.
    #[allow(clippy::manual_is_multiple_of)]
    fn event(thread: u64, time_ns: u64, line: u64, op: OpKind) -> Event {
        Event {
            thread,
            time_ns: Some(time_ns),
            op,
            ptr: 0x1000 + line,
            size: if op == OpKind::Free { 0 } else { line * 3 },
            align: if line % 3 == 0 { 1 << (line % 31) } else { 0 },
            old_ptr: if op == OpKind::Realloc { line + 7 } else { 0 },
            stream: (line % 4 != 0).then_some(line % 301),
            device: (line % 5 == 0).then_some(line % 2),
            line,
        }
    }

    #[test]
    fn packing_round_trips_every_field_and_wide_attrs() {
        let ops = [OpKind::Alloc, OpKind::Free, OpKind::Realloc];
        let events: Vec<Event> = (0..5000)
            .map(|l| event(l % 3, l / 2, l + 2, ops[(l % 3) as usize]))
            .collect();
        let mut order = TimeOrder::new();
        for e in &events {
            order.push(e);
        }
        assert!(order.attrs.len() as u64 > INLINE_ATTRS, "wide attrs used");
        let mut got: Vec<Event> = order.into_merge().collect();
        got.sort_by_key(|e| e.line);
        assert_eq!(got, events);
    }

    #[test]
    fn threads_with_times_stepping_back_are_sorted_stably() {
        let events = [
            event(0, 50, 2, OpKind::Alloc),
            event(1, 20, 3, OpKind::Realloc),
            event(0, 10, 4, OpKind::Free),
            event(0, 50, 5, OpKind::Alloc),
            event(1, 10, 6, OpKind::Free),
        ];
        let mut order = TimeOrder::new();
        for e in &events {
            order.push(e);
        }
        let lines: Vec<u64> = order.into_merge().map(|e| e.line).collect();
        assert_eq!(lines, vec![4, 6, 3, 2, 5]);
    }
}
