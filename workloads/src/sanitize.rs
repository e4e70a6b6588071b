//! Trace sanitation: making a recorded trace replayable.
//!
//! Recorders lose events (a free logged before its alloc, a process that forked, a buffer
//! dropped at exit), so real traces contain impossible sequences. Each one is repaired and
//! counted by default; with `strict` the first one is an error naming file, line and
//! pointer.
//!
//! | problem                         | repair                                  | counter              |
//! |---------------------------------|-----------------------------------------|----------------------|
//! | alloc / realloc to a live ptr   | free the old block first (same thread)  | `live_reallocations` |
//! | free of a never-seen pointer    | drop the free                           | `unknown_frees`      |
//! | free of an already-freed ptr    | drop the free                           | `double_frees`       |
//! | realloc of an unknown old ptr   | realloc from nothing (a fresh alloc)    | `unknown_reallocs`   |
//!
//! `repaired` is the sum of the four; `leaks` counts blocks still live at the end (not a
//! repair: a leak replays fine).

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::TraceError;
use crate::event::{Event, OpKind};
use crate::ptrmap::PtrMap;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SanitationReport {
    /// Events repaired or dropped: the sum of the four counters below.
    pub repaired: u64,
    pub unknown_frees: u64,
    pub double_frees: u64,
    /// Allocs (or realloc results) of a pointer that was still live.
    pub live_reallocations: u64,
    pub unknown_reallocs: u64,
    /// Blocks live at the end of the trace.
    pub leaks: u64,
}

impl SanitationReport {
    /// Whether the trace needed no repair (leaks are allowed).
    pub fn is_clean(&self) -> bool {
        self.repaired == 0
    }
}

/// Streaming sanitizer: feed events in global order with `process`, then `finish`.
pub struct Sanitizer {
    path: PathBuf,
    strict: bool,
    /// `true` while the pointer is live, `false` once freed (to tell double frees from
    /// frees of pointers never seen). Invariant: `live_count` = number of `true` values.
    blocks: PtrMap<bool>,
    live_count: u64,
    report: SanitationReport,
}

impl Sanitizer {
    pub fn new(path: &Path, strict: bool) -> Self {
        Sanitizer {
            path: path.to_path_buf(),
            strict,
            blocks: PtrMap::default(),
            live_count: 0,
            report: SanitationReport::default(),
        }
    }

    fn problem(&mut self, e: &Event, problem: &'static str, ptr: u64) -> Result<(), TraceError> {
        if self.strict {
            return Err(TraceError::Strict {
                path: self.path.clone(),
                line: e.line,
                problem,
                ptr,
            });
        }
        self.report.repaired += 1;
        Ok(())
    }

    /// Take `ptr` live for event `e`; a still-live block at `ptr` is freed first.
    fn make_live(&mut self, e: &Event, out: &mut impl FnMut(Event)) -> Result<(), TraceError> {
        let state = self.blocks.entry(e.ptr).or_insert(false);
        if *state {
            self.problem(e, "alloc of still-live pointer", e.ptr)?;
            self.report.live_reallocations += 1;
            out(Event {
                op: OpKind::Free,
                size: 0,
                align: 0,
                old_ptr: 0,
                ..*e
            });
        } else {
            *state = true;
            self.live_count += 1;
        }
        Ok(())
    }

    /// Sanitise one event, passing the repaired sequence (zero, one or two events) to `out`.
    pub fn process(&mut self, e: Event, out: &mut impl FnMut(Event)) -> Result<(), TraceError> {
        match e.op {
            OpKind::Alloc => {
                self.make_live(&e, out)?;
                out(e);
            }
            OpKind::Free => match self.blocks.get_mut(&e.ptr) {
                Some(live @ true) => {
                    *live = false;
                    self.live_count -= 1;
                    out(e);
                }
                Some(false) => {
                    self.problem(&e, "double free of pointer", e.ptr)?;
                    self.report.double_frees += 1;
                }
                None => {
                    self.problem(&e, "free of unknown pointer", e.ptr)?;
                    self.report.unknown_frees += 1;
                    self.blocks.insert(e.ptr, false);
                }
            },
            OpKind::Realloc => {
                let mut e = e;
                if e.old_ptr != 0 && e.old_ptr != e.ptr {
                    match self.blocks.get_mut(&e.old_ptr) {
                        Some(live @ true) => {
                            *live = false;
                            self.live_count -= 1;
                        }
                        _ => {
                            self.problem(&e, "realloc of unknown pointer", e.old_ptr)?;
                            self.report.unknown_reallocs += 1;
                            e.old_ptr = 0;
                        }
                    }
                    self.make_live(&e, out)?;
                } else if e.old_ptr == 0 {
                    self.make_live(&e, out)?;
                } else if self.blocks.get(&e.ptr) != Some(&true) {
                    // In-place realloc of a block that is not live.
                    self.problem(&e, "realloc of unknown pointer", e.old_ptr)?;
                    self.report.unknown_reallocs += 1;
                    e.old_ptr = 0;
                    self.make_live(&e, out)?;
                }
                out(e);
            }
        }
        Ok(())
    }

    /// Blocks live now.
    pub fn live_blocks(&self) -> u64 {
        self.live_count
    }

    pub fn finish(self) -> SanitationReport {
        SanitationReport {
            leaks: self.live_count,
            ..self.report
        }
    }
}
