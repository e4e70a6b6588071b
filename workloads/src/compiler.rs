//! The compiler: sanitised events in global order -> `CompiledTrace` (see compiled.rs).
//!
//! Slot assignment. A freed slot goes on the free stack of the thread that freed it, and
//! an alloc takes from its own thread's stack first, so that a slot's consecutive ops stay
//! on one thread and `CROSS_THREAD` marks real hand-offs, not accidents of reuse. Only when
//! its own stack is empty does a thread take a slot freed by another thread, so that
//! `slot_count` is exactly the most blocks live at once.

use std::path::{Path, PathBuf};

use crate::compiled::{CompiledOp, CompiledTrace, ThreadOps};
use crate::error::{Quoted, TraceError};
use crate::event::{Event, OpKind};
use crate::ptrmap::PtrMap;

#[derive(Debug, Clone, Copy)]
struct Slot {
    /// Ops on the slot so far (the next op's `ordinal`).
    ops: u32,
    /// Dense index of the thread of the last op on the slot.
    last_thread: u32,
    /// Requested bytes of the block in the slot (0 when free).
    size_bytes: u64,
}

/// What `push_resolved` learnt about an event while compiling it, so that statistics need
/// no pointer map of their own (`StatsCollector::count`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Resolved {
    /// Dense index of the event's thread, in order of first appearance.
    pub thread: u32,
    /// A free, or a realloc from a block, whose block was last allocated (or reallocated)
    /// by another thread.
    pub cross_thread_release: bool,
    /// Blocks and requested bytes live after the event.
    pub live_blocks: u64,
    pub live_bytes: u64,
}

/// Streaming compiler: `push` events in global order, then `finish`.
pub struct Compiler {
    path: PathBuf,
    keep_times: bool,
    thread_index: PtrMap<u32>,
    threads: Vec<ThreadOps>,
    /// Live pointer -> its slot.
    slot_of: PtrMap<u32>,
    slots: Vec<Slot>,
    /// Per dense thread: slots freed last by that thread. Invariant: every free slot is on
    /// exactly one stack.
    free_slots: Vec<Vec<u32>>,
    /// Threads whose stack may be non-empty; `in_candidates[t]` iff `t` is listed, so the
    /// list never holds more than one entry per thread.
    candidates: Vec<u32>,
    in_candidates: Vec<bool>,
    stream_index: PtrMap<u16>,
    streams: Vec<u64>,
    saw_streamless: bool,
    saw_time: bool,
    event_count: u64,
    live_bytes: u64,
    peak_live_bytes: u64,
}

impl Compiler {
    /// `path` names the trace in errors; `keep_times` keeps per-op `time_ns` for pacing.
    pub fn new(path: &Path, keep_times: bool) -> Self {
        Compiler {
            path: path.to_path_buf(),
            keep_times,
            thread_index: PtrMap::default(),
            threads: Vec::new(),
            slot_of: PtrMap::default(),
            slots: Vec::new(),
            free_slots: Vec::new(),
            candidates: Vec::new(),
            in_candidates: Vec::new(),
            stream_index: PtrMap::default(),
            streams: Vec::new(),
            saw_streamless: false,
            saw_time: false,
            event_count: 0,
            live_bytes: 0,
            peak_live_bytes: 0,
        }
    }

    fn too_large(&self, e: &Event, what: String) -> TraceError {
        TraceError::TooLarge {
            path: self.path.clone(),
            line: e.line,
            what,
        }
    }

    fn unsanitised(&self, e: &Event, ptr: u64, problem: &str) -> TraceError {
        TraceError::BadField {
            path: self.path.clone(),
            line: e.line,
            field: "ptr",
            value: Quoted::new(format!("{ptr:#x}").as_bytes()),
            reason: format!(
                "{} of {problem} (the compiler needs a sanitised trace)",
                e.op.as_str()
            ),
        }
    }

    fn thread(&mut self, trace_thread: u64) -> u32 {
        let next = self.threads.len() as u32;
        let t = *self.thread_index.entry(trace_thread).or_insert(next);
        if t == next {
            self.threads.push(ThreadOps {
                trace_thread,
                ops: Vec::new(),
                times_ns: self.keep_times.then(Vec::new),
            });
            self.free_slots.push(Vec::new());
            self.in_candidates.push(false);
        }
        t
    }

    fn stream(&mut self, e: &Event) -> Result<u16, TraceError> {
        let id = match e.stream {
            Some(s) => {
                if self.streams.is_empty() && self.saw_streamless {
                    // Ops seen so far carried index 0: make that the default stream 0.
                    self.stream_index.insert(0, 0);
                    self.streams.push(0);
                }
                s
            }
            None if self.streams.is_empty() => {
                self.saw_streamless = true;
                return Ok(0);
            }
            None => 0,
        };
        if let Some(&i) = self.stream_index.get(&id) {
            return Ok(i);
        }
        let i = u16::try_from(self.streams.len())
            .map_err(|_| self.too_large(e, "more than 65536 distinct streams".into()))?;
        self.stream_index.insert(id, i);
        self.streams.push(id);
        Ok(i)
    }

    /// A free slot for thread `t`: its own most recently freed, else another thread's,
    /// else a new one.
    fn take_slot(&mut self, t: u32, e: &Event) -> Result<u32, TraceError> {
        if let Some(s) = self.free_slots[t as usize].pop() {
            return Ok(s);
        }
        while let Some(other) = self.candidates.pop() {
            self.in_candidates[other as usize] = false;
            let stack = &mut self.free_slots[other as usize];
            if let Some(s) = stack.pop() {
                if !stack.is_empty() {
                    self.candidates.push(other);
                    self.in_candidates[other as usize] = true;
                }
                return Ok(s);
            }
        }
        let s = u32::try_from(self.slots.len())
            .map_err(|_| self.too_large(e, "more than 2^32 blocks live at once".into()))?;
        self.slots.push(Slot {
            ops: 0,
            last_thread: t,
            size_bytes: 0,
        });
        Ok(s)
    }

    fn release_slot(&mut self, t: u32, slot: u32) {
        self.free_slots[t as usize].push(slot);
        if !self.in_candidates[t as usize] {
            self.in_candidates[t as usize] = true;
            self.candidates.push(t);
        }
    }

    /// Append one sanitised event (global order).
    pub fn push(&mut self, e: &Event) -> Result<(), TraceError> {
        self.push_resolved(e).map(|_| ())
    }

    /// `push`, telling what it learnt about the event's block.
    pub(crate) fn push_resolved(&mut self, e: &Event) -> Result<Resolved, TraceError> {
        let seq = u32::try_from(self.event_count)
            .map_err(|_| self.too_large(e, "more than 2^32 events".into()))?;
        let t = self.thread(e.thread);
        let stream = self.stream(e)?;
        let slot = match e.op {
            OpKind::Alloc => {
                let s = self.take_slot(t, e)?;
                if self.slot_of.insert(e.ptr, s).is_some() {
                    return Err(self.unsanitised(e, e.ptr, "a pointer that is still live"));
                }
                s
            }
            OpKind::Free => {
                let s = self
                    .slot_of
                    .remove(&e.ptr)
                    .ok_or_else(|| self.unsanitised(e, e.ptr, "a pointer that is not live"))?;
                self.release_slot(t, s);
                s
            }
            OpKind::Realloc if e.old_ptr == 0 => {
                let s = self.take_slot(t, e)?;
                if self.slot_of.insert(e.ptr, s).is_some() {
                    return Err(self.unsanitised(e, e.ptr, "a pointer that is still live"));
                }
                s
            }
            OpKind::Realloc => {
                let s = self
                    .slot_of
                    .remove(&e.old_ptr)
                    .ok_or_else(|| self.unsanitised(e, e.old_ptr, "a pointer that is not live"))?;
                if self.slot_of.insert(e.ptr, s).is_some() {
                    return Err(self.unsanitised(e, e.ptr, "a pointer that is still live"));
                }
                s
            }
        };
        let state = &mut self.slots[slot as usize];
        let ordinal = state.ops;
        let cross_thread = ordinal > 0 && state.last_thread != t;
        state.ops = ordinal.checked_add(1).ok_or_else(|| TraceError::TooLarge {
            path: self.path.clone(),
            line: e.line,
            what: format!("more than 2^32 ops on slot {slot}"),
        })?;
        state.last_thread = t;
        // Invariant: `live_bytes` is the sum of the slots' `size_bytes`, so only the
        // addition can wrap (65,537 live blocks of 2^48 bytes do).
        self.live_bytes -= state.size_bytes;
        state.size_bytes = if e.op == OpKind::Free { 0 } else { e.size };
        self.live_bytes = self
            .live_bytes
            .checked_add(state.size_bytes)
            .ok_or_else(|| TraceError::TooLarge {
                path: self.path.clone(),
                line: e.line,
                what: live_bytes_overflow(self.live_bytes, state.size_bytes),
            })?;
        self.peak_live_bytes = self.peak_live_bytes.max(self.live_bytes);
        let thread = &mut self.threads[t as usize];
        thread.ops.push(CompiledOp {
            size: if e.op == OpKind::Free { 0 } else { e.size },
            seq,
            slot,
            ordinal,
            kind: e.op,
            flags: CompiledOp::make_flags(cross_thread, e.align),
            stream,
        });
        if let Some(times) = &mut thread.times_ns {
            times.push(e.time_ns.unwrap_or(0));
        }
        self.saw_time |= e.time_ns.is_some();
        self.event_count += 1;
        let releases = match e.op {
            OpKind::Alloc => false,
            OpKind::Free => true,
            OpKind::Realloc => e.old_ptr != 0,
        };
        Ok(Resolved {
            thread: t,
            // The slot's previous op is the released block's alloc or realloc.
            cross_thread_release: releases && cross_thread,
            live_blocks: self.slot_of.len() as u64,
            live_bytes: self.live_bytes,
        })
    }

    pub fn finish(mut self) -> CompiledTrace {
        for t in &mut self.threads {
            t.ops.shrink_to_fit();
            if !self.saw_time {
                t.times_ns = None;
            } else if let Some(times) = &mut t.times_ns {
                times.shrink_to_fit();
            }
        }
        CompiledTrace {
            threads: self.threads,
            slot_count: self.slots.len() as u32,
            event_count: self.event_count,
            streams: self.streams,
            peak_live_bytes: self.peak_live_bytes,
        }
    }
}

/// Compile sanitised events (global order) into replay form. `path` names the trace in
/// errors; `keep_times` keeps each op's `time_ns`.
pub fn compile<I>(path: &Path, events: I, keep_times: bool) -> Result<CompiledTrace, TraceError>
where
    I: IntoIterator<Item = Event>,
{
    let mut c = Compiler::new(path, keep_times);
    for e in events {
        c.push(&e)?;
    }
    Ok(c.finish())
}

/// The message for a trace whose live bytes exceed what a u64 counts.
pub(crate) fn live_bytes_overflow(live_bytes: u64, size_bytes: u64) -> String {
    format!(
        "size {size_bytes} with {live_bytes} bytes already live: more than 2^64 - 1 bytes \
         live at once"
    )
}
