//! One module per `replay` subcommand: each has `Args` (clap) and `run(args) -> exit code`.
//!
//! Exit codes: 0 success (and gate pass/inconclusive), 1 regression, 2 usage error or bad
//! input, 3 unstable environment (gate).

pub mod compare;
pub mod convert;
pub mod gate;
pub mod gen;
pub mod recommend;
pub mod record;
pub mod replay;
pub mod stats;

use crate::engine::Touch;

/// Exit code for usage errors and bad input.
pub const EXIT_USAGE: i32 = 2;

/// `--touch`: the engine's [`Touch`] as a command-line value (the engine knows no clap).
impl clap::ValueEnum for Touch {
    fn value_variants<'a>() -> &'a [Self] {
        &Touch::ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        let help = match self {
            Touch::None => "Never write: measures the allocator alone",
            Touch::First => {
                "Write the first byte of each block (the default: what nearly every program does)"
            }
            Touch::All => "Write every byte (memset), as a program filling its buffers would",
        };
        Some(clap::builder::PossibleValue::new(self.as_str()).help(help))
    }
}
