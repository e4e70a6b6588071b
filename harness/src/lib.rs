//! The replay harness: engine, backends, measurement, and the `replay` command's parts.
//!
//! - [`replay::replay_traces`] / [`replay::replay_inputs`]: the whole replay as a library
//!   call (what `replay`, `replay gate` and `replay recommend` run).
//! - [`engine::replay_compiled`]: one run of one backend over a [`engine::ReplayPlan`].
//! - [`backends`]: the registry of backends; [`backend::Backend`]: the trait they implement.
//! - [`clock::Clock`]: the calibrated clock every latency is read with.
//! - [`counts`]: the deterministic tier (`--counts`): instructions and simulated cache misses
//!   per op, under valgrind.

pub mod backend;
pub mod backends;
pub mod clock;
pub mod commands;
pub mod counts;
pub mod engine;
pub mod machine;
pub mod progress;
pub mod replay;

pub use backend::{AddressSpace, Backend, Unavailable};
pub use replay::{replay_inputs, replay_traces, ReplayOptions, TraceInput};
