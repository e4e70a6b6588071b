//! `PoolConfig` through TOML and through `CpuPool::new`: round-trips, presets, invalid
//! values rejected with a message naming the field (never a panic).

use pools::{CpuPool, PoolConfig, PoolError};

#[test]
fn every_preset_round_trips_through_toml_and_builds_a_pool() {
    for name in PoolConfig::PRESETS {
        let config = PoolConfig::preset(name).unwrap();
        let text = config.to_toml();
        let back = PoolConfig::from_toml(&text).unwrap();
        assert_eq!(back, config, "{name}");
        if back.memory_type != pools::MemoryType::Host {
            // GPU presets: a CPU pool refuses device memory rather than ignore it.
            let err = CpuPool::new(name, back).unwrap_err();
            assert!(err.to_string().contains("`memory_type`"), "{name}: {err}");
            continue;
        }
        let pool = CpuPool::new(name, back).unwrap_or_else(|e| panic!("{name}: {e}"));
        drop(pool);
    }
}

#[test]
fn save_and_load_round_trip() {
    let dir = std::env::temp_dir().join(format!("pools-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("pool.toml");
    let mut config = PoolConfig::low_memory_cpu();
    config.max_size_bytes = Some(1 << 30);
    config.save(&path).unwrap();
    assert_eq!(PoolConfig::load(&path).unwrap(), config);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn rejected(mutate: impl FnOnce(&mut PoolConfig), field: &str) {
    let mut config = PoolConfig::default_cpu();
    mutate(&mut config);
    let err = config.validate().unwrap_err().to_string();
    assert!(err.contains(field), "{err}");
    match CpuPool::new("bad", config.clone()) {
        Err(PoolError::InvalidOperation { reason, .. }) => {
            assert!(reason.contains(field), "{reason}")
        }
        other => panic!("expected InvalidOperation, got {other:?}"),
    }
    let text = config.to_toml();
    let err = PoolConfig::from_toml(&text).unwrap_err().to_string();
    assert!(err.contains(field), "{err}");
}

#[test]
fn invalid_values_are_clear_errors() {
    rejected(|c| c.alignment = 3, "alignment");
    rejected(|c| c.block_size_bytes = 0, "block_size_bytes");
    rejected(
        |c| {
            c.initial_size_bytes = 2 << 20;
            c.max_size_bytes = Some(1 << 20);
        },
        "initial_size_bytes",
    );
    rejected(|c| c.growth_factor = 0.5, "growth_factor");
    rejected(
        |c| c.size_classes.classes_per_doubling = 3,
        "classes_per_doubling",
    );
    rejected(|c| c.size_classes.max_class_bytes = 1000, "max_class_bytes");
    rejected(|c| c.chunk_size_bytes = 0, "chunk_size_bytes");
}

#[test]
fn malformed_toml_is_an_error_not_a_panic() {
    assert!(PoolConfig::from_toml("alignment = \"sixteen\"").is_err());
    assert!(PoolConfig::from_toml("no_such_field = 1").is_err());
    assert!(PoolConfig::from_toml("allocator = \"buddy\"").is_err());
    let partial =
        PoolConfig::from_toml("allocator = \"size-classed\"\nblock_size_bytes = 32").unwrap();
    assert_eq!(partial.block_size_bytes, 32);
}

#[test]
fn summary_names_initial_size_and_thread_cache_bounds_only_when_they_differ() {
    let base = PoolConfig::default_cpu();
    let plain = base.summary();
    assert!(!plain.contains("cache"), "{plain}");
    let mut deep = base.clone();
    deep.thread_cache.max_class_bytes = 32 * 1024;
    deep.thread_cache.max_thread_bytes = 512 * 1024;
    assert_eq!(
        deep.summary(),
        format!("{plain}, cache 32 KiB a class, 512 KiB a thread")
    );
    deep.thread_cache.max_class_blocks = 128;
    assert!(
        deep.summary().ends_with(", 128 blocks a class"),
        "{}",
        deep.summary()
    );
    let mut off = base.clone();
    off.thread_cache.enabled = false;
    assert_eq!(off.summary(), format!("{plain}, no thread cache"));
    let mut lazy = base.clone();
    lazy.initial_size_bytes = 0;
    assert_eq!(lazy.summary(), format!("{plain}, no initial reservation"));
    // Device pools: neither (the default GPU pool reserves nothing up front); their
    // summary is what results.json has always carried for them.
    assert_eq!(
        PoolConfig::default_gpu().summary(),
        "variable-size best-fit, mutex, chunk 2 MiB x1, align 256"
    );
    let mut gpu = PoolConfig::default_gpu();
    gpu.thread_cache.enabled = false;
    assert_eq!(gpu.summary(), PoolConfig::default_gpu().summary());
}
