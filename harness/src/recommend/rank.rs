//! Ranking measured candidates: the objective's score, ties to the simpler configuration,
//! failures last, and the Pareto front.

use super::{Candidate, Measured};
use pools::{AllocatorKind, HugePages, PoolConfig, ReturnPolicy};

/// Scores closer than this (natural-log units, ~10%) to the best are treated as ties: on
/// shared machines the same configuration's ops/s moves by 10-15% between runs.
pub const TIE_MARGIN: f64 = 0.10;

/// What "best" means (`--objective`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Objective {
    /// Highest ops/s.
    Throughput,
    /// Lowest alloc p99 latency.
    P99,
    /// Lowest peak reserved bytes.
    Memory,
    /// ops/s, p99 and reserved bytes weighed together.
    Balanced,
}

impl Objective {
    pub const ALL: [Objective; 4] = [
        Objective::Throughput,
        Objective::P99,
        Objective::Memory,
        Objective::Balanced,
    ];

    /// Weights on ln(ops/s), -ln(p99), -ln(reserved).
    fn weights(self) -> (f64, f64, f64) {
        match self {
            Objective::Throughput => (1.0, 0.05, 0.05),
            Objective::P99 => (0.05, 1.0, 0.05),
            Objective::Memory => (0.05, 0.05, 1.0),
            Objective::Balanced => (1.0, 0.5, 0.5),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Objective::Throughput => "throughput",
            Objective::P99 => "p99",
            Objective::Memory => "memory",
            Objective::Balanced => "balanced",
        }
    }
}

/// Score of a measurement relative to the best figures of its round (higher is better).
pub fn score(m: &Measured, best: &Measured, objective: Objective) -> f64 {
    let (wt, wp, wm) = objective.weights();
    let ln_ratio = |a: f64, b: f64| (a.max(1e-9) / b.max(1e-9)).ln();
    wt * ln_ratio(m.ops_per_sec, best.ops_per_sec)
        - wp * ln_ratio(
            m.alloc_p99_ns.max(1) as f64,
            best.alloc_p99_ns.max(1) as f64,
        )
        - wm * ln_ratio(
            m.peak_reserved_bytes.max(1) as f64,
            best.peak_reserved_bytes.max(1) as f64,
        )
}

/// Best figure on each axis among `ms` (the reference `score` divides by).
pub(super) fn best_of<'a>(ms: impl Iterator<Item = &'a Measured>) -> Measured {
    let mut best = Measured {
        ops_per_sec: 0.0,
        alloc_p99_ns: u64::MAX,
        peak_reserved_bytes: u64::MAX,
        alloc_failures: 0,
        events: 0,
        runs: 0,
    };
    for m in ms {
        best.ops_per_sec = best.ops_per_sec.max(m.ops_per_sec);
        best.alloc_p99_ns = best.alloc_p99_ns.min(m.alloc_p99_ns);
        best.peak_reserved_bytes = best.peak_reserved_bytes.min(m.peak_reserved_bytes);
    }
    best
}

/// Lower is simpler: the tie-breaker.
fn simplicity(c: &PoolConfig) -> (u8, usize, u8) {
    let kind = match c.allocator {
        AllocatorKind::FixedSize => 0,
        AllocatorKind::SizeClassed => 1,
        AllocatorKind::VariableSize => 2,
        AllocatorKind::LockFree => 3,
    };
    let extras = (c.huge_pages != HugePages::Off) as u8
        + (c.return_policy != ReturnPolicy::Keep) as u8
        + (c.alignment != PoolConfig::default_cpu().alignment) as u8
        // A single-threaded pool adds a contract (one thread at a time) to the default.
        + (c.sync == pools::SyncMode::SingleThreaded) as u8
        // Thread-cache bounds other than the defaults.
        + (c.thread_cache.enabled
            && c.thread_cache != PoolConfig::default_cpu().thread_cache) as u8;
    (kind, c.chunk_size_bytes, extras)
}

/// Order candidate indices best first: non-failing before failing, then score; among the
/// non-failing ones within `TIE_MARGIN` of the best score, the simplest first.
pub fn rank(cands: &[Candidate], objective: Objective) -> Vec<usize> {
    let measured: Vec<usize> = (0..cands.len())
        .filter(|&i| cands[i].measured.is_some())
        .collect();
    let best = best_of(measured.iter().filter_map(|&i| cands[i].measured.as_ref()));
    let scored = |i: usize| {
        let m = cands[i].measured.as_ref().expect("measured");
        (m.alloc_failures > 0, score(m, &best, objective))
    };
    let mut order = measured.clone();
    order.sort_by(|&a, &b| {
        let (fa, sa) = scored(a);
        let (fb, sb) = scored(b);
        fa.cmp(&fb).then(sb.total_cmp(&sa))
    });
    // Tie group at the top: the non-failing candidates within TIE_MARGIN of the leader.
    if let Some(&lead) = order.first() {
        let (lead_fails, lead_score) = scored(lead);
        let tied = order
            .iter()
            .take_while(|&&i| {
                let (f, s) = scored(i);
                f == lead_fails && lead_score - s <= TIE_MARGIN
            })
            .count();
        order[..tied].sort_by(|&a, &b| {
            simplicity(&cands[a].config)
                .cmp(&simplicity(&cands[b].config))
                .then(scored(b).1.total_cmp(&scored(a).1))
        });
    }
    order
}

/// Pareto front over (ops/s up, p99 down, reserved down) among `idx`.
pub fn pareto_front(cands: &[Candidate], idx: &[usize]) -> Vec<usize> {
    let m = |i: usize| cands[i].measured.expect("measured");
    idx.iter()
        .copied()
        .filter(|&i| {
            let a = m(i);
            !idx.iter().any(|&j| {
                let b = m(j);
                j != i
                    && b.ops_per_sec >= a.ops_per_sec
                    && b.alloc_p99_ns <= a.alloc_p99_ns
                    && b.peak_reserved_bytes <= a.peak_reserved_bytes
                    && (b.ops_per_sec > a.ops_per_sec
                        || b.alloc_p99_ns < a.alloc_p99_ns
                        || b.peak_reserved_bytes < a.peak_reserved_bytes)
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pools::SyncMode;

    fn cand(kind: AllocatorKind, ops: f64, p99: u64, res: u64, fail: u64) -> Candidate {
        Candidate {
            config: PoolConfig {
                allocator: kind,
                sync: if kind == AllocatorKind::LockFree {
                    SyncMode::LockFree
                } else {
                    SyncMode::Mutex
                },
                ..PoolConfig::default_cpu()
            },
            measured: Some(Measured {
                ops_per_sec: ops,
                alloc_p99_ns: p99,
                peak_reserved_bytes: res,
                alloc_failures: fail,
                events: 10,
                runs: 1,
            }),
            eliminated_in_round: None,
        }
    }

    #[test]
    fn failing_candidates_never_win_unless_all_fail() {
        let cs = vec![
            cand(AllocatorKind::VariableSize, 1e9, 10, 1 << 20, 3),
            cand(AllocatorKind::SizeClassed, 1e6, 100, 1 << 24, 0),
        ];
        assert_eq!(rank(&cs, Objective::Throughput)[0], 1);
        let all_fail = vec![
            cand(AllocatorKind::VariableSize, 1e9, 10, 1 << 20, 3),
            cand(AllocatorKind::SizeClassed, 1e6, 100, 1 << 24, 1),
        ];
        let order = rank(&all_fail, Objective::Throughput);
        assert_eq!(order[0], 0);
    }

    #[test]
    fn objective_changes_the_winner() {
        let cs = vec![
            cand(AllocatorKind::LockFree, 2e7, 200, 64 << 20, 0),
            cand(AllocatorKind::VariableSize, 1e7, 100, 8 << 20, 0),
        ];
        assert_eq!(rank(&cs, Objective::Throughput)[0], 0);
        assert_eq!(rank(&cs, Objective::Memory)[0], 1);
        assert_eq!(rank(&cs, Objective::P99)[0], 1);
    }

    #[test]
    fn ties_go_to_the_simpler_configuration() {
        let cs = vec![
            cand(AllocatorKind::SizeClassed, 1.01e7, 100, 1 << 20, 0),
            cand(AllocatorKind::FixedSize, 1.00e7, 100, 1 << 20, 0),
        ];
        assert_eq!(rank(&cs, Objective::Balanced)[0], 1);
        // A clear win is not a tie.
        let cs = vec![
            cand(AllocatorKind::SizeClassed, 2e7, 100, 1 << 20, 0),
            cand(AllocatorKind::FixedSize, 1e7, 100, 1 << 20, 0),
        ];
        assert_eq!(rank(&cs, Objective::Balanced)[0], 0);
        // Non-default thread-cache bounds are an extra, as the other knobs are.
        let mut deep = cand(AllocatorKind::SizeClassed, 1.01e7, 100, 1 << 20, 0);
        deep.config.thread_cache.max_class_bytes = 32 * 1024;
        deep.config.thread_cache.max_thread_bytes = 512 * 1024;
        let cs = vec![
            deep,
            cand(AllocatorKind::SizeClassed, 1.00e7, 100, 1 << 20, 0),
        ];
        assert_eq!(rank(&cs, Objective::Balanced)[0], 1);
    }

    #[test]
    fn pareto_front_drops_dominated_points() {
        let cs = vec![
            cand(AllocatorKind::LockFree, 2e7, 200, 64 << 20, 0),
            cand(AllocatorKind::VariableSize, 1e7, 100, 8 << 20, 0),
            cand(AllocatorKind::SizeClassed, 0.5e7, 300, 80 << 20, 0),
        ];
        let front = pareto_front(&cs, &[0, 1, 2]);
        assert_eq!(front, vec![0, 1]);
    }
}
