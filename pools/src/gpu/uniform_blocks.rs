//! The fixed-size strategy of a `GpuPool`: uniform blocks carved from chunks, one stack of
//! free block addresses per stream (RMM's `fixed_size_memory_resource`, stream-ordered).
//!
//! Allocation and free are a pop and a push. Blocks never merge; requests larger than the
//! block (or more aligned than the pool) take the pool's large-object path.

use super::blocks::{align_up, Block, FreeBlocks, FreeExtent};
use super::StreamId;
use std::collections::{BTreeMap, HashMap};

#[derive(Debug)]
pub struct FixedBlocks {
    block_bytes: u64,
    align: u64,
    /// Free block addresses per stream; popped from the end. Invariant: no stack is empty
    /// (empty stacks are removed).
    stacks: BTreeMap<StreamId, Vec<(u64, u64)>>,
    /// chunk start -> (blocks in the chunk, blocks free now).
    chunks: HashMap<u64, (u64, u64)>,
}

impl FixedBlocks {
    /// Blocks of `block_bytes` (a multiple of `align`) aligned to `align`.
    pub fn new(block_bytes: u64, align: u64) -> Self {
        FixedBlocks {
            block_bytes,
            align,
            stacks: BTreeMap::new(),
            chunks: HashMap::new(),
        }
    }
}

impl FreeBlocks for FixedBlocks {
    fn name(&self) -> &'static str {
        "fixed-size"
    }

    fn serves(&self, len: u64, align: u64) -> bool {
        len <= self.block_bytes && align <= self.align
    }

    fn block_len(&self, _len: u64) -> u64 {
        self.block_bytes
    }

    fn take(&mut self, stream: StreamId, _len: u64, _align: u64) -> Option<Block> {
        let stack = self.stacks.get_mut(&stream)?;
        let (addr, chunk) = stack.pop()?;
        if stack.is_empty() {
            self.stacks.remove(&stream);
        }
        if let Some(c) = self.chunks.get_mut(&chunk) {
            c.1 -= 1;
        }
        Some(Block {
            addr,
            len: self.block_bytes,
            chunk,
        })
    }

    fn other_streams(&self, stream: StreamId) -> Vec<StreamId> {
        self.stacks
            .keys()
            .copied()
            .filter(|&s| s != stream)
            .collect()
    }

    fn merge(&mut self, from: StreamId, to: StreamId) {
        if from == to {
            return;
        }
        if let Some(mut src) = self.stacks.remove(&from) {
            self.stacks.entry(to).or_default().append(&mut src);
        }
    }

    fn add_chunk(&mut self, stream: StreamId, addr: u64, len: u64) {
        let first = align_up(addr, self.align).unwrap_or(u64::MAX);
        let count = (addr + len).saturating_sub(first) / self.block_bytes;
        if count == 0 {
            return;
        }
        let stack = self.stacks.entry(stream).or_default();
        // Pushed high to low so that the lowest address is handed out first.
        stack.extend(
            (0..count)
                .rev()
                .map(|i| (first + i * self.block_bytes, addr)),
        );
        self.chunks.insert(addr, (count, count));
    }

    fn give_back(&mut self, stream: StreamId, block: Block, _chunk_len: u64) -> bool {
        self.stacks
            .entry(stream)
            .or_default()
            .push((block.addr, block.chunk));
        match self.chunks.get_mut(&block.chunk) {
            Some(c) => {
                c.1 += 1;
                // Blocks of an entirely free chunk may sit in several streams' stacks; the
                // pool only returns it when they are all in this one.
                c.0 == c.1
                    && self.stacks[&stream]
                        .iter()
                        .filter(|&&(_, ch)| ch == block.chunk)
                        .count() as u64
                        == c.0
            }
            None => false,
        }
    }

    fn remove_chunk(&mut self, chunk: u64) {
        for stack in self.stacks.values_mut() {
            stack.retain(|&(_, c)| c != chunk);
        }
        self.stacks.retain(|_, s| !s.is_empty());
        self.chunks.remove(&chunk);
    }

    fn clear(&mut self) {
        self.stacks.clear();
        self.chunks.clear();
    }

    fn free_extents(&self) -> Vec<FreeExtent> {
        let mut blocks: Vec<(u64, u64, StreamId)> = self
            .stacks
            .iter()
            .flat_map(|(&s, stack)| stack.iter().map(move |&(a, c)| (a, c, s)))
            .collect();
        blocks.sort_unstable();
        let mut out: Vec<FreeExtent> = Vec::new();
        for (addr, chunk, stream) in blocks {
            match out.last_mut() {
                Some(e) if e.chunk == chunk && e.stream == stream && e.addr + e.len == addr => {
                    e.len += self.block_bytes
                }
                _ => out.push(FreeExtent {
                    addr,
                    len: self.block_bytes,
                    chunk,
                    stream,
                }),
            }
        }
        out
    }

    fn tiles_chunks_exactly(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pop_push_and_chunk_emptiness() {
        let mut f = FixedBlocks::new(512, 256);
        f.add_chunk(StreamId(0), 0x1000, 0x1000 + 100);
        let a = f.take(StreamId(0), 100, 256).unwrap();
        assert_eq!(a.addr, 0x1000, "lowest address first");
        let b = f.take(StreamId(0), 512, 256).unwrap();
        assert_eq!(b.addr, 0x1200);
        assert!(!f.give_back(StreamId(1), a, 0x1064));
        assert!(
            !f.give_back(StreamId(0), b, 0x1064),
            "a block of the chunk is still in stream 1's stack"
        );
        f.merge(StreamId(1), StreamId(0));
        assert_eq!(f.free_extents().len(), 1);
        assert_eq!(
            f.free_extents()[0].len,
            0x1000,
            "the 100-byte tail holds no block"
        );
        assert!(!f.serves(513, 256));
        assert!(!f.serves(64, 512));
    }
}
