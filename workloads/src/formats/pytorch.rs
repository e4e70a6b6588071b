//! PyTorch CUDA memory snapshots: the pickle `torch.cuda.memory._dump_snapshot()` writes
//! (or `pickle.dump(torch.cuda.memory._snapshot(), f)`), after
//! `torch.cuda.memory._record_memory_history()`.
//!
//! Mapping (documented for users in `docs/formats.md`):
//! - `device_traces[d][i]` entries, merged over devices by `time_us` (each device's own
//!   order kept): `alloc` is an alloc on device `d`; the free comes at `free_completed` (the
//!   block is reusable only then) or, with [`FreeAt::Requested`], at `free_requested`;
//!   when the trace holds no `free_completed` at all the importer falls back to
//!   `free_requested` and says so. `segment_alloc`/`segment_map` and
//!   `segment_free`/`segment_unmap` are PyTorch's own reservations: not replayed, kept as
//!   its reserved-bytes curve. `oom` entries are counted as failed allocations; `snapshot`
//!   and `user_defined` markers are skipped; any other action is an error.
//! - Blocks allocated before recording began are allocated first, before the first entry:
//!   those the trace frees without having allocated them, and those `segments[].blocks[]`
//!   lists as `active_allocated` or `active_pending_free` at an address the trace never
//!   allocated (size `requested_size`).
//! - PyTorch's reserved bytes at the start: the snapshot's segments that no
//!   `segment_alloc`/`segment_map` in the trace lies in; the curve adds the segment events.
//! - Streams stay streams, and each (device, stream) pair is a replay lane (the snapshot
//!   records no thread ids).
//! - A trace whose ring buffer (`max_entries`) overflowed lost its oldest entries: the
//!   importer reports it truncated at its start when a `free_completed` has no
//!   `free_requested` before it.
//!
//! Messages about an entry name it as `device_traces[d][i]`; the events' `line` is `i + 1`.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::Serialize;

use super::pickle::{self, Pickle, Value, ValueId};
use crate::error::{Quoted, TraceError};
use crate::event::{Event, OpKind};
use crate::formats::fields::MAX_SIZE_BYTES;

/// Which of PyTorch's two free records replays as the free.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub enum FreeAt {
    /// `free_completed`: when the caching allocator may reuse the block (after the streams
    /// that used it, `record_stream`, are done with it).
    #[default]
    #[serde(rename = "free_completed")]
    Completed,
    /// `free_requested`: when the program dropped the tensor.
    #[serde(rename = "free_requested")]
    Requested,
}

impl FreeAt {
    pub fn as_str(self) -> &'static str {
        match self {
            FreeAt::Completed => "free_completed",
            FreeAt::Requested => "free_requested",
        }
    }
}

impl std::str::FromStr for FreeAt {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "completed" | "free_completed" => Ok(FreeAt::Completed),
            "requested" | "free_requested" => Ok(FreeAt::Requested),
            other => Err(format!(
                "unknown free point '{other}' (expected completed or requested)"
            )),
        }
    }
}

/// PyTorch's reserved bytes from event `event_index` on (the number of events the importer
/// yielded before the segment event that set it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ReservedPoint {
    pub event_index: u64,
    pub reserved_bytes: u64,
}

/// What a snapshot held besides the replayed events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SnapshotSummary {
    pub devices: u32,
    /// Trace entries over all devices.
    pub entries: u64,
    pub allocs: u64,
    pub free_requested: u64,
    pub free_completed: u64,
    /// `segment_alloc`, `segment_free`, `segment_map`, `segment_unmap`.
    pub segment_events: u64,
    /// `oom` entries: allocations PyTorch could not serve.
    pub ooms: u64,
    /// The record replayed as the free.
    pub free_at: Option<FreeAt>,
    /// `free_completed` was asked for but the trace has none: `free_requested` was used.
    pub free_at_fallback: bool,
    /// Blocks allocated before recording began, allocated at the start of the replay.
    pub pre_recording_blocks: u64,
    pub pre_recording_bytes: u64,
    /// The recorder's ring buffer dropped the trace's oldest entries.
    pub truncated: bool,
    /// (device, stream) pairs: the replay lanes.
    pub streams: u64,
    /// PyTorch's reserved bytes before the first entry.
    pub initial_reserved_bytes: u64,
    /// Highest point of PyTorch's reserved curve.
    pub peak_reserved_bytes: u64,
    /// PyTorch's reserved bytes after the last entry.
    pub final_reserved_bytes: u64,
    /// Every change of PyTorch's reserved bytes, in event order (the first point is the
    /// initial value at event 0). Not serialised: one point per segment event.
    #[serde(skip)]
    pub reserved_curve: Vec<ReservedPoint>,
}

impl SnapshotSummary {
    /// PyTorch's reserved bytes once `events` events have run (a step function).
    pub fn reserved_after(&self, events: u64) -> u64 {
        let i = self
            .reserved_curve
            .partition_point(|p| p.event_index <= events);
        match i {
            0 => self.initial_reserved_bytes,
            i => self.reserved_curve[i - 1].reserved_bytes,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Alloc,
    FreeRequested,
    FreeCompleted,
    SegmentAlloc,
    SegmentFree,
    SegmentMap,
    SegmentUnmap,
    Oom,
    Snapshot,
}

impl Action {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "alloc" => Action::Alloc,
            "free_requested" => Action::FreeRequested,
            "free_completed" => Action::FreeCompleted,
            "segment_alloc" => Action::SegmentAlloc,
            "segment_free" => Action::SegmentFree,
            "segment_map" => Action::SegmentMap,
            "segment_unmap" => Action::SegmentUnmap,
            "oom" => Action::Oom,
            // Markers: a snapshot taken, an annotation the program recorded.
            "snapshot" | "user_defined" => Action::Snapshot,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Action::Alloc => "alloc",
            Action::FreeRequested => "free_requested",
            Action::FreeCompleted => "free_completed",
            Action::SegmentAlloc => "segment_alloc",
            Action::SegmentFree => "segment_free",
            Action::SegmentMap => "segment_map",
            Action::SegmentUnmap => "segment_unmap",
            Action::Oom => "oom",
            Action::Snapshot => "snapshot",
        }
    }
}

/// One trace entry, as much of it as the replay needs.
#[derive(Debug, Clone, Copy)]
struct Entry {
    device: u32,
    /// 0-based index in `device_traces[device]`.
    index: u32,
    action: Action,
    addr: u64,
    size: u64,
    stream: u64,
    time_us: Option<u64>,
}

/// A block allocated before recording began.
#[derive(Debug, Clone, Copy)]
struct EarlyBlock {
    device: u32,
    addr: u64,
    size: u64,
    stream: u64,
    /// Entry number (1-based) that revealed it; 0 for the snapshot's segment list.
    line: u64,
}

/// Streams the events of a decoded snapshot (all held in memory: a pickle is one tree).
pub struct PyTorchReader {
    events: std::vec::IntoIter<Event>,
    summary: SnapshotSummary,
}

impl PyTorchReader {
    /// Decode the pickle from `input` and map it (see the module docs).
    pub fn new(
        path: &Path,
        input: &mut dyn std::io::BufRead,
        free_at: FreeAt,
    ) -> Result<Self, TraceError> {
        let pickle = pickle::decode(input).map_err(|e| {
            let reason = match e.io {
                Some(io) => format!("{}: {io}", e.reason),
                None => e.reason,
            };
            TraceError::Snapshot {
                path: path.to_path_buf(),
                at: format!("byte {} of the pickle", e.offset),
                reason,
            }
        })?;
        let doc = Doc::new(path, &pickle);
        let (events, summary) = doc.map(free_at)?;
        Ok(PyTorchReader {
            events: events.into_iter(),
            summary,
        })
    }

    pub fn summary(&self) -> &SnapshotSummary {
        &self.summary
    }

    /// `oom` entries (failed allocations the trace recorded).
    pub fn alloc_failures(&self) -> u64 {
        self.summary.ooms
    }
}

impl Iterator for PyTorchReader {
    type Item = Result<Event, TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.events.next().map(Ok)
    }
}

/// The decoded pickle, read against the snapshot's schema. Every container item looked at
/// is charged against `budget` (a multiple of the values decoded), so that a pickle which
/// shares one huge dict among many entries cannot make the mapping quadratic.
struct Doc<'a> {
    path: &'a Path,
    p: &'a Pickle,
    budget: std::cell::Cell<u64>,
}

impl<'a> Doc<'a> {
    fn new(path: &'a Path, p: &'a Pickle) -> Self {
        Doc {
            path,
            p,
            budget: std::cell::Cell::new(16 * p.values.len() as u64 + (1 << 20)),
        }
    }

    fn err(&self, at: impl Into<String>, reason: impl Into<String>) -> TraceError {
        TraceError::Snapshot {
            path: self.path.to_path_buf(),
            at: at.into(),
            reason: reason.into(),
        }
    }

    fn charge(&self, items: usize, at: &dyn Fn() -> String) -> Result<(), TraceError> {
        let left = self.budget.get().checked_sub(items as u64).ok_or_else(|| {
            self.err(
                at(),
                "the pickle shares its containers so often that reading it would take \
                 too long (not a snapshot PyTorch wrote)",
            )
        })?;
        self.budget.set(left);
        Ok(())
    }

    fn value(&self, id: ValueId) -> &'a Value {
        self.p.get(id)
    }

    /// The items of a list (or tuple) value.
    fn list(&self, v: &'a Value, at: &dyn Fn() -> String) -> Result<&'a [ValueId], TraceError> {
        match v {
            Value::List(items) | Value::Tuple(items) => {
                self.charge(items.len(), at)?;
                Ok(items)
            }
            other => Err(self.err(
                at(),
                format!("expected a list, found a {}", other.type_name()),
            )),
        }
    }

    /// `(key, value)` pairs of a dict with string keys (other keys are skipped).
    fn fields(
        &self,
        v: &'a Value,
        at: &dyn Fn() -> String,
    ) -> Result<Vec<(&'a str, &'a Value)>, TraceError> {
        let Value::Dict(items) = v else {
            return Err(self.err(at(), format!("expected a dict, found a {}", v.type_name())));
        };
        self.charge(items.len(), at)?;
        Ok(items
            .chunks_exact(2)
            .filter_map(|kv| match self.value(kv[0]) {
                Value::Str(k) => Some((&**k, self.value(kv[1]))),
                _ => None,
            })
            .collect())
    }

    fn int(&self, v: &Value, key: &str, at: &dyn Fn() -> String) -> Result<u64, TraceError> {
        match v {
            Value::Int(i) if *i >= 0 => Ok(*i as u64),
            Value::Bool(b) => Ok(*b as u64),
            Value::Int(i) => Err(self.err(at(), format!("'{key}' is negative ({i})"))),
            other => Err(self.err(
                at(),
                format!("'{key}' is a {}, expected an int", other.type_name()),
            )),
        }
    }

    fn map(&self, free_at: FreeAt) -> Result<(Vec<Event>, SnapshotSummary), TraceError> {
        let root = self.value(self.p.root);
        let top = || "top level".to_owned();
        if !matches!(root, Value::Dict(_)) {
            return Err(self.err(
                top(),
                format!(
                    "a {}, expected a dict with 'device_traces' and 'segments' (what \
                     torch.cuda.memory._snapshot() returns)",
                    root.type_name()
                ),
            ));
        }
        let fields = self.fields(root, &top)?;
        let get = |k: &str| fields.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
        let traces = get("device_traces").ok_or_else(|| {
            self.err(
                top(),
                "no 'device_traces': the snapshot holds no allocation history (record one \
                 with torch.cuda.memory._record_memory_history() before taking it)",
            )
        })?;
        let segments = match get("segments") {
            Some(s) => self.segments(s)?,
            None => Vec::new(),
        };
        let traces = self.list(traces, &|| "device_traces".to_owned())?;
        let mut per_device: Vec<Vec<Entry>> = Vec::with_capacity(traces.len());
        for (d, &trace) in traces.iter().enumerate() {
            let device = u32::try_from(d).map_err(|_| self.err(top(), "too many devices"))?;
            let at = || format!("device_traces[{d}]");
            let entries = self.list(self.value(trace), &at)?;
            let mut out = Vec::with_capacity(entries.len());
            for (i, &e) in entries.iter().enumerate() {
                let index =
                    u32::try_from(i).map_err(|_| self.err(at(), "more than 2^32 entries"))?;
                out.push(self.entry(self.value(e), device, index)?);
            }
            per_device.push(out);
        }
        let entries = merge_by_time(per_device);
        Ok(build(entries, &segments, traces.len() as u32, free_at))
    }

    fn entry(&self, v: &'a Value, device: u32, index: u32) -> Result<Entry, TraceError> {
        let at = || format!("device_traces[{device}][{index}]");
        let mut action = None;
        let (mut addr, mut size, mut stream, mut time_us) = (None, None, None, None);
        for (k, v) in self.fields(v, &at)? {
            match k {
                "action" => action = Some(v),
                "addr" => addr = Some(v),
                "size" => size = Some(v),
                "stream" => stream = Some(v),
                "time_us" => time_us = Some(v),
                _ => {}
            }
        }
        let action = match action {
            Some(Value::Str(s)) => Action::parse(s).ok_or_else(|| {
                self.err(
                    at(),
                    format!(
                        "unknown action '{}' (expected alloc, free_requested, \
                         free_completed, segment_alloc, segment_free, segment_map, \
                         segment_unmap, oom, snapshot or user_defined)",
                        Quoted::from(&**s)
                    ),
                )
            })?,
            Some(other) => {
                return Err(self.err(
                    at(),
                    format!("'action' is a {}, expected a str", other.type_name()),
                ))
            }
            None => return Err(self.err(at(), "no 'action'")),
        };
        let required = |v: Option<&Value>, key: &str| -> Result<u64, TraceError> {
            match v {
                Some(v) => self.int(v, key, &at),
                None => Err(self.err(
                    at(),
                    format!("an '{}' entry without '{key}'", action.name()),
                )),
            }
        };
        let optional = |v: Option<&Value>, key: &str| -> Result<Option<u64>, TraceError> {
            v.filter(|v| !matches!(v, Value::None))
                .map(|v| self.int(v, key, &at))
                .transpose()
        };
        let (addr, size) = match action {
            Action::Snapshot => (
                optional(addr, "addr")?.unwrap_or(0),
                optional(size, "size")?.unwrap_or(0),
            ),
            _ => (required(addr, "addr")?, required(size, "size")?),
        };
        if size > MAX_SIZE_BYTES {
            return Err(self.err(
                at(),
                format!("'size' {size} is above {MAX_SIZE_BYTES} bytes (corrupt input?)"),
            ));
        }
        if action == Action::Alloc && addr == 0 {
            return Err(self.err(at(), "an alloc at address 0"));
        }
        Ok(Entry {
            device,
            index,
            action,
            addr,
            size,
            stream: optional(stream, "stream")?.unwrap_or(0),
            time_us: optional(time_us, "time_us")?,
        })
    }

    /// The snapshot's segments: (device, address, total_size, stream, active blocks as
    /// (address, requested_size)).
    fn segments(&self, v: &'a Value) -> Result<Vec<Segment>, TraceError> {
        let items = self.list(v, &|| "segments".to_owned())?;
        let mut out = Vec::with_capacity(items.len());
        for (i, &s) in items.iter().enumerate() {
            let at = || format!("segments[{i}]");
            let fields = self.fields(self.value(s), &at)?;
            let get = |k: &str| fields.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
            let need = |k: &str| -> Result<u64, TraceError> {
                let v = get(k).ok_or_else(|| self.err(at(), format!("no '{k}'")))?;
                self.int(v, k, &at)
            };
            let mut seg = Segment {
                device: get("device").map_or(Ok(0), |v| self.int(v, "device", &at))? as u32,
                address: need("address")?,
                total_size: need("total_size")?,
                stream: get("stream").map_or(Ok(0), |v| self.int(v, "stream", &at))?,
                active: Vec::new(),
            };
            if let Some(blocks) = get("blocks") {
                let blocks = self.list(blocks, &|| format!("segments[{i}].blocks"))?;
                for (j, &b) in blocks.iter().enumerate() {
                    let at = || format!("segments[{i}].blocks[{j}]");
                    let fields = self.fields(self.value(b), &at)?;
                    let get = |k: &str| fields.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
                    let active = matches!(
                        get("state"),
                        Some(Value::Str(s)) if &**s == "active_allocated" || &**s == "active_pending_free"
                    );
                    if !active {
                        continue;
                    }
                    let need = |k: &str| -> Result<u64, TraceError> {
                        let v = get(k).ok_or_else(|| self.err(at(), format!("no '{k}'")))?;
                        self.int(v, k, &at)
                    };
                    let size = match get("requested_size") {
                        Some(v) => self.int(v, "requested_size", &at)?,
                        None => need("size")?,
                    };
                    seg.active
                        .push((need("address")?, size.min(MAX_SIZE_BYTES)));
                }
            }
            out.push(seg);
        }
        Ok(out)
    }
}

struct Segment {
    device: u32,
    address: u64,
    total_size: u64,
    stream: u64,
    active: Vec<(u64, u64)>,
}

/// Entries of all devices in one order: by `time_us`, each device's own order kept (a
/// k-way merge, not a sort, so a device's clock going backwards cannot reorder it).
fn merge_by_time(per_device: Vec<Vec<Entry>>) -> Vec<Entry> {
    if per_device.len() <= 1 {
        return per_device.into_iter().next().unwrap_or_default();
    }
    let total = per_device.iter().map(Vec::len).sum();
    let mut heads = vec![0usize; per_device.len()];
    let mut out = Vec::with_capacity(total);
    loop {
        let next = (0..per_device.len())
            .filter(|&d| heads[d] < per_device[d].len())
            .min_by_key(|&d| per_device[d][heads[d]].time_us.unwrap_or(0));
        let Some(d) = next else { break };
        out.push(per_device[d][heads[d]]);
        heads[d] += 1;
    }
    out
}

/// Lanes: one per (device, stream), numbered in order of first appearance.
#[derive(Default)]
struct Lanes(HashMap<(u32, u64), u64>);

impl Lanes {
    fn of(&mut self, device: u32, stream: u64) -> u64 {
        let next = self.0.len() as u64;
        *self.0.entry((device, stream)).or_insert(next)
    }
}

fn build(
    entries: Vec<Entry>,
    segments: &[Segment],
    devices: u32,
    asked: FreeAt,
) -> (Vec<Event>, SnapshotSummary) {
    let mut s = SnapshotSummary {
        devices,
        entries: entries.len() as u64,
        ..SnapshotSummary::default()
    };
    for e in &entries {
        match e.action {
            Action::Alloc => s.allocs += 1,
            Action::FreeRequested => s.free_requested += 1,
            Action::FreeCompleted => s.free_completed += 1,
            Action::SegmentAlloc
            | Action::SegmentFree
            | Action::SegmentMap
            | Action::SegmentUnmap => s.segment_events += 1,
            Action::Oom => s.ooms += 1,
            Action::Snapshot => {}
        }
    }
    let free_at = if asked == FreeAt::Completed && s.free_completed == 0 && s.free_requested > 0 {
        s.free_at_fallback = true;
        FreeAt::Requested
    } else {
        asked
    };
    s.free_at = Some(free_at);
    let free_action = match free_at {
        FreeAt::Completed => Action::FreeCompleted,
        FreeAt::Requested => Action::FreeRequested,
    };

    // Blocks the trace frees without having allocated them, and whether a completion
    // lacks its request (the ring buffer dropped the request).
    let mut early: Vec<EarlyBlock> = Vec::new();
    let mut live: HashSet<(u32, u64)> = HashSet::new();
    let mut ever: HashSet<(u32, u64)> = HashSet::new();
    let mut requested: HashSet<(u32, u64)> = HashSet::new();
    for e in &entries {
        let key = (e.device, e.addr);
        match e.action {
            Action::Alloc => {
                live.insert(key);
                ever.insert(key);
            }
            a if a == free_action => {
                let allocated_in_trace = live.remove(&key) || ever.contains(&key);
                if !allocated_in_trace {
                    early.push(EarlyBlock {
                        device: e.device,
                        addr: e.addr,
                        size: e.size,
                        stream: e.stream,
                        line: u64::from(e.index) + 1,
                    });
                    ever.insert(key);
                }
            }
            _ => {}
        }
        match e.action {
            Action::FreeRequested => {
                requested.insert(key);
            }
            Action::FreeCompleted => {
                let had_request = requested.remove(&key);
                s.truncated |= !had_request;
            }
            _ => {}
        }
    }
    for seg in segments {
        for &(addr, size) in &seg.active {
            if ever.insert((seg.device, addr)) {
                early.push(EarlyBlock {
                    device: seg.device,
                    addr,
                    size,
                    stream: seg.stream,
                    line: 0,
                });
            }
        }
    }
    s.pre_recording_blocks = early.len() as u64;
    s.pre_recording_bytes = early.iter().map(|b| b.size).sum();

    // Reserved at the start: segments no segment_alloc/segment_map of the trace lies in.
    let mut created: Vec<(u32, u64)> = entries
        .iter()
        .filter(|e| matches!(e.action, Action::SegmentAlloc | Action::SegmentMap))
        .map(|e| (e.device, e.addr))
        .collect();
    created.sort_unstable();
    s.initial_reserved_bytes = segments
        .iter()
        .filter(|seg| {
            let from = created.partition_point(|&c| c < (seg.device, seg.address));
            !created.get(from).is_some_and(|&(d, a)| {
                d == seg.device && a < seg.address.saturating_add(seg.total_size)
            })
        })
        .map(|seg| seg.total_size)
        .fold(0u64, u64::saturating_add);

    let mut lanes = Lanes::default();
    let first_time_ns = entries
        .iter()
        .find_map(|e| e.time_us)
        .map(|t| t.saturating_mul(1000));
    let mut events = Vec::with_capacity(early.len() + entries.len());
    for b in &early {
        events.push(Event {
            thread: lanes.of(b.device, b.stream),
            time_ns: first_time_ns,
            op: OpKind::Alloc,
            ptr: b.addr,
            size: b.size,
            align: 0,
            old_ptr: 0,
            stream: Some(b.stream),
            device: Some(b.device.into()),
            line: b.line,
        });
    }
    let mut reserved = s.initial_reserved_bytes;
    s.peak_reserved_bytes = reserved;
    s.reserved_curve.push(ReservedPoint {
        event_index: 0,
        reserved_bytes: reserved,
    });
    let mut last_time_ns = first_time_ns.unwrap_or(0);
    for e in &entries {
        let time_ns = e.time_us.map(|t| {
            // Never backwards, so that canonical CSV written from these events (rows
            // sorted by time when read back) keeps this order.
            last_time_ns = last_time_ns.max(t.saturating_mul(1000));
            last_time_ns
        });
        let op = match e.action {
            Action::Alloc => OpKind::Alloc,
            a if a == free_action => OpKind::Free,
            Action::SegmentAlloc | Action::SegmentMap => {
                reserved = reserved.saturating_add(e.size);
                s.peak_reserved_bytes = s.peak_reserved_bytes.max(reserved);
                push_point(&mut s.reserved_curve, events.len() as u64, reserved);
                continue;
            }
            Action::SegmentFree | Action::SegmentUnmap => {
                reserved = reserved.saturating_sub(e.size);
                push_point(&mut s.reserved_curve, events.len() as u64, reserved);
                continue;
            }
            _ => continue,
        };
        events.push(Event {
            thread: lanes.of(e.device, e.stream),
            time_ns,
            op,
            ptr: e.addr,
            size: if op == OpKind::Free { 0 } else { e.size },
            align: 0,
            old_ptr: 0,
            stream: Some(e.stream),
            device: Some(e.device.into()),
            line: u64::from(e.index) + 1,
        });
    }
    s.final_reserved_bytes = reserved;
    s.streams = lanes.0.len() as u64;
    (events, s)
}

/// Append a point, replacing the last one when it is at the same event.
fn push_point(curve: &mut Vec<ReservedPoint>, event_index: u64, reserved_bytes: u64) {
    match curve.last_mut() {
        Some(p) if p.event_index == event_index => p.reserved_bytes = reserved_bytes,
        _ => curve.push(ReservedPoint {
            event_index,
            reserved_bytes,
        }),
    }
}
