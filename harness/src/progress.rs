//! The progress bar on stderr: shown only when stderr is a terminal, not `--quiet`, and
//! the replay has already taken more than a second (short replays print no bar at all).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

const SHOW_AFTER: Duration = Duration::from_secs(1);

pub struct Progress {
    bar: ProgressBar,
    started: Instant,
    enabled: bool,
    shown: bool,
    units_started: u64,
}

impl Progress {
    /// A bar over `total` units (trace x run x backend, or replays of a search).
    pub fn new(total: u64, quiet: bool) -> Self {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {wide_msg}",
        ) {
            bar.set_style(style);
        }
        Progress {
            bar,
            started: Instant::now(),
            enabled: !quiet && std::io::stderr().is_terminal(),
            shown: false,
            units_started: 0,
        }
    }

    /// Change the number of units (a search that replans as it learns its costs).
    pub fn set_total(&mut self, total: u64) {
        self.bar.set_length(total);
    }

    /// Start the next unit, described by `message`.
    pub fn next(&mut self, message: &str) {
        if self.enabled && !self.shown && self.started.elapsed() >= SHOW_AFTER {
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
            self.bar.enable_steady_tick(Duration::from_millis(250));
            self.shown = true;
        }
        self.bar.set_position(self.units_started);
        self.units_started += 1;
        self.bar.set_message(message.to_owned());
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
