//! `fixed-churn`: one request size; each thread keeps up to `WINDOW` blocks live and
//! randomly allocates or frees its own blocks. The best case for a fixed-size pool.

use rand::rngs::SmallRng;
use rand::Rng;

use super::Emitter;

const SIZE_BYTES: u64 = 64;
const WINDOW: usize = 64;
const MEAN_GAP_NS: u64 = 50;

pub fn run(out: &mut Emitter<'_>, rng: &mut SmallRng, threads: u32) {
    let mut live: Vec<Vec<u64>> = vec![Vec::new(); threads as usize];
    while !out.done() {
        let t = rng.gen_range(0..threads);
        let blocks = &mut live[t as usize];
        out.advance(rng, MEAN_GAP_NS);
        if blocks.is_empty() || (blocks.len() < WINDOW && rng.gen_bool(0.5)) {
            blocks.push(out.alloc(t, SIZE_BYTES, 0, None));
        } else {
            let i = rng.gen_range(0..blocks.len());
            let ptr = blocks.swap_remove(i);
            out.free(t, ptr, None);
        }
    }
    for (t, blocks) in live.into_iter().enumerate() {
        for ptr in blocks {
            out.advance(rng, MEAN_GAP_NS);
            out.free(t as u32, ptr, None);
        }
    }
}
