//! Successive halving within a wall-clock budget.

use super::{rank, Evaluator, Measured, Objective};
use anyhow::bail;
use pools::PoolConfig;
use std::time::{Duration, Instant};
use workloads::CompiledTrace;

/// Candidates measured on the whole trace (the ranking table shows at least this many).
pub const MIN_FINALISTS: usize = 5;
/// The first round's prefix: this many events, or the whole trace if shorter.
const FIRST_PREFIX_EVENTS: u64 = 20_000;
/// Each round's prefix is this many times the previous one's (the last is the whole trace).
const PREFIX_GROWTH: u64 = 4;

#[derive(Debug, Clone)]
pub struct Candidate {
    pub config: PoolConfig,
    /// The latest (longest prefix) measurement.
    pub measured: Option<Measured>,
    /// The round it left the search in, if it did.
    pub eliminated_in_round: Option<usize>,
}

/// The outcome of a search.
#[derive(Debug)]
pub struct Search {
    pub candidates: Vec<Candidate>,
    /// Candidate indices, best first, among those measured on the longest prefix reached.
    pub ranking: Vec<usize>,
    /// Events of the longest prefix every ranked candidate replayed.
    pub final_events: u64,
    pub rounds: usize,
    pub elapsed: Duration,
    pub budget_cut: bool,
}

/// Successive halving within `budget`. `on_step` sees (replays done, replays planned).
pub fn search(
    trace: &CompiledTrace,
    configs: Vec<PoolConfig>,
    objective: Objective,
    runs: u32,
    budget: Duration,
    eval: &mut dyn Evaluator,
    on_step: &mut dyn FnMut(usize, usize, &str),
) -> anyhow::Result<Search> {
    let started = Instant::now();
    let total_events = trace.event_count.max(1);
    let mut cands: Vec<Candidate> = configs
        .into_iter()
        .map(|config| Candidate {
            config,
            measured: None,
            eliminated_in_round: None,
        })
        .collect();
    if cands.is_empty() {
        bail!("no candidate configuration");
    }
    // Rounds: prefixes growing by PREFIX_GROWTH from FIRST_PREFIX_EVENTS up to the whole
    // trace.
    let mut prefixes = Vec::new();
    let mut p = FIRST_PREFIX_EVENTS.min(total_events);
    while p < total_events {
        prefixes.push(p);
        p = p.saturating_mul(PREFIX_GROWTH);
    }
    prefixes.push(total_events);
    // Survivors per round: halve until MIN_FINALISTS remain for the last round.
    let mut alive: Vec<usize> = (0..cands.len()).collect();
    // Cost model: seconds per (event x run), learned from the replays so far. A replay is a
    // throughput pass and a timed pass, so it costs about twice the events.
    let mut sec_per_event_run = 0.0f64;
    let mut measured_event_runs = 0.0f64;
    let mut seconds_spent = 0.0f64;
    let mut budget_cut = false;
    let mut final_events = 0;
    let mut rounds = 0;
    let planned_total: usize = {
        let mut n = alive.len();
        let mut total = 0;
        for (i, _) in prefixes.iter().enumerate() {
            total += n;
            if i + 1 < prefixes.len() {
                n = (n / 2).max(MIN_FINALISTS.min(n));
            }
        }
        total
    };
    let mut done = 0usize;
    for (round, &events) in prefixes.iter().enumerate() {
        let last = round + 1 == prefixes.len();
        let round_runs = if last { runs } else { 1 };
        let sub = trace.prefix(events);
        // Fit the round into what is left of the budget: drop the weakest if needed.
        let left = budget.as_secs_f64() - started.elapsed().as_secs_f64();
        if measured_event_runs > 0.0 {
            let per_candidate = sec_per_event_run * events as f64 * round_runs as f64;
            let affordable = (left / per_candidate.max(1e-9)).floor() as usize;
            if affordable == 0 {
                budget_cut = true;
                break;
            }
            if affordable < alive.len() {
                budget_cut = true;
                alive.truncate(affordable.max(1));
            }
        }
        for &i in &alive {
            if started.elapsed() >= budget && done > 0 {
                budget_cut = true;
                break;
            }
            on_step(done, planned_total, &cands[i].config.summary());
            let t0 = Instant::now();
            let m = eval.evaluate(&cands[i].config, &sub, round_runs)?;
            let dt = t0.elapsed().as_secs_f64();
            seconds_spent += dt;
            measured_event_runs += events as f64 * round_runs as f64;
            sec_per_event_run = seconds_spent / measured_event_runs;
            cands[i].measured = Some(m);
            done += 1;
        }
        // Every alive candidate measured on this prefix? Otherwise rank on the previous.
        let complete = alive
            .iter()
            .all(|&i| cands[i].measured.is_some_and(|m| m.events == events));
        if !complete {
            budget_cut = true;
            alive.retain(|&i| cands[i].measured.is_some_and(|m| m.events == events));
            if alive.is_empty() {
                break;
            }
        }
        final_events = events;
        rounds = round + 1;
        if last {
            break;
        }
        // Keep the better half (at least MIN_FINALISTS).
        let view: Vec<Candidate> = alive.iter().map(|&i| cands[i].clone()).collect();
        let order = rank(&view, objective);
        let keep = (alive.len() / 2).max(MIN_FINALISTS.min(alive.len()));
        let next: Vec<usize> = order[..keep].iter().map(|&k| alive[k]).collect();
        for &i in &alive {
            if !next.contains(&i) {
                cands[i].eliminated_in_round = Some(round);
            }
        }
        alive = next;
    }
    if final_events == 0 {
        bail!(
            "the budget ({:.0} s) ran out before any candidate finished a replay; give more --budget",
            budget.as_secs_f64()
        );
    }
    // Rank the candidates measured on the final prefix.
    let finalists: Vec<usize> = (0..cands.len())
        .filter(|&i| cands[i].measured.is_some_and(|m| m.events == final_events))
        .collect();
    let view: Vec<Candidate> = finalists.iter().map(|&i| cands[i].clone()).collect();
    let ranking = rank(&view, objective)
        .into_iter()
        .map(|k| finalists[k])
        .collect();
    Ok(Search {
        candidates: cands,
        ranking,
        final_events,
        rounds,
        elapsed: started.elapsed(),
        budget_cut,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recommend::{candidates, render, TraceShape};
    use pools::AllocatorKind;
    use workloads::{OpKind, ThreadOps};

    /// An evaluator with a known answer: throughput falls with block waste.
    struct Model {
        calls: usize,
        delay: Duration,
    }

    impl Evaluator for Model {
        fn evaluate(
            &mut self,
            c: &PoolConfig,
            t: &CompiledTrace,
            runs: u32,
        ) -> anyhow::Result<Measured> {
            self.calls += 1;
            std::thread::sleep(self.delay);
            let ops = match c.allocator {
                AllocatorKind::FixedSize => 3e7,
                AllocatorKind::LockFree => 2.5e7,
                AllocatorKind::SizeClassed => 2e7,
                AllocatorKind::VariableSize => 1e7,
            };
            Ok(Measured {
                ops_per_sec: ops,
                alloc_p99_ns: 50,
                peak_reserved_bytes: c.chunk_size_bytes as u64,
                alloc_failures: 0,
                events: t.event_count,
                runs,
            })
        }
    }

    fn synthetic_trace(events: u32) -> CompiledTrace {
        use workloads::CompiledOp;
        let ops = (0..events)
            .map(|seq| CompiledOp {
                size: 64,
                seq,
                slot: 0,
                ordinal: seq,
                kind: if seq % 2 == 0 {
                    OpKind::Alloc
                } else {
                    OpKind::Free
                },
                flags: 0,
                stream: 0,
            })
            .collect();
        CompiledTrace {
            threads: vec![ThreadOps {
                trace_thread: 0,
                ops,
                times_ns: None,
            }],
            slot_count: 1,
            event_count: events as u64,
            streams: vec![],
            peak_live_bytes: 64,
        }
    }

    #[test]
    fn successive_halving_finds_the_model_winner() {
        let trace = synthetic_trace(200_000);
        let configs = candidates(&TraceShape::of(&trace));
        let n = configs.len();
        let mut model = Model {
            calls: 0,
            delay: Duration::ZERO,
        };
        let s = search(
            &trace,
            configs,
            Objective::Throughput,
            3,
            Duration::from_secs(60),
            &mut model,
            &mut |_, _, _| {},
        )
        .unwrap();
        let w = &s.candidates[s.ranking[0]];
        assert_eq!(w.config.allocator, AllocatorKind::FixedSize);
        assert_eq!(s.final_events, 200_000);
        assert!(s.ranking.len() >= MIN_FINALISTS);
        // Halving: far fewer replays than candidates x rounds.
        assert!(
            model.calls < n * s.rounds,
            "{} calls for {n} candidates",
            model.calls
        );
        assert!(!s.budget_cut);
        let text = render(&s, Objective::Throughput, 200_000, &[]);
        assert!(
            text.lines().any(|l| l.trim_start().starts_with("1 ")),
            "{text}"
        );
        assert!(text.contains("Winner:"));
    }

    #[test]
    fn budget_is_respected() {
        let trace = synthetic_trace(2_000_000);
        let configs = candidates(&TraceShape::of(&trace));
        let mut model = Model {
            calls: 0,
            delay: Duration::from_millis(40),
        };
        let budget = Duration::from_millis(500);
        let t0 = Instant::now();
        let s = search(
            &trace,
            configs,
            Objective::Balanced,
            3,
            budget,
            &mut model,
            &mut |_, _, _| {},
        );
        let spent = t0.elapsed();
        assert!(
            // The replay in flight when the budget runs out, on a loaded machine.
            spent < budget + Duration::from_millis(1000),
            "spent {spent:?}"
        );
        let s = s.unwrap();
        assert!(s.budget_cut);
        assert!(!s.ranking.is_empty());
    }
}
