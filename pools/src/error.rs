//! Errors are values: every failure says what a person needs to act on it.

use thiserror::Error;

/// Everything a pool operation can fail with.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PoolError {
    /// The pool (or its upstream: the OS, the device) cannot supply `requested_bytes`.
    #[error("pool '{pool}': out of memory: requested {requested_bytes} bytes, {available_bytes} bytes available (limit {limit_bytes} bytes)")]
    OutOfMemory {
        pool: String,
        requested_bytes: usize,
        available_bytes: usize,
        limit_bytes: usize,
    },
    /// The call is not valid for this pool or configuration (bad size, bad alignment, bad config).
    #[error("pool '{pool}': invalid operation: {reason}")]
    InvalidOperation { pool: String, reason: String },
    /// A pointer that this pool did not hand out, or that was already freed.
    #[error("pool '{pool}': invalid pointer {ptr:#x}: {reason}")]
    InvalidPointer {
        pool: String,
        ptr: usize,
        reason: String,
    },
    /// A CUDA driver call failed, or CUDA is not available on this machine.
    #[error("pool '{pool}': CUDA: {reason}")]
    Cuda { pool: String, reason: String },
}

impl PoolError {
    pub fn oom(
        pool: &str,
        requested_bytes: usize,
        available_bytes: usize,
        limit_bytes: usize,
    ) -> Self {
        PoolError::OutOfMemory {
            pool: pool.to_owned(),
            requested_bytes,
            available_bytes,
            limit_bytes,
        }
    }

    pub fn invalid_op(pool: &str, reason: impl Into<String>) -> Self {
        PoolError::InvalidOperation {
            pool: pool.to_owned(),
            reason: reason.into(),
        }
    }

    pub fn invalid_ptr(pool: &str, ptr: usize, reason: impl Into<String>) -> Self {
        PoolError::InvalidPointer {
            pool: pool.to_owned(),
            ptr,
            reason: reason.into(),
        }
    }

    pub fn cuda(pool: &str, reason: impl Into<String>) -> Self {
        PoolError::Cuda {
            pool: pool.to_owned(),
            reason: reason.into(),
        }
    }
}

/// A `PoolConfig` that cannot be used, with the field and the value at fault.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    #[error("invalid pool config: `{field}` = {value}: {reason}")]
    Invalid {
        field: &'static str,
        value: String,
        reason: String,
    },
    #[error("cannot parse pool config TOML: {0}")]
    Toml(String),
    #[error("cannot read pool config {path}: {reason}")]
    Io { path: String, reason: String },
}
