//! One module per `replay` subcommand: each has `Args` (clap) and `run(args) -> exit code`.
//!
//! Exit codes: 0 success (and gate pass/inconclusive), 1 regression, 2 usage error or bad
//! input, 3 unstable environment (gate).

pub mod compare;
pub mod convert;
pub mod gate;
pub mod gen;
pub mod limits;
pub mod recommend;
pub mod record;
pub mod replay;
pub mod stats;

/// Exit code for usage errors and bad input.
pub const EXIT_USAGE: i32 = 2;
