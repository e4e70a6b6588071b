//! Size classes of the thread cache: request size -> class by one table load, and the
//! exact usable size a block must have to be cached in a class.
//!
//! ```text
//! request size s (1..=max_cached_bytes)
//!   slot_of_granule[(s + 15) / 16] ──> slot of class c ──> class_bytes[c], capacity[c]
//! freed block of usable size u
//!   slot_of_granule[u / 16] ──> c, cached only if class_bytes[c] == u
//! ```
//!
//! The table holds each class's *slot*, `64 * (c + 1)`: where its magazine lies in a
//! thread cache's rack (`rack.rs`), so the allocation fast path adds the entry to the
//! rack's address as it is. At most `MAX_CLASS_CAP` classes (1,022) are cached.
//!
//! The classes are the strategy's own (the one size-class table of the crate,
//! `alloc::size_class`, with the pool's alignment applied), so a block the strategy hands
//! out for `class_bytes[c]` has exactly that usable size in the size-classed strategy and
//! almost always in TLSF; a block whose usable size is not exactly a class size (a TLSF
//! block that absorbed a small remainder, a large object) is never cached.

use super::rack::slot_of_class;
use crate::alloc::segment::{CLASS_SLOT_BYTES, MAX_CLASS_CAP};
use crate::alloc::size_class::{SizeClassTable, QUANTUM_BYTES};
use crate::config::PoolConfig;
use std::sync::Arc;

const GRANULE_SHIFT: u32 = QUANTUM_BYTES.trailing_zeros();

/// The cache's classes for one pool.
#[derive(Debug, Clone)]
pub(crate) struct CacheClasses {
    /// Request size -> slot (also `CpuPool`'s own copy, for its allocation fast path).
    request: RequestSlots,
    /// Usable bytes of every block cached in class `c`; a multiple of 16.
    pub(crate) class_bytes: Box<[usize]>,
    /// Most blocks a thread keeps in class `c` (at least 2, so a refill can leave one).
    pub(crate) capacity: Box<[usize]>,
}

/// Request size -> the slot of the class serving it: the table of `CacheClasses`, shared
/// with `CpuPool` (its allocation fast path reads it from its own fields).
///
/// Invariant: `slot_of_granule` has `max_bytes / 16 + 1` entries or more (`max_bytes` a
/// multiple of 16), each the slot of a class of its cache; `exact_slot_of_granule` has
/// as many, each a class's slot or the class count's (the magazine of no capacity).
#[derive(Debug, Clone)]
pub(crate) struct RequestSlots {
    /// Largest request served from the cache (0: nothing but 0 bytes is).
    max_bytes: usize,
    /// `slot_of_granule[g]`: the slot (`slot_of_class`) of the class serving requests of
    /// `g * 16` bytes (and of every size in `((g - 1) * 16, g * 16]`); `g` in
    /// `0..=max_bytes / 16`.
    slot_of_granule: Arc<[u16]>,
    /// `exact_slot_of_granule[g]`: the slot of the class whose blocks have exactly
    /// `g * 16` usable bytes, or the slot past the classes (whose magazine has no
    /// capacity, so it declines every push) when no class has; `g` in
    /// `0..=max_bytes / 16`, as `slot_of_granule`.
    exact_slot_of_granule: Arc<[u16]>,
}

impl RequestSlots {
    /// The table of a pool without a thread cache: its one entry (for 0 bytes) is never
    /// used, since no thread has a rack for such a pool (`CpuPool::fast_id`).
    pub(crate) fn none() -> RequestSlots {
        RequestSlots {
            max_bytes: 0,
            slot_of_granule: Arc::from([slot16(0)]),
            exact_slot_of_granule: Arc::from([slot16(0)]),
        }
    }

    /// The slot of the class serving a request of `size_bytes` (0 is served as 1), or
    /// `None` when it is too big for the cache.
    #[inline(always)]
    pub(crate) fn slot_of(&self, size_bytes: usize) -> Option<usize> {
        if size_bytes > self.max_bytes {
            return None;
        }
        let granule = (size_bytes + QUANTUM_BYTES - 1) >> GRANULE_SHIFT;
        debug_assert!(granule < self.slot_of_granule.len());
        // SAFETY: `size_bytes <= max_bytes`, a multiple of 16, so `granule <= max_bytes /
        // 16`, within the table (the type's invariant).
        Some(usize::from(unsafe {
            *self.slot_of_granule.get_unchecked(granule)
        }))
    }

    /// The slot of the class whose blocks have exactly `usable_bytes`, for a freed block
    /// of that size (a TLSF block: its usable size is a multiple of 16): the slot past
    /// the classes when no class has, whose magazine declines every push; `None` above
    /// `max_bytes`. One load, and no compare with the magazine's block size.
    ///
    /// `usable_bytes` must be a multiple of 16 for the answer to be exact (a smaller
    /// remainder would be dropped by the index); `debug_assert`ed.
    #[inline(always)]
    pub(crate) fn exact_slot_of_usable(&self, usable_bytes: usize) -> Option<usize> {
        debug_assert_eq!(usable_bytes % QUANTUM_BYTES, 0);
        if usable_bytes > self.max_bytes {
            return None;
        }
        // SAFETY: `usable_bytes / 16 <= max_bytes / 16`, within the table (the type's
        // invariant).
        Some(usize::from(unsafe {
            *self
                .exact_slot_of_granule
                .get_unchecked(usable_bytes >> GRANULE_SHIFT)
        }))
    }
}

/// `slot_of_class` as a table entry (`class` up to `MAX_CLASS_CAP`: the class count's is
/// the slot of the magazine of no capacity past the classes).
fn slot16(class: usize) -> u16 {
    u16::try_from(slot_of_class(class)).expect("class up to MAX_CLASS_CAP")
}

impl CacheClasses {
    /// Classes for a size-classed or TLSF strategy: the size-class table up to
    /// `thread_cache.max_block_bytes`, each request mapped to the class the strategy itself
    /// would use at the pool's alignment.
    pub(crate) fn for_table(config: &PoolConfig) -> Self {
        let table = SizeClassTable::new(&config.size_classes);
        let limits = &config.thread_cache;
        let max_cached_bytes = limits
            .max_block_bytes
            .min(table.max_class_bytes())
            .next_multiple_of(QUANTUM_BYTES)
            .min(table.max_class_bytes());
        let granules = max_cached_bytes >> GRANULE_SHIFT;
        let mut classes: Vec<usize> = Vec::new();
        let mut class_of_granule: Vec<usize> = Vec::with_capacity(granules + 1);
        for g in 0..=granules {
            let size = (g << GRANULE_SHIFT).max(1);
            let bytes = table
                .aligned_class_of(size, config.alignment)
                .map(|c| table.class_size(c))
                .unwrap_or(usize::MAX);
            let index = match classes.iter().position(|&b| b == bytes) {
                Some(index) => index,
                // No more classes than the slots can name: larger requests bypass the
                // cache (only a table of more than 1,022 classes below
                // `max_block_bytes` gets here).
                None if classes.len() == usize::from(MAX_CLASS_CAP) => break,
                None => {
                    classes.push(bytes);
                    classes.len() - 1
                }
            };
            class_of_granule.push(index);
        }
        let max_cached_bytes = max_cached_bytes.min((class_of_granule.len() - 1) << GRANULE_SHIFT);
        let slot_of_granule = class_of_granule.into_iter().map(slot16).collect();
        Self::from_parts(max_cached_bytes, slot_of_granule, classes, config)
    }

    /// One class: every block of a fixed-size strategy (`block_bytes` usable), serving
    /// every request up to it.
    pub(crate) fn uniform(block_bytes: usize, config: &PoolConfig) -> Self {
        let max_cached_bytes = block_bytes - block_bytes % QUANTUM_BYTES;
        let slot_of_granule = vec![slot16(0); (max_cached_bytes >> GRANULE_SHIFT) + 1];
        Self::from_parts(
            max_cached_bytes,
            slot_of_granule.into_boxed_slice(),
            vec![block_bytes],
            config,
        )
    }

    fn from_parts(
        max_cached_bytes: usize,
        slot_of_granule: Box<[u16]>,
        class_bytes: Vec<usize>,
        config: &PoolConfig,
    ) -> Self {
        // `slot_of_request` indexes the table without a bounds check: every granule of
        // a request up to `max_cached_bytes` must be in it.
        assert!(
            (max_cached_bytes + QUANTUM_BYTES - 1) >> GRANULE_SHIFT < slot_of_granule.len(),
            "thread-cache class table too short"
        );
        assert!(class_bytes.len() <= usize::from(MAX_CLASS_CAP));
        assert!(slot_of_granule
            .iter()
            .all(|&slot| usize::from(slot) <= slot_of_class(class_bytes.len() - 1)));
        let limits = &config.thread_cache;
        let capacity = class_bytes
            .iter()
            .map(|&bytes| {
                (limits.max_class_bytes / bytes.max(1)).clamp(2, limits.max_class_blocks.max(2))
            })
            .collect();
        let mut exact_slot_of_granule = vec![slot16(class_bytes.len()); slot_of_granule.len()];
        for (class, &bytes) in class_bytes.iter().enumerate() {
            if bytes.is_multiple_of(QUANTUM_BYTES) && bytes <= max_cached_bytes {
                exact_slot_of_granule[bytes >> GRANULE_SHIFT] = slot16(class);
            }
        }
        CacheClasses {
            request: RequestSlots {
                max_bytes: max_cached_bytes,
                slot_of_granule: slot_of_granule.into(),
                exact_slot_of_granule: exact_slot_of_granule.into(),
            },
            class_bytes: class_bytes.into_boxed_slice(),
            capacity,
        }
    }

    /// Whether any request size is served from the cache.
    pub(crate) fn serves_requests(&self) -> bool {
        self.request.max_bytes > 0
    }

    pub(crate) fn class_count(&self) -> usize {
        self.class_bytes.len()
    }

    /// The class of a request of `size_bytes` aligned to `align` (a power of two), for a
    /// strategy whose class blocks are aligned to their size's lowest set bit: the
    /// smallest class of at least `max(size_bytes, align)` bytes that is a multiple of
    /// `align`, within twice that size (the size-class table has every power of two, so
    /// one is), or `None` when the cache holds no such class. Scans at most one doubling
    /// of classes: a slow path's, not the fast path's.
    pub(crate) fn class_of_aligned_request(
        &self,
        size_bytes: usize,
        align: usize,
    ) -> Option<usize> {
        let need = size_bytes.max(align);
        let first = self.class_of_request(need)?;
        self.class_bytes[first..]
            .iter()
            .take_while(|&&bytes| bytes <= need.saturating_mul(2))
            .position(|&bytes| bytes.is_multiple_of(align))
            .map(|offset| first + offset)
    }

    /// The slot (`slot_of_class`) of the class serving a request of `size_bytes` (0 is
    /// served as 1), or `None` when it is too big for the cache.
    #[inline(always)]
    pub(crate) fn slot_of_request(&self, size_bytes: usize) -> Option<usize> {
        self.request.slot_of(size_bytes)
    }

    /// `exact_slot_of_granule` (`RequestSlots`): for every usable size `g * 16` up to
    /// the largest cached request, the slot of the class of exactly that size, or the
    /// class count's. TLSF writes these into its blocks as their free hints
    /// (`Tlsf::set_free_hints`).
    pub(crate) fn exact_slots(&self) -> &[u16] {
        &self.request.exact_slot_of_granule
    }

    /// The request table, for `CpuPool`'s allocation fast path.
    pub(crate) fn request_slots(&self) -> RequestSlots {
        self.request.clone()
    }

    /// The class serving a request of `size_bytes`, or `None` when it is too big for the
    /// cache.
    #[inline]
    pub(crate) fn class_of_request(&self, size_bytes: usize) -> Option<usize> {
        Some(self.slot_of_request(size_bytes)? / CLASS_SLOT_BYTES - 1)
    }

    /// The class a freed block of exactly `usable_bytes` belongs to, if any.
    #[inline(always)]
    pub(crate) fn class_of_usable(&self, usable_bytes: usize) -> Option<usize> {
        let slot = *self
            .request
            .slot_of_granule
            .get(usable_bytes >> GRANULE_SHIFT)?;
        let class = usize::from(slot) / CLASS_SLOT_BYTES - 1;
        (self.class_bytes[class] == usable_bytes).then_some(class)
    }

    /// Whether cache class `c` is class `c` of `table` for every cache class (true for
    /// the size-classed strategy at alignments up to 16): then a span's owner index is
    /// its blocks' cache class.
    pub(crate) fn matches_table(&self, table: &SizeClassTable) -> bool {
        self.class_bytes
            .iter()
            .enumerate()
            .all(|(c, &bytes)| c < table.class_count() && table.class_size(c) == bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_maps_to_the_smallest_class_that_holds_it() {
        let config = PoolConfig::default_cpu();
        let classes = CacheClasses::for_table(&config);
        let table = SizeClassTable::new(&config.size_classes);
        for size in 1..=config.thread_cache.max_block_bytes {
            let class = classes.class_of_request(size).unwrap();
            assert_eq!(
                classes.class_bytes[class],
                table.class_size(table.class_of(size).unwrap()),
                "size {size}"
            );
            assert_eq!(
                classes.class_of_usable(classes.class_bytes[class]),
                Some(class)
            );
        }
        assert_eq!(
            classes.class_of_request(config.thread_cache.max_block_bytes + 1),
            None
        );
        assert_eq!(classes.class_of_usable(24), None);
        assert_eq!(classes.class_of_usable(1 << 20), None);
    }

    #[test]
    fn exact_slots_name_only_the_class_of_exactly_that_size() {
        for alignment in [16, 64] {
            let config = PoolConfig {
                alignment,
                ..PoolConfig::default_cpu()
            };
            let classes = CacheClasses::for_table(&config);
            let slots = classes.request_slots();
            let none = slot_of_class(classes.class_count());
            for usable in (16..=config.thread_cache.max_block_bytes + 64).step_by(16) {
                let expected = match classes.class_of_usable(usable) {
                    Some(class) => Some(slot_of_class(class)),
                    None if usable <= slots.max_bytes => Some(none),
                    None => None,
                };
                assert_eq!(
                    slots.exact_slot_of_usable(usable),
                    expected,
                    "usable {usable}, alignment {alignment}"
                );
            }
        }
    }

    #[test]
    fn alignment_moves_requests_to_aligned_classes() {
        let config = PoolConfig {
            alignment: 64,
            ..PoolConfig::default_cpu()
        };
        let classes = CacheClasses::for_table(&config);
        for size in 1..=4096 {
            let bytes = classes.class_bytes[classes.class_of_request(size).unwrap()];
            assert!(
                bytes >= size && bytes.is_multiple_of(64),
                "size {size}: {bytes}"
            );
        }
    }

    #[test]
    fn aligned_requests_take_the_smallest_class_of_a_multiple_of_the_alignment() {
        let config = PoolConfig::default_cpu();
        let classes = CacheClasses::for_table(&config);
        let max = classes.class_bytes[classes.class_count() - 1];
        for shift in 5..=12 {
            let align = 1usize << shift;
            for size in 0..=max {
                let got = classes.class_of_aligned_request(size, align);
                let need = size.max(align);
                let best = (0..classes.class_count()).find(|&c| {
                    classes.class_bytes[c] >= need && classes.class_bytes[c].is_multiple_of(align)
                });
                match best {
                    // Every power of two up to the largest class is one, so a class
                    // within twice the need always qualifies.
                    Some(best) if need <= max => assert_eq!(got, Some(best), "{size} at {align}"),
                    _ => assert_eq!(got, None, "{size} at {align}"),
                }
            }
        }
    }

    #[test]
    fn uniform_classes_serve_up_to_the_block() {
        let config = PoolConfig::default_cpu();
        let classes = CacheClasses::uniform(72, &config);
        assert_eq!(classes.class_of_request(64), Some(0));
        assert_eq!(classes.class_of_request(65), None);
        assert_eq!(classes.class_of_usable(72), Some(0));
        assert_eq!(classes.class_of_usable(64), None);
        assert!(classes.capacity[0] >= 2);
    }
}
