//! The size-class table: the one mapping from request sizes to block sizes in the crate.
//!
//! Classes are multiples of [`QUANTUM_BYTES`] (16), spaced `classes_per_doubling` to a power
//! of two once the spacing would exceed the quantum, jemalloc-style:
//!
//! ```text
//! classes_per_doubling = 4:
//!   16 | 32 | 48 64 | 80 96 112 128 | 160 192 224 256 | 320 384 448 512 | ...
//!   step 16 while 2^k / 4 < 16, then step 2^k / 4 inside (2^k, 2^(k+1)]
//! ```
//!
//! Every power of two from 16 to `max_class_bytes` is a class, which the size-classed
//! allocator relies on for alignment (a power-of-two class is naturally aligned).
//! `class_of` and `class_size` are closed formulas (a leading-zero count and shifts), no
//! search.

use crate::config::SizeClasses;

/// Smallest class and the spacing of the first classes; every class is a multiple of it,
/// so every block is at least 16-byte aligned.
pub const QUANTUM_BYTES: usize = 16;
const QUANTUM_SHIFT: u32 = 4;

/// The table for one `SizeClasses` config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeClassTable {
    /// log2 of classes per doubling (0..=3).
    per_doubling_shift: u32,
    /// A power of two, at least 16; the largest class.
    max_class_bytes: usize,
    /// Number of classes; `class_size(class_count - 1) == max_class_bytes`.
    class_count: usize,
}

impl SizeClassTable {
    /// The table for `classes`. Out-of-range values are clamped to the nearest valid one
    /// (`PoolConfig::validate` rejects them before they get here).
    pub fn new(classes: &SizeClasses) -> Self {
        let per_doubling = classes.classes_per_doubling.clamp(1, 8).next_power_of_two();
        let max_class_bytes = classes
            .max_class_bytes
            .clamp(QUANTUM_BYTES, 1 << 40)
            .next_power_of_two();
        let mut table = SizeClassTable {
            per_doubling_shift: per_doubling.trailing_zeros(),
            max_class_bytes,
            class_count: usize::MAX,
        };
        table.class_count = table.class_index(max_class_bytes) + 1;
        table
    }

    pub fn classes_per_doubling(&self) -> usize {
        1 << self.per_doubling_shift
    }

    pub fn max_class_bytes(&self) -> usize {
        self.max_class_bytes
    }

    pub fn class_count(&self) -> usize {
        self.class_count
    }

    /// The smallest class holding `size_bytes`, or `None` above `max_class_bytes`.
    #[inline]
    pub fn class_of(&self, size_bytes: usize) -> Option<usize> {
        if size_bytes > self.max_class_bytes {
            None
        } else {
            Some(self.class_index(size_bytes))
        }
    }

    /// Index formula without the range check. For `size` in `(2^k, 2^(k+1)]`, `k >= 4`:
    /// the doubling starts at index `2^min(k-4, L) + cpd * max(0, k-4-L)` (L = log2 cpd)
    /// and is spaced by `2^max(k-L, 4)`.
    #[inline]
    fn class_index(&self, size_bytes: usize) -> usize {
        if size_bytes <= QUANTUM_BYTES {
            return 0;
        }
        let l = self.per_doubling_shift;
        let k = usize::BITS - 1 - (size_bytes - 1).leading_zeros();
        let linear_doublings = (k - QUANTUM_SHIFT).min(l);
        let full_doublings = (k - QUANTUM_SHIFT).saturating_sub(l) as usize;
        let base = (1usize << linear_doublings) + (full_doublings << l);
        let step_shift = k.saturating_sub(l).max(QUANTUM_SHIFT);
        let offset = size_bytes - (1usize << k);
        base + ((offset + (1 << step_shift) - 1) >> step_shift) - 1
    }

    /// Block size of `class` (which must be below `class_count`).
    #[inline]
    pub fn class_size(&self, class: usize) -> usize {
        debug_assert!(class < self.class_count);
        let cpd = 1usize << self.per_doubling_shift;
        if class < cpd {
            // The linear region: classes 16, 32, ..., 16 * cpd.
            (class + 1) << QUANTUM_SHIFT
        } else {
            let doubling = (class - cpd) >> self.per_doubling_shift;
            let j = ((class - cpd) & (cpd - 1)) + 1;
            let k = QUANTUM_SHIFT + self.per_doubling_shift + doubling as u32;
            (1usize << k) + (j << (k - self.per_doubling_shift))
        }
    }

    /// Largest power of two dividing `class_size(class)`: the natural alignment of a block
    /// of this class when blocks are laid out from an aligned base.
    #[inline]
    pub fn class_alignment(&self, class: usize) -> usize {
        let size = self.class_size(class);
        size & size.wrapping_neg()
    }

    /// The smallest class holding `size_bytes` whose natural alignment is at least `align`
    /// (a power of two), or `None` when no class qualifies. O(1): if `class_of(size)` is not
    /// aligned enough, the power-of-two class `max(size, align).next_power_of_two()` is.
    #[inline]
    pub fn aligned_class_of(&self, size_bytes: usize, align: usize) -> Option<usize> {
        let class = self.class_of(size_bytes.max(align))?;
        if self.class_alignment(class) >= align {
            Some(class)
        } else {
            self.class_of(size_bytes.max(align).next_power_of_two())
        }
    }
}

/// `SizeClassTable::class_of` and `class_size` by one table load, for the requests of a
/// fast path (up to `max_bytes`): the formula takes about 20 instructions, the table 2.
#[derive(Debug, Clone)]
pub(crate) struct ClassLookup {
    /// Largest request served (a multiple of 16; 0: none).
    max_bytes: usize,
    /// `class_of_granule[g]`: the class of requests of `((g - 1) * 16, g * 16]` bytes, for
    /// `g` in `0..=max_bytes / 16` (`g == 0`: the 16-byte class, as `class_of(0)`).
    class_of_granule: Box<[u16]>,
    /// `class_bytes[c]`: `table.class_size(c)` for every class a granule maps to.
    class_bytes: Box<[usize]>,
}

impl ClassLookup {
    /// The lookup for requests up to `limit_bytes` (rounded down to 16) of classes below
    /// `class_limit` (larger requests are not served: `get` says `None`).
    pub(crate) fn new(table: &SizeClassTable, limit_bytes: usize, class_limit: usize) -> Self {
        let mut max_bytes = limit_bytes.min(table.max_class_bytes()) & !(QUANTUM_BYTES - 1);
        while max_bytes > 0 && table.class_of(max_bytes).is_none_or(|c| c >= class_limit) {
            max_bytes -= QUANTUM_BYTES;
        }
        let granules = max_bytes >> QUANTUM_SHIFT;
        let class_of_granule: Box<[u16]> = (0..=granules)
            .map(|g| table.class_of(g << QUANTUM_SHIFT).unwrap_or(0) as u16)
            .collect();
        let class_count = class_of_granule.iter().copied().max().unwrap_or(0) as usize + 1;
        let class_bytes = (0..class_count).map(|c| table.class_size(c)).collect();
        ClassLookup {
            max_bytes,
            class_of_granule,
            class_bytes,
        }
    }

    /// `(class, class size)` for a request of `size_bytes`, or `None` beyond the lookup.
    #[inline(always)]
    pub(crate) fn get(&self, size_bytes: usize) -> Option<(usize, usize)> {
        if size_bytes > self.max_bytes {
            return None;
        }
        self.get_within(size_bytes)
    }

    /// `get` for requests of 1 byte or more: `None` for 0 as well, so that an empty
    /// lookup (`max_bytes` 0) serves nothing, with one compare (`size - 1`, wrapping, at
    /// least `max_bytes`) and no rounding of 0 up to 1 first.
    #[inline(always)]
    pub(crate) fn get_nonzero(&self, size_bytes: usize) -> Option<(usize, usize)> {
        if size_bytes.wrapping_sub(1) >= self.max_bytes {
            return None;
        }
        self.get_within(size_bytes)
    }

    /// The table's answer for `size_bytes <= max_bytes`.
    #[inline(always)]
    fn get_within(&self, size_bytes: usize) -> Option<(usize, usize)> {
        debug_assert!(size_bytes <= self.max_bytes);
        let granule = (size_bytes + QUANTUM_BYTES - 1) >> QUANTUM_SHIFT;
        // SAFETY: `size_bytes <= max_bytes`, a multiple of 16, so `granule <= max_bytes /
        // 16`, the last index of `class_of_granule` (built with `max_bytes / 16 + 1`
        // entries), and every entry is below `class_bytes.len()` (its maximum plus one).
        unsafe {
            let class = *self.class_of_granule.get_unchecked(granule) as usize;
            Some((class, *self.class_bytes.get_unchecked(class)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table built the slow, obvious way.
    fn reference_table(cpd: usize, max_class: usize) -> Vec<usize> {
        let mut classes = vec![QUANTUM_BYTES];
        let mut base = QUANTUM_BYTES;
        while base < max_class {
            let step = (base / cpd).max(QUANTUM_BYTES);
            let mut size = base + step;
            while size <= 2 * base {
                classes.push(size);
                size += step;
            }
            base *= 2;
        }
        classes
    }

    fn table(cpd: u32, max_class: usize) -> SizeClassTable {
        SizeClassTable::new(&SizeClasses {
            classes_per_doubling: cpd,
            max_class_bytes: max_class,
        })
    }

    #[test]
    fn class_size_matches_reference_for_every_shape() {
        for cpd in [1u32, 2, 4, 8] {
            for max_shift in 4..=26 {
                let max_class = 1usize << max_shift;
                let t = table(cpd, max_class);
                let reference = reference_table(cpd as usize, max_class);
                assert_eq!(
                    t.class_count(),
                    reference.len(),
                    "cpd {cpd} max {max_class}"
                );
                for (class, &size) in reference.iter().enumerate() {
                    assert_eq!(t.class_size(class), size, "cpd {cpd} class {class}");
                    assert_eq!(t.class_of(size), Some(class));
                    let smallest_fitting = reference.iter().position(|&c| c >= size - 1);
                    assert_eq!(t.class_of(size - 1), smallest_fitting);
                    assert_eq!(
                        t.class_of(size + 1),
                        reference.get(class + 1).map(|_| class + 1)
                    );
                }
            }
        }
    }

    #[test]
    fn class_of_is_exhaustively_the_smallest_fitting_class_below_64k() {
        for cpd in [1u32, 2, 4, 8] {
            let max_class = 1 << 16;
            let t = table(cpd, max_class);
            let reference = reference_table(cpd as usize, max_class);
            let mut class = 0;
            for size in 0..=max_class {
                while reference[class] < size {
                    class += 1;
                }
                assert_eq!(t.class_of(size), Some(class), "cpd {cpd} size {size}");
            }
            assert_eq!(t.class_of(max_class + 1), None);
            assert_eq!(t.class_of(usize::MAX), None);
        }
    }

    #[test]
    fn every_class_is_a_quantum_multiple_and_powers_of_two_are_classes() {
        for cpd in [1u32, 2, 4, 8] {
            let t = table(cpd, 1 << 20);
            for class in 0..t.class_count() {
                assert_eq!(t.class_size(class) % QUANTUM_BYTES, 0);
            }
            for shift in 4..=20 {
                let class = t.class_of(1 << shift).unwrap();
                assert_eq!(t.class_size(class), 1 << shift);
            }
        }
    }

    #[test]
    fn aligned_class_of_honours_alignment_minimally() {
        for cpd in [1u32, 2, 4, 8] {
            let t = table(cpd, 1 << 15);
            for size in 1..=(1 << 15) {
                for align_shift in 4..=12 {
                    let align = 1usize << align_shift;
                    let got = t.aligned_class_of(size, align);
                    let reference = (0..t.class_count())
                        .find(|&c| t.class_size(c) >= size && t.class_size(c) & (align - 1) == 0);
                    if let Some(class) = got {
                        assert!(t.class_size(class) >= size);
                        assert_eq!(t.class_size(class) % align, 0);
                    }
                    // The O(1) answer may skip to the next power of two: at most a doubling
                    // above the best aligned class.
                    match (got, reference) {
                        (Some(g), Some(r)) => assert!(t.class_size(g) <= 2 * t.class_size(r)),
                        (None, None) => {}
                        (g, r) => panic!("size {size} align {align}: {g:?} vs {r:?}"),
                    }
                }
            }
        }
    }

    #[test]
    fn the_lookup_agrees_with_the_formula() {
        for per_doubling in [1, 2, 4, 8] {
            let table = SizeClassTable::new(&SizeClasses {
                classes_per_doubling: per_doubling,
                max_class_bytes: 32 * 1024,
            });
            let lookup = ClassLookup::new(&table, 4096, usize::MAX);
            for size in 0..=4096 {
                let class = table.class_of(size).unwrap();
                assert_eq!(
                    lookup.get(size),
                    Some((class, table.class_size(class))),
                    "{size}"
                );
            }
            assert_eq!(lookup.get(4097), None);
            for size in 1..=4096 {
                assert_eq!(lookup.get_nonzero(size), lookup.get(size), "{size}");
            }
            assert_eq!(lookup.get_nonzero(0), None);
            assert_eq!(lookup.get_nonzero(4097), None);
            let empty = ClassLookup::new(&table, 0, usize::MAX);
            assert_eq!(empty.get_nonzero(0), None);
            assert_eq!(empty.get_nonzero(1), None);
            // A class limit shrinks the range served.
            let limit = table.class_of(1000).unwrap();
            let limited = ClassLookup::new(&table, 4096, limit);
            assert!(limited.get(1000).is_none());
            assert!(limited.get(16).is_some());
            for size in 0..=4096 {
                if let Some((class, bytes)) = limited.get(size) {
                    assert!(class < limit);
                    assert_eq!((class, bytes), lookup.get(size).unwrap());
                }
            }
        }
    }
}
