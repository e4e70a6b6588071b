//! The replay harness: engine, backends, measurement, and the `replay` command's parts.
//!
//! - [`runner::replay_traces`] / [`runner::replay_inputs`]: the whole replay as a library
//!   call (what `replay`, `replay gate` and `replay recommend` run).
//! - [`engine::replay_compiled`]: one run of one backend over a [`engine::ReplayPlan`].
//! - [`backends`]: the registry of backends; [`backends::Backend`]: the trait they implement.
//! - [`recommend`]: the `PoolConfig` search behind `replay recommend`.
//! - [`clock::Clock`]: the calibrated clock every latency is read with.
//! - [`counts`]: the deterministic tier (`--counts`): instructions and simulated cache misses
//!   per op, under valgrind.

pub mod backends;
pub mod clock;
pub mod commands;
pub mod counts;
pub mod engine;
pub mod machine;
pub mod progress;
pub mod recommend;
pub mod recorded;
pub mod runner;

pub use backends::{AddressSpace, Backend, Unavailable};
pub use runner::{replay_inputs, replay_traces, ReplayOptions, TraceInput};
