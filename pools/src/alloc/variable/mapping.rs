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
    list_and_width_log2(size_bytes).0
}

/// `list_of(size_bytes)` and log2 of that list's width in granules, without branches:
/// or-ing in `SL_COUNT - 1` puts all of level 0 on the log2 of level 1 minus one (and keeps
/// the logarithm defined), so level 0 needs no special case.
#[inline(always)]
fn list_and_width_log2(size_bytes: usize) -> ((usize, usize), u32) {
    let granules = size_bytes >> GRANULE_LOG2;
    let fl = (granules | (SL_COUNT - 1)).ilog2() + 1 - SL_LOG2;
    // Levels 0 and 1 are one granule wide, level `fl >= 1` is `1 << (fl - 1)` granules.
    let width_log2 = fl.saturating_sub(1);
    // `granules >> width_log2` is below `2 * SL_COUNT`; the mask drops the level's top bit.
    let sl = (granules >> width_log2) & (SL_COUNT - 1);
    ((fl as usize, sl), width_log2)
}

/// For a block size `need_bytes` (a multiple of `GRANULE_BYTES`): its list, and whether
/// every block of that list is at least `need_bytes` (it is the list's smallest size, as
/// always in the exact levels 0 and 1). When it is not, the first list whose every block
/// fits is the next one.
#[inline(always)]
pub(super) fn list_of_request(need_bytes: usize) -> ((usize, usize), bool) {
    debug_assert!(need_bytes.is_multiple_of(GRANULE_BYTES));
    let (list, width_log2) = list_and_width_log2(need_bytes);
    let offset_granules = (need_bytes >> GRANULE_LOG2) & ((1 << width_log2) - 1);
    (list, offset_granules == 0)
}

/// The first list all of whose blocks are at least `size_bytes`: where good-fit search
/// starts. `size_bytes` must be below `usize::MAX / 2` (callers bound requests far lower).
#[cfg(test)]
pub(super) fn list_at_least(size_bytes: usize) -> (usize, usize) {
    let ((fl, sl), whole_list_fits) = list_of_request(size_bytes.next_multiple_of(GRANULE_BYTES));
    match (whole_list_fits, sl + 1 < SL_COUNT) {
        (true, _) => (fl, sl),
        (false, true) => (fl, sl + 1),
        (false, false) => (fl + 1, 0),
    }
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
            assert!(
                list_min_bytes(list.0, list.1) <= size,
                "{size} below its list {list:?}"
            );
            if next_fl < FL_COUNT {
                assert!(
                    size < list_min_bytes(next_fl, next_sl),
                    "{size} above {list:?}"
                );
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
            assert!(
                list_min_bytes(start.0, start.1) >= size,
                "{size} -> {start:?}"
            );
            // Minimal: the list before it can hold a block smaller than `size`.
            if start != (0, 0) {
                let before = if start.1 == 0 {
                    (start.0 - 1, SL_COUNT - 1)
                } else {
                    (start.0, start.1 - 1)
                };
                assert!(
                    list_min_bytes(before.0, before.1) < size,
                    "{size} -> {start:?}"
                );
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
            for block in [
                request,
                request + 16,
                request.saturating_sub(16),
                request / 2 * 3,
            ] {
                let block = block / GRANULE_BYTES * GRANULE_BYTES;
                if list_of(block) >= start {
                    assert!(
                        block >= request,
                        "block {block} in {start:?}+ for {request}"
                    );
                }
            }
            let lowest = list_min_bytes(start.0, start.1);
            assert!(list_of(lowest) == start && lowest >= request);
        }
    }
}
