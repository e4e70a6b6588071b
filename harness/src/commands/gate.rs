//! `replay gate --baseline ci/baseline.json [--runs N] [--out DIR] [--junit FILE] <TRACES…>`:
//! replay now, judge against the baseline through per-run ratios to the `system` backend, with
//! an A/A stability check first (see `reports::gate`). Exit 0 pass/inconclusive, 1 regression,
//! 2 usage error, 3 unstable environment.

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
            let opts = ReplayOptions {
                traces: args.traces.clone(),
                backends: BackendSelection::resolve(&backends.into_iter().collect::<Vec<_>>())
                    .map_err(anyhow::Error::msg)
                    .context("replay for the gate failed")?,
                threads: args.threads,
                runs: args.runs,
                quiet: true,
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
    if let Some(dir) = &args.out {
        reports::write_out_dir_with_verdicts(dir, &artifacts, Some(&report.comparison))?;
    }
    if let Some(path) = &args.junit {
        reports::write_junit(path, &report.comparison)?;
    }
    for reason in &report.unstable_reasons {
        eprintln!("UNSTABLE {reason}");
    }
    if report.is_unstable() {
        eprintln!("gate: unstable environment, no verdict (exit 3)");
    } else {
        for line in report.comparison.regression_lines() {
            eprintln!("{line}");
        }
    }
    Ok(report.exit_code())
}
