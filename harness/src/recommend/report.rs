//! What `replay recommend` prints: the ranking table, the Pareto front and why the winner
//! won.

use super::rank::best_of;
use super::{pareto_front, score, Objective, Reference, Search, TIE_MARGIN};
use pools::config::human_bytes;
use reports::{Align, Table};
use std::fmt::Write as _;

/// The ranking table (with the `references` as unranked rows after the candidates), the
/// Pareto front and a few sentences on why the winner won.
pub fn render(
    search: &Search,
    objective: Objective,
    trace_events: u64,
    references: &[Reference],
) -> String {
    let c = &search.candidates;
    let m = |i: usize| c[i].measured.expect("ranked candidates are measured");
    let front = pareto_front(c, &search.ranking);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "objective: {}; {} candidates, {} rounds, {:.1} s; ranked on {} of {} events{}",
        objective.as_str(),
        c.len(),
        search.rounds,
        search.elapsed.as_secs_f64(),
        search.final_events,
        trace_events,
        if search.budget_cut {
            " (budget reached: some replays were cut)"
        } else {
            ""
        }
    );
    // Rank, the Pareto mark and the configuration on the left; figures right-aligned.
    let mut table = Table::new(&[
        "rank",
        "",
        "configuration",
        "ops/s",
        "alloc p99",
        "reserved",
        "failures",
    ])
    .align(0, Align::Right)
    .align_from(3, Align::Right);
    for (r, &i) in search.ranking.iter().enumerate() {
        let mm = m(i);
        table.row(vec![
            (r + 1).to_string(),
            if front.contains(&i) { "*" } else { "" }.to_owned(),
            c[i].config.summary(),
            format!("{:.0}", mm.ops_per_sec),
            format!("{} ns", mm.alloc_p99_ns),
            human_bytes(mm.peak_reserved_bytes),
            mm.alloc_failures.to_string(),
        ]);
    }
    let mut not_measured = Vec::new();
    for reference in references {
        let figures = match &reference.measured {
            Ok(m) => vec![
                format!("{:.0}", m.ops_per_sec),
                format!("{} ns", m.alloc_p99_ns),
                human_bytes(m.peak_reserved_bytes),
                m.alloc_failures.to_string(),
            ],
            Err(why) => {
                not_measured.push(format!("  {} {why}", reference.backend));
                vec!["-".to_owned(); 4]
            }
        };
        let mut row = vec![
            "ref".to_owned(),
            String::new(),
            reference.backend.to_owned(),
        ];
        row.extend(figures);
        table.row(row);
    }
    out.push_str(&table.text());
    for line in not_measured {
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(
        out,
        "* = on the Pareto front over (ops/s, alloc p99, reserved)"
    );
    if !references.is_empty() {
        let _ = writeln!(
            out,
            "ref = a reference allocator replayed the same way, for scale (not ranked)"
        );
    }
    out.push('\n');
    out.push_str(&explain(search, objective));
    out
}

/// Why the winner won and what it gives up, in a few sentences.
pub fn explain(search: &Search, objective: Objective) -> String {
    let c = &search.candidates;
    let Some(&win) = search.ranking.first() else {
        return "No candidate finished.\n".into();
    };
    let w = c[win].measured.expect("measured");
    let mut s = String::new();
    if w.alloc_failures > 0 {
        let _ = writeln!(
            s,
            "Every candidate failed allocations on this trace; the winner failed {} — \
             raise the pool's max_size_bytes or the machine's memory before trusting it.",
            w.alloc_failures
        );
    }
    let others: Vec<usize> = search.ranking.iter().copied().skip(1).collect();
    let best_ops = search
        .ranking
        .iter()
        .map(|&i| c[i].measured.expect("m").ops_per_sec)
        .fold(0.0, f64::max);
    let best_p99 = search
        .ranking
        .iter()
        .map(|&i| c[i].measured.expect("m").alloc_p99_ns)
        .min()
        .unwrap_or(0);
    let best_res = search
        .ranking
        .iter()
        .map(|&i| c[i].measured.expect("m").peak_reserved_bytes)
        .min()
        .unwrap_or(0);
    let _ = write!(
        s,
        "Winner: {} — {:.0} ops/s, alloc p99 {} ns, {} reserved at peak.",
        c[win].config.summary(),
        w.ops_per_sec,
        w.alloc_p99_ns,
        human_bytes(w.peak_reserved_bytes)
    );
    if let Some(&second) = others.first() {
        let r = c[second].measured.expect("m");
        let _ = write!(
            s,
            " Against the runner-up ({}): {:+.1}% ops/s, {:+.1}% p99, {:+.1}% reserved.",
            c[second].config.summary(),
            pct(w.ops_per_sec, r.ops_per_sec),
            pct(w.alloc_p99_ns as f64, r.alloc_p99_ns as f64),
            pct(w.peak_reserved_bytes as f64, r.peak_reserved_bytes as f64)
        );
        let bs = best_of(
            search
                .ranking
                .iter()
                .map(|i| c[*i].measured.as_ref().expect("m")),
        );
        if (score(&w, &bs, objective) - score(&r, &bs, objective)).abs() <= TIE_MARGIN
            && w.alloc_failures == r.alloc_failures
        {
            let _ = write!(
                s,
                " The two are within the noise of one machine ({:.0}%); the simpler configuration is preferred.",
                TIE_MARGIN * 100.0
            );
        }
    }
    let mut trades = Vec::new();
    if w.ops_per_sec < best_ops * 0.97 {
        trades.push(format!(
            "{:.1}% of the best throughput",
            100.0 * w.ops_per_sec / best_ops.max(1e-9)
        ));
    }
    if best_p99 > 0 && w.alloc_p99_ns as f64 > best_p99 as f64 * 1.03 {
        trades.push(format!(
            "a p99 {:.2}x the lowest",
            w.alloc_p99_ns as f64 / best_p99 as f64
        ));
    }
    if best_res > 0 && w.peak_reserved_bytes as f64 > best_res as f64 * 1.03 {
        trades.push(format!(
            "{:.2}x the reserved memory of the leanest",
            w.peak_reserved_bytes as f64 / best_res as f64
        ));
    }
    if trades.is_empty() {
        let _ = writeln!(
            s,
            " It gives nothing up: it is at or within 3% of the best on every measure."
        );
    } else {
        let _ = writeln!(s, " It trades away: {}.", trades.join(", "));
    }
    s
}

fn pct(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        0.0
    } else {
        100.0 * (a - b) / b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recommend::{Candidate, Measured};
    use pools::{HugePages, PoolConfig, ReturnPolicy};
    use std::time::Duration;

    fn measured(ops_per_sec: f64) -> Measured {
        Measured {
            ops_per_sec,
            alloc_p99_ns: 100,
            peak_reserved_bytes: 1 << 20,
            alloc_failures: 0,
            events: 1000,
            runs: 1,
        }
    }

    #[test]
    fn long_configurations_are_shown_whole_and_references_unranked() {
        // A configuration whose summary is longer than any fixed column would be.
        let config = PoolConfig {
            huge_pages: HugePages::Madvise,
            return_policy: ReturnPolicy::WhenEmpty,
            alignment: 64,
            ..PoolConfig::default_cpu()
        };
        let summary = config.summary();
        assert!(summary.chars().count() > 58, "{summary}");
        let search = Search {
            candidates: vec![Candidate {
                config,
                measured: Some(measured(2e7)),
                eliminated_in_round: None,
            }],
            ranking: vec![0],
            final_events: 1000,
            rounds: 1,
            elapsed: Duration::from_millis(10),
            budget_cut: false,
        };
        let references = [
            Reference {
                backend: "system",
                measured: Ok(measured(1e7)),
            },
            Reference {
                backend: "cuda-async",
                measured: Err("skipped: CUDA not found".into()),
            },
        ];
        let text = render(&search, Objective::Throughput, 1000, &references);
        let rows: Vec<&str> = text.lines().map(str::trim_start).collect();
        let first = rows.iter().find(|l| l.starts_with("1 ")).expect(&text);
        assert!(first.contains(&summary), "{text}");
        assert!(!text.contains('…'), "{text}");
        let system = rows
            .iter()
            .find(|l| l.starts_with("ref") && l.contains("system"))
            .expect(&text);
        assert!(system.contains("10000000"), "{text}");
        assert!(rows
            .iter()
            .any(|l| l.starts_with("ref") && l.contains("cuda-async")));
        assert!(
            text.contains("cuda-async skipped: CUDA not found"),
            "{text}"
        );
        // The winner is still the ranked candidate, not a reference.
        assert!(text.contains(&format!("Winner: {summary}")), "{text}");
    }
}
