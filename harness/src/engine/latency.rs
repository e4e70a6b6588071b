//! Latency histograms: per op kind and per alloc size class, recorded per worker and
//! merged (never averaged) across workers and runs with `Histogram::add`.

use hdrhistogram::Histogram;
use reports::{LatencySet, LatencySummary, SizeClassLatency};

/// Largest latency a histogram resolves (one minute); larger samples are clamped to it.
const MAX_TRACKED_NS: u64 = 60_000_000_000;
/// Significant digits of the per-op-kind histograms (0.1 % resolution).
const OP_SIGFIG: u8 = 3;
/// Per-size-class histograms are many; 1 % resolution keeps them small.
const SIZE_CLASS_SIGFIG: u8 = 2;

fn new_histogram(sigfig: u8) -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_TRACKED_NS, sigfig)
        .expect("constant histogram bounds are valid")
}

/// Log2 size class of a request: `[2^k, 2^(k+1))` is class `k`; 0 and 1 byte are class 0.
#[inline]
pub fn size_class_log2(size_bytes: u64) -> u32 {
    63 - (size_bytes | 1).leading_zeros()
}

/// Latency histograms of one pass, or merged over several.
#[derive(Debug, Clone)]
pub struct LatencyHistograms {
    pub alloc: Histogram<u64>,
    pub free: Histogram<u64>,
    pub realloc: Histogram<u64>,
    /// Alloc latency per size class, ascending by class; only classes the trace uses.
    pub alloc_by_size_class: Vec<(u32, Histogram<u64>)>,
    /// Index into `alloc_by_size_class` for each log2 class (`u8::MAX` = not present).
    class_index: [u8; 64],
}

impl LatencyHistograms {
    /// Empty histograms for a trace whose alloc/realloc requests fall in `size_classes`
    /// (ascending log2 classes). Allocates everything recording will ever need.
    pub fn new(size_classes: &[u32]) -> Self {
        let mut class_index = [u8::MAX; 64];
        for (i, &class) in size_classes.iter().enumerate() {
            class_index[class as usize] = i as u8;
        }
        LatencyHistograms {
            alloc: new_histogram(OP_SIGFIG),
            free: new_histogram(OP_SIGFIG),
            realloc: new_histogram(OP_SIGFIG),
            alloc_by_size_class: size_classes
                .iter()
                .map(|&c| (c, new_histogram(SIZE_CLASS_SIGFIG)))
                .collect(),
            class_index,
        }
    }

    #[inline]
    pub fn record_alloc(&mut self, size_bytes: u64, latency_ns: u64) {
        self.alloc.saturating_record(latency_ns);
        let index = self.class_index[size_class_log2(size_bytes) as usize];
        if let Some((_, h)) = self.alloc_by_size_class.get_mut(index as usize) {
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

    /// Add every count of `other` (same trace, hence the same classes) into `self`.
    pub fn add(&mut self, other: &LatencyHistograms) {
        add_into(&mut self.alloc, &other.alloc);
        add_into(&mut self.free, &other.free);
        add_into(&mut self.realloc, &other.realloc);
        for (class, h) in &other.alloc_by_size_class {
            match self.class_index[*class as usize] {
                u8::MAX => {
                    self.class_index[*class as usize] = self.alloc_by_size_class.len() as u8;
                    self.alloc_by_size_class.push((*class, h.clone()));
                }
                i => add_into(&mut self.alloc_by_size_class[i as usize].1, h),
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

    /// Alloc latency per size class for results.json, ascending by class.
    pub fn size_class_summary(&self) -> Vec<SizeClassLatency> {
        let mut out: Vec<SizeClassLatency> = self
            .alloc_by_size_class
            .iter()
            .filter(|(_, h)| !h.is_empty())
            .map(|(class, h)| SizeClassLatency {
                size_log2: *class,
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
    fn size_classes_are_log2_buckets() {
        assert_eq!(size_class_log2(0), 0);
        assert_eq!(size_class_log2(1), 0);
        assert_eq!(size_class_log2(2), 1);
        assert_eq!(size_class_log2(1023), 9);
        assert_eq!(size_class_log2(1024), 10);
        assert_eq!(size_class_log2(u64::MAX), 63);
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
        let classes = a.size_class_summary();
        assert_eq!(
            classes.iter().map(|c| c.size_log2).collect::<Vec<_>>(),
            [4, 10]
        );
        assert_eq!(classes[1].latency.count, 1);
    }
}
