//! What `replay recommend` prints: the ranking table, the Pareto front and why the winner
//! won.

use super::rank::best_of;
use super::{pareto_front, score, Objective, Search, TIE_MARGIN};
use pools::config::human_bytes;
use reports::{Align, Table};
use std::fmt::Write as _;

/// The ranking table, the Pareto front and a few sentences on why the winner won.
pub fn render(search: &Search, objective: Objective, trace_events: u64) -> String {
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
            truncate(&c[i].config.summary(), 58),
            format!("{:.0}", mm.ops_per_sec),
            format!("{} ns", mm.alloc_p99_ns),
            human_bytes(mm.peak_reserved_bytes),
            mm.alloc_failures.to_string(),
        ]);
    }
    out.push_str(&table.text());
    let _ = writeln!(
        out,
        "* = on the Pareto front over (ops/s, alloc p99, reserved)"
    );
    out.push('\n');
    out.push_str(&explain(search, objective));
    out
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
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
