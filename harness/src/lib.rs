//! The replay harness: engine, backends, measurement, and the `replay` command's parts.

pub mod backend;
pub mod commands;

pub use backend::{AddressSpace, Backend, Unavailable};
