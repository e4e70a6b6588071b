//! Allocation traces: the event model, formats (canonical CSV, RMM logs, Android
//! memory_replay), sanitation, the compiler to replay form, statistics, generators and
//! the recorder.

pub mod compiled;
pub mod event;

pub use compiled::{CompiledOp, CompiledTrace, ThreadOps};
pub use event::{Event, OpKind};
