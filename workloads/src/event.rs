//! One allocation event as read from a trace, in any format.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum OpKind {
    Alloc = 0,
    Free = 1,
    Realloc = 2,
}

impl OpKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OpKind::Alloc => "alloc",
            OpKind::Free => "free",
            OpKind::Realloc => "realloc",
        }
    }
}

/// An event in canonical form. `ptr` and `old_ptr` are identities only: they pair events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    pub thread: u64,
    pub time_ns: Option<u64>,
    pub op: OpKind,
    /// The block allocated (alloc, realloc) or freed (free).
    pub ptr: u64,
    /// Requested bytes (alloc, realloc); 0 for free.
    pub size: u64,
    /// Requested alignment (a power of two), 0 when the trace gives none.
    pub align: u64,
    /// realloc only: the block being resized; 0 = from nothing.
    pub old_ptr: u64,
    pub stream: Option<u64>,
    pub device: Option<u64>,
    /// 1-based line (or record) in the source file, for error messages.
    pub line: u64,
}
