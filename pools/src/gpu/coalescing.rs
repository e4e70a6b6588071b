//! The variable-size strategy of a `GpuPool`: per-stream, address-ordered, coalescing free
//! lists on the host (RMM's `coalescing_free_list`, with an index for best fit).
//!
//! ```text
//!  stream 0:  by_addr  [A:256 c1] [B:4096 c1] [E:1024 c2]      by_size (256,A) (1024,E) (4096,B)
//!  stream 3:  by_addr  [C:512 c1]
//!  chunk c1:  |A free|x live|B free  |C free(s3)|y live|   chunk c2: |E free|...
//! ```
//! A free block coalesces with its neighbours in the same stream's list and the same chunk
//! only; C merges with B once stream 3's list is merged into stream 0's.

use super::blocks::{align_up, Block, FreeBlocks, FreeExtent};
use super::StreamId;
use crate::config::FitPolicy;
use std::collections::{BTreeMap, BTreeSet};

/// One stream's free blocks.
#[derive(Debug, Default)]
struct FreeList {
    /// start -> (len, chunk). Invariant: disjoint; no two entries of the same chunk are
    /// adjacent (they are merged on insert).
    by_addr: BTreeMap<u64, (u64, u64)>,
    /// `(len, start)` of every entry of `by_addr`: the best-fit index.
    by_size: BTreeSet<(u64, u64)>,
}

impl FreeList {
    fn is_empty(&self) -> bool {
        self.by_addr.is_empty()
    }

    fn insert_raw(&mut self, b: Block) {
        self.by_addr.insert(b.addr, (b.len, b.chunk));
        self.by_size.insert((b.len, b.addr));
    }

    fn remove_raw(&mut self, addr: u64) -> Block {
        let (len, chunk) = self
            .by_addr
            .remove(&addr)
            .expect("free block present in by_addr");
        self.by_size.remove(&(len, addr));
        Block { addr, len, chunk }
    }

    /// Insert, merging with the neighbours of the same chunk. Returns the merged block.
    fn insert(&mut self, b: Block) -> Block {
        let mut merged = b;
        if let Some((&prev, &(prev_len, prev_chunk))) = self.by_addr.range(..b.addr).next_back() {
            if prev_chunk == b.chunk && prev + prev_len == b.addr {
                self.remove_raw(prev);
                merged.addr = prev;
                merged.len += prev_len;
            }
        }
        let end = b.addr + b.len;
        if let Some(&(next_len, next_chunk)) = self.by_addr.get(&end) {
            if next_chunk == b.chunk {
                self.remove_raw(end);
                merged.len += next_len;
            }
        }
        self.insert_raw(merged);
        merged
    }

    /// Where a block of `len` at `align` would start inside free block `f`, if it fits.
    fn fit(f: Block, len: u64, align: u64) -> Option<u64> {
        let start = align_up(f.addr, align)?;
        (start.checked_add(len)? <= f.addr + f.len).then_some(start)
    }

    fn find(&self, len: u64, align: u64, fit: FitPolicy) -> Option<(Block, u64)> {
        let block = |addr: u64, (l, c): (u64, u64)| Block {
            addr,
            len: l,
            chunk: c,
        };
        match fit {
            FitPolicy::BestFit => self.by_size.range((len, 0)..).find_map(|&(l, a)| {
                let f = block(a, (l, self.by_addr[&a].1));
                Self::fit(f, len, align).map(|s| (f, s))
            }),
            FitPolicy::FirstFit => self.by_addr.iter().find_map(|(&a, &v)| {
                let f = block(a, v);
                Self::fit(f, len, align).map(|s| (f, s))
            }),
        }
    }

    fn take(&mut self, len: u64, align: u64, fit: FitPolicy) -> Option<Block> {
        let (f, start) = self.find(len, align, fit)?;
        self.remove_raw(f.addr);
        if start > f.addr {
            self.insert_raw(Block {
                addr: f.addr,
                len: start - f.addr,
                chunk: f.chunk,
            });
        }
        let end = start + len;
        if end < f.addr + f.len {
            self.insert_raw(Block {
                addr: end,
                len: f.addr + f.len - end,
                chunk: f.chunk,
            });
        }
        Some(Block {
            addr: start,
            len,
            chunk: f.chunk,
        })
    }
}

/// Variable-size blocks: best fit (smallest block that fits, `O(log n)`) or first fit
/// (lowest address that fits, a scan in address order).
#[derive(Debug)]
pub struct CoalescingBlocks {
    fit: FitPolicy,
    /// Invariant: no list is empty (empty lists are removed), so `other_streams` is cheap.
    lists: BTreeMap<StreamId, FreeList>,
}

impl CoalescingBlocks {
    pub fn new(fit: FitPolicy) -> Self {
        CoalescingBlocks {
            fit,
            lists: BTreeMap::new(),
        }
    }
}

impl FreeBlocks for CoalescingBlocks {
    fn name(&self) -> &'static str {
        match self.fit {
            FitPolicy::BestFit => "variable-size best-fit",
            FitPolicy::FirstFit => "variable-size first-fit",
        }
    }

    fn serves(&self, _len: u64, _align: u64) -> bool {
        true
    }

    fn block_len(&self, len: u64) -> u64 {
        len
    }

    fn take(&mut self, stream: StreamId, len: u64, align: u64) -> Option<Block> {
        let list = self.lists.get_mut(&stream)?;
        let block = list.take(len, align, self.fit)?;
        if list.is_empty() {
            self.lists.remove(&stream);
        }
        Some(block)
    }

    fn other_streams(&self, stream: StreamId) -> Vec<StreamId> {
        self.lists
            .keys()
            .copied()
            .filter(|&s| s != stream)
            .collect()
    }

    fn merge(&mut self, from: StreamId, to: StreamId) {
        if from == to {
            return;
        }
        let Some(src) = self.lists.remove(&from) else {
            return;
        };
        let dst = self.lists.entry(to).or_default();
        for (addr, (len, chunk)) in src.by_addr {
            dst.insert(Block { addr, len, chunk });
        }
    }

    fn add_chunk(&mut self, stream: StreamId, addr: u64, len: u64) {
        self.lists.entry(stream).or_default().insert_raw(Block {
            addr,
            len,
            chunk: addr,
        });
    }

    fn give_back(&mut self, stream: StreamId, block: Block, chunk_len: u64) -> bool {
        let merged = self.lists.entry(stream).or_default().insert(block);
        merged.addr == block.chunk && merged.len == chunk_len
    }

    fn remove_chunk(&mut self, chunk: u64) {
        for list in self.lists.values_mut() {
            let starts: Vec<u64> = list
                .by_addr
                .range(chunk..)
                .take_while(|(_, &(_, c))| c == chunk)
                .map(|(&a, _)| a)
                .collect();
            for a in starts {
                list.remove_raw(a);
            }
        }
        self.lists.retain(|_, l| !l.is_empty());
    }

    fn clear(&mut self) {
        self.lists.clear();
    }

    fn free_extents(&self) -> Vec<FreeExtent> {
        let mut out: Vec<FreeExtent> = self
            .lists
            .iter()
            .flat_map(|(&stream, list)| {
                list.by_addr
                    .iter()
                    .map(move |(&addr, &(len, chunk))| FreeExtent {
                        addr,
                        len,
                        chunk,
                        stream,
                    })
            })
            .collect();
        out.sort_by_key(|e| e.addr);
        out
    }

    fn tiles_chunks_exactly(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S0: StreamId = StreamId(0);
    const S1: StreamId = StreamId(1);

    #[test]
    fn coalesces_within_a_chunk_only() {
        let mut b = CoalescingBlocks::new(FitPolicy::BestFit);
        b.add_chunk(S0, 0x1000, 0x1000);
        b.add_chunk(S0, 0x2000, 0x1000); // touches the first chunk but is separate
        let x = b.take(S0, 0x1000, 256).unwrap();
        let y = b.take(S0, 0x1000, 256).unwrap();
        assert_ne!(x.chunk, y.chunk);
        assert!(b.give_back(S0, x, 0x1000));
        assert!(b.give_back(S0, y, 0x1000));
        assert_eq!(
            b.free_extents().len(),
            2,
            "blocks of two chunks must stay apart"
        );
    }

    #[test]
    fn best_and_first_fit_choose_differently() {
        for (fit, expect) in [(FitPolicy::BestFit, 0x3100), (FitPolicy::FirstFit, 0x1000)] {
            let mut b = CoalescingBlocks::new(fit);
            b.add_chunk(S0, 0x1000, 0x4000);
            let blocks: Vec<Block> = [0x800, 0x100, 0x1700, 0x100, 0x200, 0x100]
                .iter()
                .map(|&l| b.take(S0, l, 256).unwrap())
                .collect();
            // Free a big hole at 0x1000 (0x800) and a small one at 0x3100 (0x200).
            b.give_back(S0, blocks[0], 0x4000);
            b.give_back(S0, blocks[4], 0x4000);
            assert_eq!(b.take(S0, 0x200, 256).unwrap().addr, expect, "{fit:?}");
        }
    }

    #[test]
    fn merge_coalesces_across_lists() {
        let mut b = CoalescingBlocks::new(FitPolicy::BestFit);
        b.add_chunk(S0, 0x1000, 0x1000);
        let x = b.take(S0, 0x800, 256).unwrap();
        assert!(
            !b.give_back(S1, x, 0x1000),
            "different lists do not coalesce"
        );
        assert_eq!(b.other_streams(S0), vec![S1]);
        b.merge(S1, S0);
        assert_eq!(
            b.free_extents(),
            vec![FreeExtent {
                addr: 0x1000,
                len: 0x1000,
                chunk: 0x1000,
                stream: S0
            }]
        );
    }

    #[test]
    fn extra_alignment_returns_the_padding() {
        let mut b = CoalescingBlocks::new(FitPolicy::BestFit);
        b.add_chunk(S0, 0x1100, 0x3000);
        let x = b.take(S0, 0x100, 0x1000).unwrap();
        assert_eq!(x.addr, 0x2000);
        let free: u64 = b.free_extents().iter().map(|e| e.len).sum();
        assert_eq!(free, 0x3000 - 0x100);
        assert!(b.give_back(S0, x, 0x3000));
    }
}
