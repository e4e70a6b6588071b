//! `replay compare <BASE.json> <CANDIDATE.json>`: per (trace, backend, metric) verdicts — counts
//! against an exact margin, wall-clock values through exact rank-sum intervals on per-run ratios
//! to the in-run reference (see `reports::compare`). Exit 0 pass/inconclusive/improvement,
//! 1 regression, 2 usage error or unreadable input.

use std::path::PathBuf;

use reports::compare::{render_comparison, TableFormat};
use reports::{compare_results, read_results_json, CompareOptions, Margins};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Md,
}

/// Statistical options shared by `compare` and `gate`.
#[derive(Debug, Clone, clap::Args)]
pub struct StatArgs {
    /// Throughput margin of equivalence (fraction: 0.05 = 5%).
    #[arg(long, value_name = "FRACTION", default_value_t = 0.05)]
    pub margin_throughput: f64,
    /// Alloc p50 latency margin (fraction).
    #[arg(long, value_name = "FRACTION", default_value_t = 0.05)]
    pub margin_p50: f64,
    /// Alloc p99 latency margin (fraction).
    #[arg(long, value_name = "FRACTION", default_value_t = 0.10)]
    pub margin_p99: f64,
    /// Allowed growth of peak reserved bytes (fraction); alloc failures may never grow.
    #[arg(long, value_name = "FRACTION", default_value_t = 0.10)]
    pub margin_reserved: f64,
    /// Counts tier margin (fraction): instructions or estimated cycles per op that grew by
    /// more are a regression, shrank by more an improvement.
    #[arg(long, value_name = "FRACTION", default_value_t = 0.01)]
    pub margin_counts: f64,
}

impl StatArgs {
    pub fn options(&self) -> anyhow::Result<CompareOptions> {
        for (name, m) in [
            ("--margin-throughput", self.margin_throughput),
            ("--margin-p50", self.margin_p50),
            ("--margin-p99", self.margin_p99),
            ("--margin-reserved", self.margin_reserved),
            ("--margin-counts", self.margin_counts),
        ] {
            if !(m > 0.0 && m < 10.0) {
                anyhow::bail!("{name} {m}: a margin is a fraction above 0 (0.05 = 5%)");
            }
        }
        Ok(CompareOptions {
            margins: Margins {
                throughput: self.margin_throughput,
                alloc_p50: self.margin_p50,
                alloc_p99: self.margin_p99,
                peak_reserved: self.margin_reserved,
                counts: self.margin_counts,
            },
            ..CompareOptions::default()
        })
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The baseline results.json.
    #[arg(value_name = "BASE.json")]
    pub base: PathBuf,
    /// The candidate results.json.
    #[arg(value_name = "CANDIDATE.json")]
    pub candidate: PathBuf,
    /// Table format on stdout.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Divide each run's wall-clock values by this backend's in the same run, where both
    /// files ran it (`none`: compare raw values, which needs both files from one machine).
    #[arg(long, value_name = "NAME|none", default_value = reports::gate::DEFAULT_REFERENCE_BACKEND)]
    pub reference: String,
    #[command(flatten)]
    pub stats: StatArgs,
}

pub fn run(args: Args) -> anyhow::Result<i32> {
    let mut options = args.stats.options()?;
    options.reference_backend = (args.reference != "none").then(|| args.reference.clone());
    let base = read_results_json(&args.base)?;
    let candidate = read_results_json(&args.candidate)?;
    let comparison = compare_results(&base, &candidate, &options);
    let format = match args.format {
        Format::Text => TableFormat::Text,
        Format::Md => TableFormat::Markdown,
    };
    print!("{}", render_comparison(&comparison, format));
    for line in comparison.regression_lines() {
        eprintln!("{line}");
    }
    Ok(comparison.exit_code())
}
