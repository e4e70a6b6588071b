//! The pool config loader: any TOML text either is refused with a `ConfigError`, or gives
//! a config that round-trips through TOML and, when it asks for a host pool of modest
//! size, builds a `CpuPool` that serves and frees a block. A config that validates and
//! then cannot build a pool is a gap in `PoolConfig::validate`.
#![no_main]

use pools::{CpuPool, MemoryPool, MemoryType, PoolConfig};

/// Pools bigger than this are validated but not built (the fuzzer has little memory).
const MAX_BUILT_BYTES: usize = 64 << 20;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = PoolConfig::from_toml(text) else {
        return;
    };
    let again = PoolConfig::from_toml(&config.to_toml()).expect("a valid config round-trips");
    assert!(
        again == config || (config.growth_factor.is_nan() && again.growth_factor.is_nan()),
        "round trip changed the config: {config:?} -> {again:?}"
    );
    if config.memory_type != MemoryType::Host
        || config.initial_size_bytes > MAX_BUILT_BYTES
        || config.chunk_size_bytes > MAX_BUILT_BYTES
    {
        return;
    }
    let config = PoolConfig {
        max_size_bytes: Some(config.max_size_bytes.unwrap_or(MAX_BUILT_BYTES).min(MAX_BUILT_BYTES).max(config.initial_size_bytes)),
        ..config
    };
    let pool = match CpuPool::new("fuzz", config.clone()) {
        Ok(pool) => pool,
        Err(e) => panic!("a validated config was refused at creation: {e}\n{config:?}"),
    };
    if let Ok(block) = pool.allocate(24) {
        // SAFETY: `block` was just allocated from `pool` and is freed once.
        #[allow(unused_unsafe)]
        let freed = unsafe { pool.deallocate(block) };
        assert!(freed.is_ok());
    }
});
