//! Allocation traces: the event model, formats (canonical CSV, RMM logs, Android
//! memory_replay), sanitation, the compiler to replay form, statistics, generators and
//! the recorder.
//!
//! The pipeline, one streaming pass (`load_trace`):
//! ```text
//! file -> input (gz/zst/zip) -> formats::EventReader (file order)
//!      -> formats::OrderedEvents (global order) -> Sanitizer -> Compiler -> StatsCollector
//! ```
//! The compiler's slot table is the one pointer map after sanitation: statistics take each
//! event's block facts from it (`StatsCollector::count`) instead of hashing again.

pub mod compiled;
pub mod compiler;
pub mod error;
pub mod event;
pub mod formats;
pub mod gen;
pub mod input;
pub mod load;
mod ptrmap;
pub mod record;
pub mod sanitize;
pub mod stats;

pub use compiled::{CompiledOp, CompiledTrace, ThreadOps};
pub use compiler::{compile, Compiler};
pub use error::TraceError;
pub use event::{Event, OpKind};
pub use formats::write::{write_csv, CsvWriter, CSV_HEADER};
pub use formats::{read_events, read_ordered_events, EventReader, OrderedEvents, TraceFormat};
pub use load::{load_trace, trace_stats_of, LoadOptions, LoadedTrace};
pub use sanitize::{SanitationReport, Sanitizer};
pub use stats::{trace_stats, StatsCollector, TraceStats};
