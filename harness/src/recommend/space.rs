//! The candidate space: which configurations are worth replaying for a trace's shape.

use pools::{
    AllocatorKind, FitPolicy, HugePages, PoolConfig, ReturnPolicy, SizeClasses, SyncMode,
    ThreadCacheConfig,
};
use workloads::{CompiledTrace, OpKind};

/// Shape of a trace that decides which candidates make sense.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceShape {
    pub threads: usize,
    pub min_size_bytes: u64,
    pub max_size_bytes: u64,
    pub events: u64,
    pub largest_align: usize,
}

impl TraceShape {
    pub fn of(trace: &CompiledTrace) -> Self {
        let mut min = u64::MAX;
        let mut max = 0;
        let mut align = 0;
        for op in trace.threads.iter().flat_map(|t| &t.ops) {
            if op.kind != OpKind::Free {
                min = min.min(op.size);
                max = max.max(op.size);
                align = align.max(op.align());
            }
        }
        TraceShape {
            threads: trace.threads.len(),
            min_size_bytes: if min == u64::MAX { 0 } else { min },
            max_size_bytes: max,
            events: trace.event_count,
            largest_align: align,
        }
    }

    /// A fixed-size pool serves this trace without wasting more than half of each block.
    pub fn fits_fixed_size(&self) -> bool {
        self.max_size_bytes > 0 && self.max_size_bytes <= 2 * self.min_size_bytes.max(1)
    }
}

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

/// The candidate set for a trace: for each allocator kind that fits, a base configuration
/// and one-axis variations of it. Deterministic; every candidate validates.
pub fn candidates(shape: &TraceShape) -> Vec<PoolConfig> {
    // The mutex mode carries the per-thread caches, whose hits take no lock: it is the
    // base for every thread count. A one-thread trace also tries `single-threaded` without
    // the cache (no lock, no magazines, a busy flag) as a variation of each kind.
    let single = shape.threads <= 1;
    let base = PoolConfig {
        sync: SyncMode::Mutex,
        return_policy: ReturnPolicy::Keep,
        ..PoolConfig::default_cpu()
    };
    let mut out: Vec<PoolConfig> = Vec::new();
    let mut push = |c: PoolConfig| {
        if c.validate().is_ok() && !out.contains(&c) {
            out.push(c);
        }
    };
    // Variations shared by every kind: chunking, growth, huge pages, return policy.
    let axes = |c: &PoolConfig| -> Vec<PoolConfig> {
        let mut v = vec![c.clone()];
        // Chunk size and growth shape only the variable-size allocator's memory; the
        // segment-based kinds (fixed, size-classed, lock-free) map fixed-size segments and
        // take only the initial reservation from the config.
        if c.allocator == AllocatorKind::VariableSize {
            for chunk in [64 * KIB, 4 * MIB] {
                v.push(PoolConfig {
                    chunk_size_bytes: chunk,
                    initial_size_bytes: chunk,
                    ..c.clone()
                });
            }
            v.push(PoolConfig {
                growth_factor: 1.0,
                ..c.clone()
            });
        } else {
            v.push(PoolConfig {
                initial_size_bytes: 0,
                ..c.clone()
            });
        }
        v.push(PoolConfig {
            huge_pages: HugePages::Madvise,
            ..c.clone()
        });
        v.push(PoolConfig {
            return_policy: ReturnPolicy::WhenEmpty,
            ..c.clone()
        });
        if c.alignment < 64 {
            v.push(PoolConfig {
                alignment: 64,
                ..c.clone()
            });
        }
        v.extend(thread_cache_depths(c, shape));
        if single {
            // With the thread cache a single-threaded pool is the mutex mode; without it,
            // the busy-flag core: no magazines holding blocks, one compare-exchange a call.
            v.push(PoolConfig {
                sync: SyncMode::SingleThreaded,
                thread_cache: ThreadCacheConfig {
                    enabled: false,
                    ..c.thread_cache
                },
                ..c.clone()
            });
        }
        v
    };

    if shape.fits_fixed_size() {
        let align = base.alignment.max(shape.largest_align).max(8) as u64;
        let block = shape.max_size_bytes.div_ceil(align) * align;
        let fixed = PoolConfig {
            allocator: AllocatorKind::FixedSize,
            block_size_bytes: block as usize,
            ..base.clone()
        };
        for c in axes(&fixed) {
            push(c);
        }
    }

    let classed = PoolConfig {
        allocator: AllocatorKind::SizeClassed,
        ..base.clone()
    };
    for c in axes(&classed) {
        push(c);
    }
    for (per_doubling, max_class) in [(2, 32 * KIB), (8, 32 * KIB), (4, 4 * KIB), (4, 256 * KIB)] {
        push(PoolConfig {
            size_classes: SizeClasses {
                classes_per_doubling: per_doubling,
                max_class_bytes: max_class,
            },
            ..classed.clone()
        });
    }

    for fit in [FitPolicy::BestFit, FitPolicy::FirstFit] {
        let variable = PoolConfig {
            allocator: AllocatorKind::VariableSize,
            fit,
            ..base.clone()
        };
        if fit == FitPolicy::BestFit {
            for c in axes(&variable) {
                push(c);
            }
        } else {
            push(variable);
        }
    }

    let lockfree = PoolConfig {
        allocator: AllocatorKind::LockFree,
        sync: SyncMode::LockFree,
        ..base.clone()
    };
    push(lockfree.clone());
    push(PoolConfig {
        initial_size_bytes: 0,
        ..lockfree.clone()
    });
    for c in thread_cache_depths(&lockfree, shape) {
        push(c);
    }
    push(PoolConfig {
        size_classes: SizeClasses {
            classes_per_doubling: 8,
            max_class_bytes: 32 * KIB,
        },
        ..lockfree
    });
    out
}

/// The per-thread cache's depth as an axis (`docs/thread-cache.md`, "Bounds and memory"):
/// deeper magazines (32 KiB a class, 512 KiB a thread) take the lock about a quarter as
/// often when a program churns many classes at random; a leaner cache (8 KiB a class,
/// 64 KiB a thread), tried when the trace has several threads, keeps many threads sharing
/// a small heap near its live bytes, where each thread's cache may otherwise hold
/// `max_thread_bytes`. None where `c` has no cache, or where the cache serves none of the
/// trace's requests: a fixed-size pool's cache serves every request, the other kinds'
/// requests of at most `thread_cache.max_block_bytes` and `size_classes.max_class_bytes`.
fn thread_cache_depths(c: &PoolConfig, shape: &TraceShape) -> Vec<PoolConfig> {
    let cached_up_to = match c.allocator {
        AllocatorKind::FixedSize => usize::MAX,
        _ => c
            .thread_cache
            .max_block_bytes
            .min(c.size_classes.max_class_bytes),
    };
    if !c.thread_cache.enabled || shape.min_size_bytes > cached_up_to as u64 {
        return Vec::new();
    }
    let with = |max_class_bytes: usize, max_thread_bytes: usize| PoolConfig {
        thread_cache: ThreadCacheConfig {
            max_class_bytes,
            max_thread_bytes,
            ..c.thread_cache
        },
        ..c.clone()
    };
    let mut out = vec![with(32 * KIB, 512 * KIB)];
    if shape.threads > 1 {
        out.push(with(8 * KIB, 64 * KIB));
    }
    out
}

/// The GPU pool's space: device memory, fixed-size blocks (when the sizes allow) and
/// variable-size best/first fit, growth chunk size and factor, alignment, initial
/// reservation and return policy, around `PoolConfig::default_gpu()`.
pub fn gpu_candidates(shape: &TraceShape) -> Vec<PoolConfig> {
    let base = PoolConfig::default_gpu();
    let mut out: Vec<PoolConfig> = Vec::new();
    let mut push = |c: PoolConfig| {
        if c.validate().is_ok() && !out.contains(&c) {
            out.push(c);
        }
    };
    let mut kinds = vec![
        base.clone(),
        PoolConfig {
            fit: FitPolicy::FirstFit,
            ..base.clone()
        },
    ];
    if shape.fits_fixed_size() {
        let align = base.alignment.max(shape.largest_align) as u64;
        kinds.push(PoolConfig {
            allocator: AllocatorKind::FixedSize,
            block_size_bytes: (shape.max_size_bytes.div_ceil(align) * align) as usize,
            ..base.clone()
        });
    }
    for k in kinds {
        push(k.clone());
        for chunk in [64 * MIB, 512 * MIB] {
            push(PoolConfig {
                chunk_size_bytes: chunk,
                ..k.clone()
            });
        }
        push(PoolConfig {
            growth_factor: 1.0,
            chunk_size_bytes: 32 * MIB,
            ..k.clone()
        });
        push(PoolConfig {
            alignment: 512,
            ..k.clone()
        });
        push(PoolConfig {
            return_policy: ReturnPolicy::WhenEmpty,
            ..k.clone()
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(min: u64, max: u64, threads: usize) -> TraceShape {
        TraceShape {
            threads,
            min_size_bytes: min,
            max_size_bytes: max,
            events: 1000,
            largest_align: 0,
        }
    }

    #[test]
    fn candidates_validate_and_cover_every_kind() {
        let cs = candidates(&shape(64, 64, 2));
        assert!(cs.len() >= 15, "{} candidates", cs.len());
        for c in &cs {
            c.validate().unwrap();
        }
        for kind in [
            AllocatorKind::FixedSize,
            AllocatorKind::SizeClassed,
            AllocatorKind::VariableSize,
            AllocatorKind::LockFree,
        ] {
            assert!(cs.iter().any(|c| c.allocator == kind), "{kind:?} missing");
        }
        let fixed = cs
            .iter()
            .find(|c| c.allocator == AllocatorKind::FixedSize)
            .unwrap();
        assert!(fixed.block_size_bytes >= 64);
        assert!(cs.iter().all(|c| c.sync != SyncMode::SingleThreaded));
    }

    #[test]
    fn thread_cache_depth_is_an_axis_of_every_cached_kind() {
        let default_cache = PoolConfig::default_cpu().thread_cache;
        let depths = |cs: &[PoolConfig], kind: AllocatorKind| -> Vec<(usize, usize)> {
            let mut d: Vec<(usize, usize)> = cs
                .iter()
                .filter(|c| c.allocator == kind && c.thread_cache.enabled)
                .map(|c| {
                    (
                        c.thread_cache.max_class_bytes,
                        c.thread_cache.max_thread_bytes,
                    )
                })
                .collect();
            d.sort_unstable();
            d.dedup();
            d
        };
        let defaults = (
            default_cache.max_class_bytes,
            default_cache.max_thread_bytes,
        );
        let kinds = [
            AllocatorKind::FixedSize,
            AllocatorKind::SizeClassed,
            AllocatorKind::VariableSize,
            AllocatorKind::LockFree,
        ];
        // Several threads: the default, a deeper and a leaner cache for every kind.
        let threaded = candidates(&shape(64, 64, 4));
        for kind in kinds {
            assert_eq!(
                depths(&threaded, kind),
                vec![(8 * KIB, 64 * KIB), defaults, (32 * KIB, 512 * KIB)],
                "{kind:?}"
            );
        }
        // One thread: no leaner cache (one thread's cache is bounded by its own budget).
        let single = candidates(&shape(64, 64, 1));
        for kind in kinds {
            assert_eq!(
                depths(&single, kind),
                vec![defaults, (32 * KIB, 512 * KIB)],
                "{kind:?}"
            );
        }
        for c in threaded.iter().chain(&single) {
            c.validate().unwrap();
        }
        // Requests only a fixed-size pool's cache serves (it caches its one block size,
        // whatever `max_block_bytes` says): no depth to vary for the other kinds.
        let big = candidates(&shape(64 * KIB as u64, 128 * KIB as u64, 4));
        for kind in kinds {
            let expected = if kind == AllocatorKind::FixedSize {
                vec![(8 * KIB, 64 * KIB), defaults, (32 * KIB, 512 * KIB)]
            } else {
                vec![defaults]
            };
            assert_eq!(depths(&big, kind), expected, "{kind:?}");
        }
    }

    #[test]
    fn no_fixed_size_candidate_for_wide_size_ranges() {
        let cs = candidates(&shape(16, 100_000, 1));
        assert!(cs.iter().all(|c| c.allocator != AllocatorKind::FixedSize));
        assert!(cs
            .iter()
            .any(|c| c.sync == SyncMode::SingleThreaded
                && c.allocator == AllocatorKind::VariableSize));
    }

    #[test]
    fn gpu_candidates_are_device_configs() {
        let cs = gpu_candidates(&shape(1 << 20, 1 << 30, 2));
        assert!(cs.len() >= 8, "{} candidates", cs.len());
        for c in &cs {
            c.validate().unwrap();
            assert_eq!(c.memory_type, pools::MemoryType::Device);
            assert!(c.alignment >= 256);
        }
        assert!(cs.iter().any(|c| c.fit == FitPolicy::FirstFit));
        assert!(cs.iter().all(|c| c.allocator != AllocatorKind::FixedSize));
        let uniform = gpu_candidates(&shape(1 << 20, 1 << 20, 1));
        assert!(uniform
            .iter()
            .any(|c| c.allocator == AllocatorKind::FixedSize));
    }
}
