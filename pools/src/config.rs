//! `PoolConfig`: every knob of a pool, its presets, validation and TOML round-trip.
//!
//! The TOML form is what `replay recommend` writes and `replay --config` reads, so field
//! names are a contract: add fields with `#[serde(default)]`, never rename.

use crate::error::ConfigError;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Which allocator strategy serves the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AllocatorKind {
    /// One block size (`block_size_bytes`): chunks of uniform blocks, intrusive free list.
    FixedSize,
    /// A set of fixed-size allocators, one per size class (`size_classes`), plus a
    /// large-object path for requests above the largest class.
    SizeClassed,
    /// Segregated fit with two-level bitmaps (TLSF), boundary tags, O(1) coalescing.
    VariableSize,
    /// Size-classed, no mutex on the hot path: per-thread caches and remote-free stacks.
    LockFree,
}

/// How the variable-size allocator chooses among free blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FitPolicy {
    /// Smallest free block that fits (TLSF's good-fit: search from the next class up,
    /// then scan the exact class list).
    BestFit,
    /// First block found in the first non-empty class that guarantees a fit.
    FirstFit,
}

/// How a `CpuPool` serialises access to its allocator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SyncMode {
    /// One mutex around the allocator (default; any strategy).
    Mutex,
    /// Lock-free strategy: no mutex on allocate/free.
    LockFree,
    /// Meant for one thread at a time. With the thread cache (the default) it is the
    /// mutex mode: a hit takes no lock and no atomic read-modify-write, so nothing is
    /// faster for one thread, and other threads are served correctly. With the cache off,
    /// a busy flag (one compare-exchange per call) detects use from two threads at once
    /// and refuses it with `InvalidOperation` instead of racing.
    SingleThreaded,
}

/// Huge pages for the memory a CPU pool maps from the OS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HugePages {
    Off,
    /// `madvise(MADV_HUGEPAGE)` on each chunk (transparent huge pages).
    Madvise,
    /// `MAP_HUGETLB`; falls back to normal pages (counted) when none are reserved.
    Explicit,
}

/// When a pool gives memory back to its upstream (the OS or the device).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReturnPolicy {
    /// Keep every chunk until the pool is dropped.
    Keep,
    /// `reset()` returns every chunk beyond the initial one.
    OnReset,
    /// A chunk that becomes entirely free is returned at once (beyond the initial one).
    WhenEmpty,
}

/// Where a pool's memory lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MemoryType {
    Host,
    Device,
    HostPinned,
    Managed,
}

/// The size-class table's shape (the table itself is `alloc::size_class`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SizeClasses {
    /// Classes per power of two (1, 2, 4 or 8): more classes, less internal slack.
    pub classes_per_doubling: u32,
    /// Largest class; larger requests take the large-object path.
    pub max_class_bytes: usize,
}

impl Default for SizeClasses {
    fn default() -> Self {
        SizeClasses {
            classes_per_doubling: 4,
            max_class_bytes: 32 * 1024,
        }
    }
}

/// Debug checks; all off in the fast presets, all on in `debug_cpu`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DebugChecks {
    /// Double frees and foreign pointers return `PoolError::InvalidPointer` instead of UB.
    pub check_pointers: bool,
    /// Fill freed blocks with `POISON_BYTE` so use-after-free shows up at once.
    pub poison_on_free: bool,
    /// Track live allocations (address, size) for leak reports.
    pub track_live: bool,
    /// Print a leak report to stderr when the pool is dropped with live blocks (needs `track_live`).
    pub leak_report: bool,
}

/// The per-thread cache layer of `CpuPool` in front of a locked strategy or the lock-free
/// allocator (see `docs/thread-cache.md`): each thread keeps a bounded stack of free blocks
/// per size class, so the common allocate and free take no lock and touch no shared
/// memory. Cached blocks are reserved (they are in the strategy's chunks) and reported in
/// `MemoryStats::thread_cached_bytes`.
///
/// Used by the `fixed-size`, `size-classed` and `variable-size` strategies under
/// `sync = "mutex"` and `"single-threaded"`, and by the `lock-free` allocator (at
/// alignments up to 16 bytes); bypassed under `debug.check_pointers` (a cached block
/// would look live to the strategy) and for user strategies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThreadCacheConfig {
    /// Turn the layer on (default) or off.
    pub enabled: bool,
    /// Requests up to this many bytes are served from the cache; larger ones take the lock.
    pub max_block_bytes: usize,
    /// Most bytes one thread keeps in one size class (at least one block is kept).
    pub max_class_bytes: usize,
    /// Most blocks one thread keeps in one size class.
    pub max_class_blocks: usize,
    /// Most bytes one thread keeps in all classes together; a free beyond it gives half of
    /// every class back.
    pub max_thread_bytes: usize,
}

impl Default for ThreadCacheConfig {
    fn default() -> Self {
        ThreadCacheConfig {
            enabled: true,
            max_block_bytes: 4 * 1024,
            max_class_bytes: 16 * 1024,
            max_class_blocks: 64,
            max_thread_bytes: 256 * 1024,
        }
    }
}

/// Byte written over freed blocks when `poison_on_free` is set.
pub const POISON_BYTE: u8 = 0xDD;

/// Every option of a pool. Load with [`PoolConfig::from_toml`], check with [`PoolConfig::validate`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolConfig {
    pub allocator: AllocatorKind,
    pub fit: FitPolicy,
    pub sync: SyncMode,
    /// Bytes reserved when the pool is created.
    pub initial_size_bytes: usize,
    /// Smallest chunk the pool grows by; chunk `k` is `chunk_size_bytes * growth_factor^k`.
    pub chunk_size_bytes: usize,
    /// Multiplier between consecutive chunk sizes (>= 1.0).
    pub growth_factor: f64,
    /// Hard limit on reserved bytes; `None` = no limit but the upstream's.
    pub max_size_bytes: Option<usize>,
    /// Block size of the `fixed-size` allocator.
    pub block_size_bytes: usize,
    pub size_classes: SizeClasses,
    /// Minimum alignment of every block (a power of two).
    pub alignment: usize,
    pub huge_pages: HugePages,
    pub return_policy: ReturnPolicy,
    pub debug: DebugChecks,
    /// The per-thread cache in front of a locked strategy.
    pub thread_cache: ThreadCacheConfig,
    pub memory_type: MemoryType,
    /// CUDA device ordinal for device, pinned and managed pools.
    pub device_id: u32,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig::default_cpu()
    }
}

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;
/// Largest block of the fixed-size allocator.
const MAX_BLOCK_BYTES: usize = 1 << 30;
/// Largest initial reservation or growth chunk.
const MAX_RESERVE_BYTES: usize = 1 << 46;

impl PoolConfig {
    /// General purpose: TLSF variable-size behind a mutex, modest chunks, no checks.
    pub fn default_cpu() -> Self {
        PoolConfig {
            allocator: AllocatorKind::VariableSize,
            fit: FitPolicy::BestFit,
            sync: SyncMode::Mutex,
            initial_size_bytes: MIB,
            chunk_size_bytes: MIB,
            growth_factor: 2.0,
            max_size_bytes: None,
            block_size_bytes: 64,
            size_classes: SizeClasses::default(),
            alignment: 16,
            huge_pages: HugePages::Off,
            return_policy: ReturnPolicy::OnReset,
            debug: DebugChecks::default(),
            thread_cache: ThreadCacheConfig::default(),
            memory_type: MemoryType::Host,
            device_id: 0,
        }
    }

    /// Throughput first: lock-free size classes with per-thread caches, big chunks, THP.
    pub fn high_performance_cpu() -> Self {
        PoolConfig {
            allocator: AllocatorKind::LockFree,
            sync: SyncMode::LockFree,
            initial_size_bytes: 4 * MIB,
            chunk_size_bytes: 4 * MIB,
            huge_pages: HugePages::Madvise,
            return_policy: ReturnPolicy::Keep,
            ..PoolConfig::default_cpu()
        }
    }

    /// Every check on: pointer validation, poison on free, live tracking and leak report.
    pub fn debug_cpu() -> Self {
        PoolConfig {
            debug: DebugChecks {
                check_pointers: true,
                poison_on_free: true,
                track_live: true,
                leak_report: true,
            },
            ..PoolConfig::default_cpu()
        }
    }

    /// Smallest footprint: small chunks, no growth multiplier, empty chunks go back at once.
    pub fn low_memory_cpu() -> Self {
        PoolConfig {
            initial_size_bytes: 64 * KIB,
            chunk_size_bytes: 64 * KIB,
            growth_factor: 1.0,
            size_classes: SizeClasses {
                classes_per_doubling: 8,
                max_class_bytes: 4 * KIB,
            },
            return_policy: ReturnPolicy::WhenEmpty,
            thread_cache: ThreadCacheConfig {
                max_thread_bytes: 32 * KIB,
                max_class_bytes: 4 * KIB,
                ..ThreadCacheConfig::default()
            },
            ..PoolConfig::default_cpu()
        }
    }

    /// Look a preset up by the name users type (`default_cpu`, `default-cpu`, ...).
    pub fn preset(name: &str) -> Option<Self> {
        match name.replace('-', "_").as_str() {
            "default_cpu" | "default" => Some(Self::default_cpu()),
            "high_performance_cpu" => Some(Self::high_performance_cpu()),
            "debug_cpu" => Some(Self::debug_cpu()),
            "low_memory_cpu" => Some(Self::low_memory_cpu()),
            "default_gpu" => Some(Self::default_gpu()),
            "high_performance_gpu" => Some(Self::high_performance_gpu()),
            "debug_gpu" => Some(Self::debug_gpu()),
            _ => None,
        }
    }

    /// Names accepted by [`PoolConfig::preset`].
    pub const PRESETS: &'static [&'static str] = &[
        "default_cpu",
        "high_performance_cpu",
        "debug_cpu",
        "low_memory_cpu",
        "default_gpu",
        "high_performance_gpu",
        "debug_gpu",
    ];

    /// Check every value; the error names the field, the value and the rule.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn bad(field: &'static str, value: impl ToString, reason: &str) -> ConfigError {
            ConfigError::Invalid {
                field,
                value: value.to_string(),
                reason: reason.to_owned(),
            }
        }
        if !self.alignment.is_power_of_two() {
            return Err(bad("alignment", self.alignment, "must be a power of two"));
        }
        if self.alignment > 1 << 30 {
            return Err(bad("alignment", self.alignment, "must be at most 1 GiB"));
        }
        if self.block_size_bytes == 0 {
            return Err(bad("block_size_bytes", 0, "must be greater than zero"));
        }
        if self.chunk_size_bytes == 0 {
            return Err(bad("chunk_size_bytes", 0, "must be greater than zero"));
        }
        if !(self.growth_factor.is_finite()
            && self.growth_factor >= 1.0
            && self.growth_factor <= 16.0)
        {
            return Err(bad(
                "growth_factor",
                self.growth_factor,
                "must be between 1.0 and 16.0",
            ));
        }
        if let Some(max) = self.max_size_bytes {
            if self.initial_size_bytes > max {
                return Err(bad(
                    "initial_size_bytes",
                    self.initial_size_bytes,
                    &format!("must not exceed max_size_bytes ({max})"),
                ));
            }
            if max == 0 {
                return Err(bad(
                    "max_size_bytes",
                    0,
                    "must be greater than zero (omit it for no limit)",
                ));
            }
        }
        if ![1, 2, 4, 8].contains(&self.size_classes.classes_per_doubling) {
            return Err(bad(
                "size_classes.classes_per_doubling",
                self.size_classes.classes_per_doubling,
                "must be 1, 2, 4 or 8",
            ));
        }
        let max_class = self.size_classes.max_class_bytes;
        if !max_class.is_power_of_two() || !(16..=(64 * MIB)).contains(&max_class) {
            return Err(bad(
                "size_classes.max_class_bytes",
                max_class,
                "must be a power of two between 16 and 64 MiB",
            ));
        }
        if self.allocator == AllocatorKind::LockFree && self.sync == SyncMode::Mutex {
            // Allowed, but pointless; we normalise rather than reject (see `CpuPool::new`).
        }
        self.thread_cache.validate()?;
        if self.sync == SyncMode::LockFree && self.allocator != AllocatorKind::LockFree {
            return Err(bad(
                "sync",
                "lock-free",
                "needs allocator = \"lock-free\" (the other strategies need a mutex to be shared)",
            ));
        }
        // Limits the allocators would otherwise find only at the first allocation, so that
        // a config that cannot work is refused before any replay.
        if self.block_size_bytes > MAX_BLOCK_BYTES
            || self.block_size_bytes.next_multiple_of(self.alignment) > MAX_BLOCK_BYTES
        {
            return Err(bad(
                "block_size_bytes",
                self.block_size_bytes,
                "must be at most 1 GiB once rounded up to `alignment`",
            ));
        }
        for (field, value) in [
            ("initial_size_bytes", self.initial_size_bytes),
            ("chunk_size_bytes", self.chunk_size_bytes),
        ] {
            if value > MAX_RESERVE_BYTES {
                return Err(bad(
                    field,
                    value,
                    "must be at most 64 TiB (half the x86-64 user address space)",
                ));
            }
        }
        if self.allocator == AllocatorKind::LockFree
            && self.alignment > self.lock_free_max_alignment_bytes()
        {
            return Err(bad(
                "alignment",
                self.alignment,
                &format!(
                    "the lock-free allocator aligns to at most {} bytes (half its region; \
                     the region grows with size_classes.max_class_bytes)",
                    self.lock_free_max_alignment_bytes()
                ),
            ));
        }
        Ok(())
    }

    /// [`PoolConfig::validate`], plus what a host (`CpuPool`) pool needs: host memory.
    pub fn validate_cpu(&self) -> Result<(), ConfigError> {
        self.validate()?;
        if self.memory_type != MemoryType::Host {
            return Err(ConfigError::Invalid {
                field: "memory_type",
                value: format!("{:?}", self.memory_type).to_lowercase(),
                reason: "a CPU pool serves host memory only (use \"host\", or a GPU pool for \
                         device, pinned and managed memory)"
                    .to_owned(),
            });
        }
        Ok(())
    }

    /// Largest alignment the lock-free allocator serves: half its region, whose size it
    /// derives from the largest size class (see `alloc::lockfree`: eight of the largest
    /// class, a power of two between 1 and 4 MiB).
    pub fn lock_free_max_alignment_bytes(&self) -> usize {
        let region_bytes = self
            .size_classes
            .max_class_bytes
            .saturating_mul(8)
            .checked_next_power_of_two()
            .unwrap_or(usize::MAX)
            .clamp(MIB, 4 * MIB);
        region_bytes / 2
    }

    /// Parse and validate a TOML document.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: PoolConfig =
            toml::from_str(text).map_err(|e| ConfigError::Toml(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Serialise to TOML (every field written, so the file documents itself).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("PoolConfig always serialises")
    }

    /// Read, parse and validate a TOML file; errors name the path.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::from_toml(&text).map_err(|e| match e {
            ConfigError::Toml(m) => ConfigError::Toml(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Write the TOML form atomically (`atomic_file`: a reader sees the old file or the
    /// new one, never a torn one).
    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        use std::io::Write as _;
        atomic_file::write_atomically(path, |w| w.write_all(self.to_toml().as_bytes())).map_err(
            |e: std::io::Error| ConfigError::Io {
                path: path.display().to_string(),
                reason: e.to_string(),
            },
        )
    }

    /// One line for tables: `variable-size best-fit, mutex, chunk 1 MiB x2, align 16`; for
    /// a host pool also `no initial reservation` when `initial_size_bytes` is 0, and the
    /// per-thread cache's bounds when they are not the defaults (`cache 32 KiB a class,
    /// 512 KiB a thread`, or `no thread cache`). The presets' defaults print nothing extra
    /// (`low_memory_cpu` names its smaller cache).
    pub fn summary(&self) -> String {
        let alloc = match self.allocator {
            AllocatorKind::FixedSize => format!("fixed-size {} B", self.block_size_bytes),
            AllocatorKind::SizeClassed => format!(
                "size-classed {}/2x <= {}",
                self.size_classes.classes_per_doubling,
                human_bytes(self.size_classes.max_class_bytes as u64)
            ),
            AllocatorKind::VariableSize => format!(
                "variable-size {}",
                match self.fit {
                    FitPolicy::BestFit => "best-fit",
                    FitPolicy::FirstFit => "first-fit",
                }
            ),
            AllocatorKind::LockFree => format!(
                "lock-free {}/2x <= {}",
                self.size_classes.classes_per_doubling,
                human_bytes(self.size_classes.max_class_bytes as u64)
            ),
        };
        let sync = match self.sync {
            SyncMode::Mutex => "mutex",
            SyncMode::LockFree => "lock-free",
            SyncMode::SingleThreaded => "single-threaded",
        };
        format!(
            "{alloc}, {sync}, chunk {} x{}, align {}{}{}{}{}",
            human_bytes(self.chunk_size_bytes as u64),
            self.growth_factor,
            self.alignment,
            match self.huge_pages {
                HugePages::Off => "",
                HugePages::Madvise => ", THP",
                HugePages::Explicit => ", hugetlb",
            },
            match self.return_policy {
                ReturnPolicy::Keep => ", keep",
                ReturnPolicy::OnReset => "",
                ReturnPolicy::WhenEmpty => ", return-empty",
            },
            // Host pools only: a device pool reserves nothing up front by default
            // (`default_gpu`), and has no per-thread cache.
            if self.memory_type == MemoryType::Host && self.initial_size_bytes == 0 {
                ", no initial reservation"
            } else {
                ""
            },
            if self.memory_type == MemoryType::Host {
                self.thread_cache.summary()
            } else {
                String::new()
            },
        )
    }
}

impl ThreadCacheConfig {
    /// `PoolConfig::summary`'s part: empty for the defaults.
    fn summary(&self) -> String {
        if !self.enabled {
            return ", no thread cache".to_owned();
        }
        if *self == ThreadCacheConfig::default() {
            return String::new();
        }
        let mut out = format!(
            ", cache {} a class, {} a thread",
            human_bytes(self.max_class_bytes as u64),
            human_bytes(self.max_thread_bytes as u64)
        );
        let defaults = ThreadCacheConfig::default();
        if self.max_block_bytes != defaults.max_block_bytes {
            out += &format!(", blocks <= {}", human_bytes(self.max_block_bytes as u64));
        }
        if self.max_class_blocks != defaults.max_class_blocks {
            out += &format!(", {} blocks a class", self.max_class_blocks);
        }
        out
    }

    /// Check the limits; the error names the field, the value and the rule.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field: &'static str, value: usize, reason: &str| ConfigError::Invalid {
            field,
            value: value.to_string(),
            reason: reason.to_owned(),
        };
        if self.max_block_bytes > 1 << 20 {
            return Err(bad(
                "thread_cache.max_block_bytes",
                self.max_block_bytes,
                "must be at most 1 MiB (larger blocks belong in the shared pool)",
            ));
        }
        if self.max_class_blocks == 0 || self.max_class_blocks > 4096 {
            return Err(bad(
                "thread_cache.max_class_blocks",
                self.max_class_blocks,
                "must be between 1 and 4096",
            ));
        }
        if self.max_class_bytes > self.max_thread_bytes {
            return Err(bad(
                "thread_cache.max_class_bytes",
                self.max_class_bytes,
                &format!(
                    "must not exceed thread_cache.max_thread_bytes ({})",
                    self.max_thread_bytes
                ),
            ));
        }
        if self.max_thread_bytes > 64 << 20 {
            return Err(bad(
                "thread_cache.max_thread_bytes",
                self.max_thread_bytes,
                "must be at most 64 MiB",
            ));
        }
        Ok(())
    }
}

/// `1536` -> `1.5 KiB`; the one byte formatter of the project.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else if value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Parse `2MiB`, `80GiB`, `4096`, `1.5 GB`, `64k` into bytes (binary units for K/M/G).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("'{text}' is not a byte size (e.g. 4096, 64KiB, 2MiB, 80GiB)"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" | "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "'{text}': unknown unit '{other}' (use B, KiB, MiB, GiB, TiB)"
            ))
        }
    };
    let bytes = value * mult;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("'{text}' is out of range"));
    }
    Ok(bytes.round() as u64)
}
