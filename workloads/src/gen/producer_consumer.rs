//! `producer-consumer`: the first half of the threads allocate messages and queue them;
//! the other half take them in FIFO order and free them, so every free is cross-thread
//! (with one thread, it plays both parts).

use std::collections::VecDeque;

use rand::rngs::SmallRng;
use rand::Rng;

use super::Emitter;

const QUEUE_CAPACITY: usize = 1024;
const MEAN_GAP_NS: u64 = 100;

pub fn run(out: &mut Emitter<'_>, rng: &mut SmallRng, threads: u32) {
    let producers = (threads / 2).max(1);
    let consumer = |rng: &mut SmallRng| {
        if threads == 1 {
            0
        } else {
            rng.gen_range(producers..threads)
        }
    };
    let mut queue: VecDeque<u64> = VecDeque::new();
    while !out.done() {
        out.advance(rng, MEAN_GAP_NS);
        let produce = queue.is_empty() || (queue.len() < QUEUE_CAPACITY && rng.gen_bool(0.5));
        if produce {
            let t = rng.gen_range(0..producers);
            // Message sizes: powers of two 32 B .. 8 KiB plus a small payload tail.
            let size = (32u64 << rng.gen_range(0..9)) + rng.gen_range(0..32);
            queue.push_back(out.alloc(t, size, 0, None));
        } else if let Some(ptr) = queue.pop_front() {
            let t = consumer(rng);
            out.free(t, ptr, None);
        }
    }
    while let Some(ptr) = queue.pop_front() {
        out.advance(rng, MEAN_GAP_NS);
        let t = consumer(rng);
        out.free(t, ptr, None);
    }
}
