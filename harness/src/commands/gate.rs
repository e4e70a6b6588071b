//! `replay gate --baseline ci/baseline.json [--counts] [--runs N] [--out DIR] [--junit FILE]
//! <TRACES…>`: replay now, judge against the baseline in two tiers — counts with an exact
//! margin, wall-clock through per-run ratios to the `system` backend after an A/A stability
//! check (see `reports::gate`). Exit 0 pass/inconclusive, 1 regression, 2 usage error,
//! 3 neither tier could decide.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::Context;
use reports::compare::{render_comparison, TableFormat};
use reports::gate::{GateOptions, DEFAULT_REFERENCE_BACKEND, MIN_GATE_RUNS};
use reports::{gate_results, read_results_json, RunArtifacts};

use super::compare::StatArgs;
use crate::backends::BackendSelection;
use crate::runner::{replay_traces, ReplayOptions};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The baseline results.json (refresh it with ci/update-baseline.sh).
    #[arg(long, value_name = "FILE")]
    pub baseline: PathBuf,
    /// Traces to replay now.
    #[arg(value_name = "TRACE", required_unless_present = "current")]
    pub traces: Vec<PathBuf>,
    /// Measured runs per backend (at least 6: the A/A check splits them in halves).
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub runs: usize,
    /// Backends [default: the baseline's backends, plus the reference].
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub backends: Vec<String>,
    /// Pool configuration for the pool backends: a TOML file or a preset name [default:
    /// default_cpu] (e.g. to check that a costlier config is caught).
    #[arg(long, value_name = "FILE|PRESET")]
    pub config: Option<String>,
    /// Worker threads [default: min(trace threads, cores)].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// The backend every other one is divided by, run by run.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_REFERENCE_BACKEND)]
    pub reference: String,
    /// Judge this results.json instead of replaying now.
    #[arg(long, value_name = "FILE", conflicts_with = "traces")]
    pub current: Option<PathBuf>,
    /// Write results.json, .hgrm, plots, report.html and summary.md (with verdicts) here.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Shortest throughput sample in milliseconds (each run repeats the trace until its
    /// passes last this long).
    #[arg(long, value_name = "MS", default_value_t = 200)]
    pub min_sample_ms: u64,
    /// Collect and judge the counts tier too (valgrind): deterministic, so it decides even
    /// where timings are too noisy.
    #[arg(long)]
    pub counts: bool,
    /// Write the verdicts as JUnit XML here.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Table format on stdout.
    #[arg(long, value_enum, default_value_t = super::compare::Format::Text)]
    pub format: super::compare::Format,
    #[command(flatten)]
    pub stats: StatArgs,
}

pub fn run(args: Args) -> anyhow::Result<i32> {
    let options = GateOptions {
        compare: args.stats.options()?,
        reference_backend: args.reference.clone(),
    };
    let baseline = read_results_json(&args.baseline)?;
    // Found before the replay, not after it: an unwritable --out loses nothing.
    let staged = match &args.out {
        Some(dir) => Some(
            reports::StagedDir::prepare(dir)
                .with_context(|| format!("--out {}: cannot write there", dir.display()))?,
        ),
        None => None,
    };
    let artifacts = match &args.current {
        Some(path) => RunArtifacts {
            results: read_results_json(path)?,
            histograms: Vec::new(),
        },
        None => {
            if args.runs < MIN_GATE_RUNS {
                anyhow::bail!(
                    "--runs {}: the gate needs at least {MIN_GATE_RUNS} (the A/A check compares two halves)",
                    args.runs
                );
            }
            let mut backends: BTreeSet<String> = if args.backends.is_empty() {
                baseline
                    .traces
                    .iter()
                    .flat_map(|t| t.results.iter().map(|r| r.backend.clone()))
                    .collect()
            } else {
                args.backends.iter().cloned().collect()
            };
            backends.insert(args.reference.clone());
            let (config, config_source) = super::replay::load_config(args.config.as_deref())?;
            let opts = ReplayOptions {
                config,
                config_source,
                traces: args.traces.clone(),
                backends: BackendSelection::resolve(&backends.into_iter().collect::<Vec<_>>())
                    .map_err(anyhow::Error::msg)
                    .context("replay for the gate failed")?,
                threads: args.threads,
                runs: args.runs,
                quiet: true,
                min_sample_ns: args.min_sample_ms.saturating_mul(1_000_000),
                counts: args.counts,
                ..ReplayOptions::default()
            };
            replay_traces(&opts).context("replay for the gate failed")?
        }
    };
    let report = gate_results(&baseline, &artifacts.results, &options);
    let format = match args.format {
        super::compare::Format::Text => TableFormat::Text,
        super::compare::Format::Md => TableFormat::Markdown,
    };
    print!("{}", render_comparison(&report.comparison, format));
    if let Some(staged) = staged {
        reports::write_staged_out_dir(staged, &artifacts, Some(&report.comparison))?;
    }
    if let Some(path) = &args.junit {
        reports::write_junit(path, &report.comparison)?;
    }
    for warning in &report.warnings {
        eprintln!("WARNING {warning}");
    }
    if baseline.counts.is_some() && artifacts.results.counts.is_none() {
        eprintln!("WARNING the baseline has counts but this run took none: add --counts");
    }
    for reason in &report.unstable_reasons {
        eprintln!("UNSTABLE (wall-clock tier) {reason}");
    }
    for line in report.comparison.regression_lines() {
        eprintln!("{line}");
    }
    let code = report.exit_code();
    if code == reports::gate::EXIT_UNSTABLE {
        eprintln!(
            "gate: no verdict (exit 3): the wall-clock tier is unstable on this machine (see \
             UNSTABLE above) and the counts tier judged nothing ({})",
            if baseline.counts.is_none() {
                "the baseline has no counts: regenerate it with ci/update-baseline.sh"
            } else {
                "run the gate with --counts"
            }
        );
    } else if report.is_unstable() {
        eprintln!(
            "gate: wall-clock tier unstable here, its cells are inconclusive; the verdict rests \
             on {} counts cells",
            report.comparison.count_cells
        );
    }
    Ok(code)
}
