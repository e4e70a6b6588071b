//! `size-mix`: request sizes drawn from a log-normal distribution (median 128 B, long
//! tail to 16 MiB), as measured in general-purpose programs; most objects die young
//! (freed within a few of the thread's next operations), a tenth live long; some buffers
//! grow by realloc.

use rand::rngs::SmallRng;
use rand::Rng;
use rand_distr::{Distribution, LogNormal};

use super::Emitter;

const MEDIAN_SIZE_BYTES: f64 = 128.0;
const SIZE_SIGMA: f64 = 1.6;
const MAX_SIZE_BYTES: u64 = 16 << 20;
const LONG_LIVED_FRACTION: f64 = 0.1;
const MEAN_GAP_NS: u64 = 60;

#[derive(Default, Clone)]
struct ThreadState {
    short_lived: Vec<(u64, u64)>,
    long_lived: Vec<u64>,
}

pub fn run(out: &mut Emitter<'_>, rng: &mut SmallRng, threads: u32) {
    let sizes = LogNormal::new(MEDIAN_SIZE_BYTES.ln(), SIZE_SIGMA)
        .expect("constant log-normal parameters are valid");
    let draw_size = |rng: &mut SmallRng| (sizes.sample(rng) as u64).clamp(1, MAX_SIZE_BYTES);
    let mut state = vec![ThreadState::default(); threads as usize];
    while !out.done() {
        let t = rng.gen_range(0..threads);
        let s = &mut state[t as usize];
        out.advance(rng, MEAN_GAP_NS);
        let roll: f64 = rng.gen();
        if s.short_lived.is_empty() || roll < 0.45 {
            let size = draw_size(rng);
            if rng.gen_bool(LONG_LIVED_FRACTION) {
                let align = if rng.gen_bool(0.2) { 64 } else { 0 };
                s.long_lived.push(out.alloc(t, size, align, None));
            } else {
                let ptr = out.alloc(t, size, 0, None);
                s.short_lived.push((ptr, size));
            }
        } else if roll < 0.90 {
            // Young objects die first: pick among the most recent few.
            let n = s.short_lived.len();
            let i = n - 1 - rng.gen_range(0..n.min(8));
            let (ptr, _) = s.short_lived.swap_remove(i);
            out.free(t, ptr, None);
        } else if roll < 0.97 {
            let i = rng.gen_range(0..s.short_lived.len());
            let (ptr, size) = s.short_lived[i];
            let grown = (size + size / 2 + 1).min(MAX_SIZE_BYTES);
            s.short_lived[i] = (out.realloc(t, ptr, grown), grown);
        } else if !s.long_lived.is_empty() {
            let i = rng.gen_range(0..s.long_lived.len());
            let ptr = s.long_lived.swap_remove(i);
            out.free(t, ptr, None);
        }
    }
    for (t, s) in state.into_iter().enumerate() {
        for (ptr, _) in s.short_lived.into_iter().rev() {
            out.advance(rng, MEAN_GAP_NS);
            out.free(t as u32, ptr, None);
        }
        for ptr in s.long_lived.into_iter().rev() {
            out.advance(rng, MEAN_GAP_NS);
            out.free(t as u32, ptr, None);
        }
    }
}
