//! `larson`: the Larson & Krishnan server benchmark. Each thread owns an array of object
//! slots and repeatedly replaces a random one (free the old object, allocate a new one of
//! random size); after each round the arrays move on to the next thread, as a server hands
//! connections between workers, so the first frees in each round are cross-thread.

use rand::rngs::SmallRng;
use rand::Rng;

use super::Emitter;

const SLOTS_PER_THREAD: usize = 256;
const MIN_SIZE_BYTES: u64 = 16;
const MAX_SIZE_BYTES: u64 = 1024;
const MEAN_GAP_NS: u64 = 80;

pub fn run(out: &mut Emitter<'_>, rng: &mut SmallRng, threads: u32) {
    // arrays[a] is held by thread (a + round) % threads.
    let mut arrays: Vec<Vec<Option<u64>>> = vec![vec![None; SLOTS_PER_THREAD]; threads as usize];
    let mut round = 0u32;
    'outer: loop {
        for _ in 0..SLOTS_PER_THREAD * threads as usize {
            if out.done() {
                break 'outer;
            }
            let a = rng.gen_range(0..threads) as usize;
            let t = (a as u32 + round) % threads;
            let i = rng.gen_range(0..SLOTS_PER_THREAD);
            out.advance(rng, MEAN_GAP_NS);
            match arrays[a][i].take() {
                Some(ptr) => out.free(t, ptr, None),
                None => {
                    let size = rng.gen_range(MIN_SIZE_BYTES..=MAX_SIZE_BYTES);
                    arrays[a][i] = Some(out.alloc(t, size, 0, None));
                }
            }
            if arrays[a][i].is_none() && !out.done() {
                let size = rng.gen_range(MIN_SIZE_BYTES..=MAX_SIZE_BYTES);
                out.advance(rng, MEAN_GAP_NS);
                arrays[a][i] = Some(out.alloc(t, size, 0, None));
            }
        }
        round = round.wrapping_add(1);
    }
    for (a, array) in arrays.into_iter().enumerate() {
        let t = (a as u32 + round) % threads;
        for ptr in array.into_iter().flatten() {
            out.advance(rng, MEAN_GAP_NS);
            out.free(t, ptr, None);
        }
    }
}
