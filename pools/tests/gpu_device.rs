//! Tests on a real CUDA device. Each prints "skipped: no CUDA driver: ..." and returns when
//! the probe finds no driver or device (this is checked, not assumed: the skip path asserts
//! that `GpuPool::cuda` reports `PoolError::Cuda` with a reason).

use pools::gpu::{GpuPool, StreamId};
use pools::{MemoryPool, MemoryType, PoolConfig, PoolError};

/// The pool, or `None` after printing why the test is skipped.
fn cuda_pool(config: PoolConfig) -> Option<GpuPool> {
    match GpuPool::cuda("gpu-device-test", config) {
        Ok(pool) => Some(pool),
        Err(PoolError::Cuda { reason, .. }) => {
            assert!(!reason.is_empty());
            assert!(
                pools::gpu::cuda_available().is_err(),
                "probe and pool disagree"
            );
            println!("skipped: no CUDA driver: {reason}");
            None
        }
        Err(e) => panic!("expected a pool or PoolError::Cuda, got {e}"),
    }
}

#[test]
fn no_driver_is_an_error_not_a_panic() {
    // Runs everywhere: on a GPU machine the pool is created, elsewhere the error explains.
    match GpuPool::cuda("probe", PoolConfig::default_gpu()) {
        Ok(pool) => assert_eq!(pool.memory_type(), MemoryType::Device),
        Err(PoolError::Cuda { reason, .. }) => {
            assert!(reason.contains("CUDA"), "reason should name CUDA: {reason}")
        }
        Err(e) => panic!("unexpected error {e}"),
    }
}

#[test]
fn device_round_trip_sync_and_async() {
    let Some(pool) = cuda_pool(PoolConfig::default_gpu()) else {
        return;
    };
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
    let a = pool.allocate(data.len()).unwrap();
    let b = pool.allocate(data.len()).unwrap();
    pool.copy_host_to_device(a, &data).unwrap();
    pool.copy_device_to_device(b, a, data.len()).unwrap();
    let mut back = vec![0u8; data.len()];
    pool.copy_device_to_host(&mut back, b).unwrap();
    assert_eq!(back, data);

    pool.set_stream(StreamId(1));
    let mut back2 = vec![0u8; data.len()];
    // SAFETY: `data` and `back2` outlive the stream synchronisation below and are not
    // touched before it.
    unsafe {
        pool.copy_host_to_device_async(a, &data).unwrap();
        pool.copy_device_to_host_async(&mut back2, a).unwrap();
    }
    pool.synchronize_stream(StreamId(1)).unwrap();
    assert_eq!(back2, data);
    pool.deallocate_checked(a).unwrap();
    pool.deallocate_checked(b).unwrap();
    pool.check_invariants().unwrap();
}

#[test]
fn cross_stream_reuse_on_device() {
    let Some(pool) = cuda_pool(PoolConfig::default_gpu()) else {
        return;
    };
    let keeper = pool.allocate_on(4096, StreamId(1)).unwrap();
    let a = pool.allocate_on(1 << 20, StreamId(1)).unwrap();
    pool.deallocate_on(a, StreamId(1)).unwrap();
    let before = pool.gpu_stats();
    let b = pool.allocate_on(1 << 20, StreamId(2)).unwrap();
    let after = pool.gpu_stats();
    assert_eq!(a, b);
    assert_eq!(after.event_waits, before.event_waits + 1);
    assert_eq!(after.upstream.event_waits, before.upstream.event_waits + 1);
    pool.deallocate_on(b, StreamId(2)).unwrap();
    pool.deallocate_on(keeper, StreamId(1)).unwrap();
    pool.synchronize().unwrap();
}

#[test]
fn out_of_memory_on_device_is_an_error() {
    let Some(pool) = cuda_pool(PoolConfig::default_gpu()) else {
        return;
    };
    match pool.allocate(1 << 50) {
        Err(PoolError::OutOfMemory { .. }) => {}
        other => panic!("1 PiB should be OutOfMemory, got {other:?}"),
    }
    let p = pool.allocate(1000).unwrap();
    pool.deallocate_checked(p).unwrap();
}

#[test]
fn pinned_and_managed_memory() {
    for memory_type in [MemoryType::HostPinned, MemoryType::Managed] {
        let config = PoolConfig {
            memory_type,
            ..PoolConfig::default_gpu()
        };
        let Some(pool) = cuda_pool(config) else {
            return;
        };
        assert_eq!(pool.memory_type(), memory_type);
        let p = pool.allocate(4096).unwrap();
        let data = [0x5au8; 4096];
        pool.copy_host_to_device(p, &data).unwrap();
        let mut back = [0u8; 4096];
        pool.copy_device_to_host(&mut back, p).unwrap();
        assert_eq!(back, data);
        pool.deallocate_checked(p).unwrap();
    }
}
