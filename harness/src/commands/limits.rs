//! `--max-input-bytes`, `--max-events`, `--max-order-bytes`: where reading a trace stops
//! with an error, for every command that reads one (see `workloads::ReadLimits`).

use workloads::ReadLimits;

#[derive(Debug, Clone, Copy, clap::Args)]
pub struct LimitArgs {
    /// Stop with an error past this many bytes of (decompressed) trace input: 4GiB, 64GiB.
    #[arg(long, value_name = "BYTES", value_parser = pools::config::parse_bytes,
          default_value_t = ReadLimits::DEFAULT_MAX_INPUT_BYTES)]
    pub max_input_bytes: u64,
    /// Stop with an error past this many events (the compiled trace takes up to 24 bytes
    /// each).
    #[arg(long, value_name = "N", default_value_t = ReadLimits::DEFAULT_MAX_EVENTS)]
    pub max_events: u64,
    /// Memory budget for putting time-stamped CSV rows in time order (about 32 bytes a
    /// row); a file already in time order streams past it: 512MiB, 8GiB.
    #[arg(long, value_name = "BYTES", value_parser = pools::config::parse_bytes,
          default_value_t = ReadLimits::DEFAULT_MAX_ORDER_BYTES)]
    pub max_order_bytes: u64,
}

impl LimitArgs {
    pub fn limits(&self) -> ReadLimits {
        ReadLimits {
            max_input_bytes: self.max_input_bytes,
            max_events: self.max_events,
            max_order_bytes: self.max_order_bytes,
        }
    }
}
