//! `load_trace`: the one call the harness makes. Read (any format, global order) ->
//! sanitise -> statistics and compiled form, in a single streaming pass.

use std::path::{Path, PathBuf};

use crate::compiled::CompiledTrace;
use crate::compiler::Compiler;
use crate::error::TraceError;
use crate::formats::pytorch::SnapshotSummary;
use crate::formats::{
    ordered_events_from_input, read_ordered_events_with, ReadOptions, TraceFormat,
};
use crate::sanitize::{SanitationReport, Sanitizer};
use crate::stats::{StatsCollector, TraceStats};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// The first sanitation problem is an error instead of a repair.
    pub strict: bool,
    /// Keep each op's `time_ns` in the compiled trace (for `--pace`).
    pub keep_times: bool,
    /// How to read: where reading stops with an error (input bytes, events, ordering
    /// memory), and the format readers' choices (PyTorch's free point).
    pub read: ReadOptions,
}

#[derive(Debug, Clone)]
pub struct LoadedTrace {
    pub path: PathBuf,
    pub format: TraceFormat,
    pub compiled: CompiledTrace,
    pub stats: TraceStats,
    pub sanitation: SanitationReport,
    /// PyTorch snapshots: what the snapshot held besides its events.
    pub snapshot: Option<SnapshotSummary>,
}

/// Read, sanitise, measure and compile the trace at `path`.
pub fn load_trace(path: &Path, opts: &LoadOptions) -> Result<LoadedTrace, TraceError> {
    load_input(path, crate::input::open(path)?, opts)
}

/// [`load_trace`] over an already opened `input` (a fuzzer's bytes); `path` only names it
/// in errors.
pub fn load_input(
    path: &Path,
    input: crate::input::Input,
    opts: &LoadOptions,
) -> Result<LoadedTrace, TraceError> {
    let mut events = ordered_events_from_input(path, input, &opts.read)?;
    let format = events.format();
    let mut sanitizer = Sanitizer::new(path, opts.strict);
    let mut stats = StatsCollector::new();
    let mut compiler = Compiler::new(path, opts.keep_times);
    let mut compile_error = None;
    for e in events.by_ref() {
        sanitizer.process(e?, &mut |clean| {
            // The compiler's slot table tracks every block, for the statistics too.
            if compile_error.is_none() {
                match compiler.push_resolved(&clean) {
                    Ok(resolved) => stats.count(&clean, &resolved),
                    Err(err) => compile_error = Some(err),
                }
            }
        })?;
        if let Some(err) = compile_error.take() {
            return Err(err);
        }
    }
    let alloc_failures = events.alloc_failures();
    let snapshot = events.snapshot().cloned();
    drop(events);
    let sanitation = sanitizer.finish();
    let stats = stats.finish(alloc_failures, sanitation);
    Ok(LoadedTrace {
        path: path.to_path_buf(),
        format,
        compiled: compiler.finish(),
        stats,
        sanitation,
        snapshot,
    })
}

/// Read and sanitise the trace at `path` and compute its statistics only, streaming
/// (within the default `ReadLimits`).
pub fn trace_stats_of(path: &Path, strict: bool) -> Result<(TraceFormat, TraceStats), TraceError> {
    trace_stats_with(path, strict, &ReadOptions::default()).map(|(f, s, _)| (f, s))
}

/// [`trace_stats_of`] with the readers' options and limits; also what a PyTorch snapshot
/// held besides its events.
pub fn trace_stats_with(
    path: &Path,
    strict: bool,
    read: &ReadOptions,
) -> Result<(TraceFormat, TraceStats, Option<SnapshotSummary>), TraceError> {
    let mut events = read_ordered_events_with(path, read)?;
    let format = events.format();
    let mut sanitizer = Sanitizer::new(path, strict);
    let mut stats = StatsCollector::new();
    for e in events.by_ref() {
        sanitizer.process(e?, &mut |clean| stats.observe(&clean))?;
        if let Some(err) = stats.live_overflow(path) {
            return Err(err);
        }
    }
    let sanitation = sanitizer.finish();
    let snapshot = events.snapshot().cloned();
    Ok((
        format,
        stats.finish(events.alloc_failures(), sanitation),
        snapshot,
    ))
}
