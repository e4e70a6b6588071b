//! Latency histograms: per op kind and per alloc size bucket, recorded per worker and
//! merged (never averaged) across workers and runs with `Histogram::add`.

use hdrhistogram::Histogram;
use reports::{LatencySet, LatencySummary, SizeBucketLatency};

/// Largest latency a histogram resolves (one minute); larger samples are clamped to it.
const MAX_TRACKED_NS: u64 = 60_000_000_000;
/// Significant digits of the per-op-kind histograms (0.1 % resolution).
const OP_SIGFIG: u8 = 3;
/// Per-size-bucket histograms are many; 1 % resolution keeps them small.
const SIZE_BUCKET_SIGFIG: u8 = 2;

fn new_histogram(sigfig: u8) -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_TRACKED_NS, sigfig)
        .expect("constant histogram bounds are valid")
}

/// Log2 size bucket of a request: `[2^k, 2^(k+1))` is bucket `k`; 0 and 1 byte are bucket 0.
/// (Size buckets only group latencies; they are not the allocators' size buckets.)
#[inline]
pub fn size_bucket_log2(size_bytes: u64) -> u32 {
    63 - (size_bytes | 1).leading_zeros()
}

/// Latency histograms of one pass, or merged over several.
#[derive(Debug, Clone)]
pub struct LatencyHistograms {
    pub alloc: Histogram<u64>,
    pub free: Histogram<u64>,
    pub realloc: Histogram<u64>,
    /// Alloc latency per size bucket, ascending by bucket; only buckets the trace uses.
    pub alloc_by_size_bucket: Vec<(u32, Histogram<u64>)>,
    /// Index into `alloc_by_size_bucket` for each log2 bucket (`u8::MAX` = not present).
    bucket_index: [u8; 64],
}

impl LatencyHistograms {
    /// Empty histograms for a trace whose alloc/realloc requests fall in `size_buckets`
    /// (ascending log2 buckets). Allocates everything recording will ever need.
    pub fn new(size_buckets: &[u32]) -> Self {
        let mut bucket_index = [u8::MAX; 64];
        for (i, &bucket) in size_buckets.iter().enumerate() {
            bucket_index[bucket as usize] = i as u8;
        }
        LatencyHistograms {
            alloc: new_histogram(OP_SIGFIG),
            free: new_histogram(OP_SIGFIG),
            realloc: new_histogram(OP_SIGFIG),
            alloc_by_size_bucket: size_buckets
                .iter()
                .map(|&c| (c, new_histogram(SIZE_BUCKET_SIGFIG)))
                .collect(),
            bucket_index,
        }
    }

    #[inline]
    pub fn record_alloc(&mut self, size_bytes: u64, latency_ns: u64) {
        self.alloc.saturating_record(latency_ns);
        let index = self.bucket_index[size_bucket_log2(size_bytes) as usize];
        if let Some((_, h)) = self.alloc_by_size_bucket.get_mut(index as usize) {
            h.saturating_record(latency_ns);
        }
    }

    #[inline]
    pub fn record_free(&mut self, latency_ns: u64) {
        self.free.saturating_record(latency_ns);
    }

    #[inline]
    pub fn record_realloc(&mut self, latency_ns: u64) {
        self.realloc.saturating_record(latency_ns);
    }

    /// Add every count of `other` (same trace, hence the same buckets) into `self`.
    pub fn add(&mut self, other: &LatencyHistograms) {
        add_into(&mut self.alloc, &other.alloc);
        add_into(&mut self.free, &other.free);
        add_into(&mut self.realloc, &other.realloc);
        for (bucket, h) in &other.alloc_by_size_bucket {
            match self.bucket_index[*bucket as usize] {
                u8::MAX => {
                    self.bucket_index[*bucket as usize] = self.alloc_by_size_bucket.len() as u8;
                    self.alloc_by_size_bucket.push((*bucket, h.clone()));
                }
                i => add_into(&mut self.alloc_by_size_bucket[i as usize].1, h),
            }
        }
    }

    /// Percentile summaries for results.json.
    pub fn summary(&self) -> LatencySet {
        LatencySet {
            alloc: summarize(&self.alloc),
            free: summarize(&self.free),
            realloc: summarize(&self.realloc),
        }
    }

    /// Alloc latency per size bucket for results.json, ascending by bucket.
    pub fn size_bucket_summary(&self) -> Vec<SizeBucketLatency> {
        let mut out: Vec<SizeBucketLatency> = self
            .alloc_by_size_bucket
            .iter()
            .filter(|(_, h)| !h.is_empty())
            .map(|(bucket, h)| SizeBucketLatency {
                size_log2: *bucket,
                latency: summarize(h),
            })
            .collect();
        out.sort_by_key(|s| s.size_log2);
        out
    }
}

fn add_into(into: &mut Histogram<u64>, from: &Histogram<u64>) {
    // Both histograms come from `new_histogram` with the same bounds; `add` fails only
    // when `from` holds values beyond `into`'s range, which equal bounds rule out.
    into.add(from)
        .expect("histograms of one replay share their bounds");
}

/// Count and percentiles of one histogram (all 0 when empty).
pub fn summarize(h: &Histogram<u64>) -> LatencySummary {
    if h.is_empty() {
        return LatencySummary::default();
    }
    LatencySummary {
        count: h.len(),
        p50: h.value_at_quantile(0.50),
        p90: h.value_at_quantile(0.90),
        p99: h.value_at_quantile(0.99),
        p999: h.value_at_quantile(0.999),
        max: h.max(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_buckets_are_log2() {
        assert_eq!(size_bucket_log2(0), 0);
        assert_eq!(size_bucket_log2(1), 0);
        assert_eq!(size_bucket_log2(2), 1);
        assert_eq!(size_bucket_log2(1023), 9);
        assert_eq!(size_bucket_log2(1024), 10);
        assert_eq!(size_bucket_log2(u64::MAX), 63);
    }

    #[test]
    fn merging_adds_counts_instead_of_averaging() {
        let mut a = LatencyHistograms::new(&[4]);
        let mut b = LatencyHistograms::new(&[4, 10]);
        for _ in 0..99 {
            a.record_alloc(16, 10);
        }
        b.record_alloc(1024, 10_000);
        a.add(&b);
        let s = a.summary();
        assert_eq!(s.alloc.count, 100);
        assert_eq!(s.alloc.p50, 10);
        assert!(s.alloc.max >= 9_990, "max {}", s.alloc.max);
        let buckets = a.size_bucket_summary();
        assert_eq!(
            buckets.iter().map(|c| c.size_log2).collect::<Vec<_>>(),
            [4, 10]
        );
        assert_eq!(buckets[1].latency.count, 1);
    }
}
