//! Reference rows taken from the trace itself rather than replayed: `torch-caching`, what
//! PyTorch's caching allocator reserved while a snapshot was recorded.

use reports::{BackendResult, LatencySet, MemorySample, Status, TraceResult};
use workloads::SnapshotSummary;

/// The row's name in the table and in results.json.
pub const TORCH_CACHING: &str = "torch-caching";

/// Add the `torch-caching` row and the snapshot's summary to a replayed snapshot trace.
///
/// Its memory series is PyTorch's reserved curve (a step function of the event index)
/// read at the sample points of the first replayed backend that has a series, plus the
/// curve's peak, so that the memory plot draws it against the same axis and live bytes.
pub fn add_pytorch_row(trace: &mut TraceResult, snapshot: &SnapshotSummary) {
    trace.pytorch = serde_json::to_value(snapshot).ok();
    let reference: Vec<MemorySample> = trace
        .results
        .iter()
        .find(|r| r.status == Status::Ok && !r.recorded && !r.memory_series.is_empty())
        .map(|r| r.memory_series.clone())
        .unwrap_or_default();
    let mut series: Vec<MemorySample> = reference
        .iter()
        .map(|s| MemorySample {
            seq: s.seq,
            live_bytes: s.live_bytes,
            // `seq` is the event after which the sample was taken: seq + 1 events have run.
            reserved_bytes: snapshot.reserved_after(s.seq + 1),
        })
        .collect();
    if let Some(peak) = snapshot
        .reserved_curve
        .iter()
        .filter(|p| p.reserved_bytes == snapshot.peak_reserved_bytes)
        .min_by_key(|p| p.event_index)
    {
        let seq = peak.event_index.saturating_sub(1);
        let live_bytes = reference
            .iter()
            .take_while(|s| s.seq <= seq)
            .last()
            .map_or(0, |s| s.live_bytes);
        let at = series.partition_point(|s| s.seq < seq);
        if series.get(at).map(|s| s.seq) != Some(seq) {
            series.insert(
                at,
                MemorySample {
                    seq,
                    live_bytes,
                    reserved_bytes: peak.reserved_bytes,
                },
            );
        }
    }
    trace.results.push(BackendResult {
        backend: TORCH_CACHING.to_owned(),
        status: Status::Ok,
        reason: None,
        runs: Vec::new(),
        ops_per_sec: 0.0,
        latency_ns: LatencySet::default(),
        peak_reserved_bytes: snapshot.peak_reserved_bytes,
        alloc_failures: snapshot.ooms,
        reserved_source: Some("pytorch-segments".to_owned()),
        // Live bytes at PyTorch's reserved peak are not known exactly here.
        fragmentation: None,
        config: Some(
            "PyTorch's CUDA caching allocator, as recorded in the snapshot (not replayed)"
                .to_owned(),
        ),
        min_capacity_bytes: None,
        memory_series: series,
        alloc_latency_by_size_bucket: Vec::new(),
        counts: None,
        recorded: true,
    });
}
