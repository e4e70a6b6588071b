//! Block size -> free list: the two-level segregated-fit mapping.
//!
//! Sizes are counted in granules of `GRANULE_BYTES`. First level 0 holds the
//! `SL_COUNT` smallest sizes one granule apart (0..512 bytes); first level `fl >= 1`
//! holds the sizes in `[SL_COUNT << (fl - 1), SL_COUNT << fl)` granules, split into
//! `SL_COUNT` second-level lists of equal width `1 << (fl - 1)` granules. Levels 0 and 1
//! are therefore exact (every block of one list has the same size) and above them a list
//! spans at most 1/32 of its size, which bounds the slack good-fit search can waste.

/// log2 of the size granule; every block size is a multiple of the granule.
pub(super) const GRANULE_LOG2: u32 = 4;
pub(super) const GRANULE_BYTES: usize = 1 << GRANULE_LOG2;
/// log2 of the number of second-level lists per first level.
pub(super) const SL_LOG2: u32 = 5;
pub(super) const SL_COUNT: usize = 1 << SL_LOG2;
/// First levels needed to map every size up to `usize::MAX`.
pub(super) const FL_COUNT: usize = (usize::BITS - GRANULE_LOG2 - SL_LOG2 + 1) as usize;

const _: () = assert!(FL_COUNT <= u64::BITS as usize && SL_COUNT <= u32::BITS as usize);

/// The list whose size range contains `size_bytes`: where a free block of that size lives.
#[inline(always)]
pub(super) fn list_of(size_bytes: usize) -> (usize, usize) {
    let granules = size_bytes >> GRANULE_LOG2;
    if granules < SL_COUNT {
        return (0, granules);
    }
    let shift = granules.ilog2() - SL_LOG2;
    // `granules >> shift` is in [SL_COUNT, 2 * SL_COUNT): its top bit is the first level.
    ((shift + 1) as usize, (granules >> shift) - SL_COUNT)
}

/// The first list all of whose blocks are at least `size_bytes`: where good-fit search
/// starts. `size_bytes` must be below `usize::MAX / 2` (callers bound requests far lower).
#[inline(always)]
pub(super) fn list_at_least(size_bytes: usize) -> (usize, usize) {
    let granules = size_bytes.div_ceil(GRANULE_BYTES);
    if granules < 2 * SL_COUNT {
        // Levels 0 and 1 are exact: the list of the size itself starts at the size.
        return list_of(granules << GRANULE_LOG2);
    }
    let list_width_granules = 1usize << (granules.ilog2() - SL_LOG2);
    list_of((granules + list_width_granules - 1) << GRANULE_LOG2)
}

/// Smallest block size (bytes) that maps to list `(fl, sl)`.
#[cfg(test)]
pub(super) fn list_min_bytes(fl: usize, sl: usize) -> usize {
    if fl == 0 {
        sl << GRANULE_LOG2
    } else {
        (SL_COUNT + sl) << (fl - 1 + GRANULE_LOG2 as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn next_list((fl, sl): (usize, usize)) -> (usize, usize) {
        if sl + 1 < SL_COUNT {
            (fl, sl + 1)
        } else {
            (fl + 1, 0)
        }
    }

    /// Sizes to check: every granule up to 1 MiB, then a few around every power of two.
    fn sizes() -> Vec<usize> {
        let mut sizes: Vec<usize> = (1..=(1 << 20) / GRANULE_BYTES)
            .map(|g| g * GRANULE_BYTES)
            .collect();
        for log2 in 21..(usize::BITS - 2) {
            let p = 1usize << log2;
            for delta in [-48isize, -16, 0, 16, 48] {
                sizes.push((p as isize + delta) as usize);
            }
            sizes.push(p + p / 3 / GRANULE_BYTES * GRANULE_BYTES);
        }
        sizes
    }

    #[test]
    fn list_of_brackets_every_size() {
        for size in sizes() {
            let list = list_of(size);
            assert!(list.0 < FL_COUNT && list.1 < SL_COUNT, "{size} -> {list:?}");
            let (next_fl, next_sl) = next_list(list);
            assert!(list_min_bytes(list.0, list.1) <= size, "{size} below its list {list:?}");
            if next_fl < FL_COUNT {
                assert!(size < list_min_bytes(next_fl, next_sl), "{size} above {list:?}");
            }
        }
    }

    #[test]
    fn list_of_is_monotone() {
        let mut prev = (0, 0);
        for size in sizes() {
            let list = list_of(size);
            assert!(list >= prev, "{size} maps to {list:?}, before {prev:?}");
            prev = list;
        }
    }

    #[test]
    fn levels_zero_and_one_are_exact() {
        for size in (0..2 * SL_COUNT).map(|g| g * GRANULE_BYTES) {
            let (fl, sl) = list_of(size);
            assert_eq!(list_min_bytes(fl, sl), size);
            assert_eq!(list_at_least(size), (fl, sl));
        }
    }

    #[test]
    fn list_at_least_is_the_first_list_that_guarantees_a_fit() {
        for size in sizes() {
            let start = list_at_least(size);
            assert!(list_min_bytes(start.0, start.1) >= size, "{size} -> {start:?}");
            // Minimal: the list before it can hold a block smaller than `size`.
            if start != (0, 0) {
                let before = if start.1 == 0 {
                    (start.0 - 1, SL_COUNT - 1)
                } else {
                    (start.0, start.1 - 1)
                };
                assert!(list_min_bytes(before.0, before.1) < size, "{size} -> {start:?}");
            }
        }
    }

    #[test]
    fn every_block_in_a_searched_list_fits() {
        // Any block whose list is at or after `list_at_least(request)` (what the bitmap
        // search may return) is at least `request`; blocks just below the bound are not.
        let requests = sizes();
        for &request in requests.iter().step_by(7) {
            let start = list_at_least(request);
            for block in [request, request + 16, request.saturating_sub(16), request / 2 * 3] {
                let block = block / GRANULE_BYTES * GRANULE_BYTES;
                if list_of(block) >= start {
                    assert!(block >= request, "block {block} in {start:?}+ for {request}");
                }
            }
            let lowest = list_min_bytes(start.0, start.1);
            assert!(list_of(lowest) == start && lowest >= request);
        }
    }
}
