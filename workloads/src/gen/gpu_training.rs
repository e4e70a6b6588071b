//! `gpu-training`: the allocation pattern of a transformer training loop on one device.
//!
//! - Weights and optimizer state (two moments per weight) are allocated once, up front.
//! - Each iteration: a data-loader thread allocates the input batch on the copy stream;
//!   the forward pass allocates one activation per layer (plus a short-lived cuBLAS-style
//!   workspace); the backward pass walks the layers in reverse, allocating a gradient and
//!   freeing the layer's activation; the optimizer step frees the gradients; the training
//!   thread frees the input batch (a cross-thread free when there is a loader thread).
//! - With three or more threads a communication thread all-reduces gradient buckets on
//!   its own stream.
//!
//! Sizes are tensor-like: fp16 elements, multiples of 512 bytes, 256-byte aligned, from a
//! few MiB (per-layer weights) to about a GiB (logits of a large batch).

use rand::rngs::SmallRng;
use rand::Rng;

use super::Emitter;

const COMPUTE_STREAM: u64 = 0x1;
const COPY_STREAM: u64 = 0x2;
const COMM_STREAM: u64 = 0x3;
const ALIGN_BYTES: u64 = 256;
const ELEMENT_BYTES: u64 = 2;
const WORKSPACE_BYTES: u64 = 32 << 20;
/// Kernel time between allocator calls.
const MEAN_KERNEL_NS: u64 = 200_000;
const TRAIN: u32 = 0;

fn round_up(bytes: u64) -> u64 {
    bytes.div_ceil(512) * 512
}

pub fn run(out: &mut Emitter<'_>, rng: &mut SmallRng, threads: u32) {
    let layers: usize = rng.gen_range(12..=32);
    let hidden: u64 = [1024, 2048, 4096][rng.gen_range(0..3)];
    let tokens: u64 = [2048, 4096, 8192][rng.gen_range(0..3)];
    let vocab: u64 = rng.gen_range(32_000..=64_000);
    let loader = if threads >= 2 { 1 } else { TRAIN };
    let comm = if threads >= 3 { Some(2) } else { None };

    let weight_bytes = round_up(hidden * hidden * 4 * ELEMENT_BYTES);
    let activation_bytes = round_up(tokens * hidden * ELEMENT_BYTES * 4);
    let logits_bytes = round_up(tokens * vocab * ELEMENT_BYTES);

    // Weights and optimizer state, allocated once; freed in reverse at the end.
    let mut persistent = Vec::new();
    for _ in 0..layers {
        for _ in 0..3 {
            if out.done() {
                break;
            }
            out.advance(rng, 1_000);
            persistent.push(out.alloc(TRAIN, weight_bytes, ALIGN_BYTES, Some(COMPUTE_STREAM)));
        }
    }

    let mut wave: Vec<(u32, u64, u64)> = Vec::new();
    'train: while !out.done() {
        out.advance(rng, MEAN_KERNEL_NS);
        let batch_bytes = round_up(tokens * ELEMENT_BYTES * 2);
        let batch = out.alloc(loader, batch_bytes, ALIGN_BYTES, Some(COPY_STREAM));
        wave.push((TRAIN, batch, COMPUTE_STREAM));

        // Forward: activations stay live until their layer's backward step.
        let mut activations = Vec::with_capacity(layers + 1);
        for _ in 0..layers {
            if out.done() {
                break 'train;
            }
            out.advance(rng, MEAN_KERNEL_NS);
            let ws = out.alloc(TRAIN, WORKSPACE_BYTES, ALIGN_BYTES, Some(COMPUTE_STREAM));
            out.advance(rng, MEAN_KERNEL_NS);
            let a = out.alloc(TRAIN, activation_bytes, ALIGN_BYTES, Some(COMPUTE_STREAM));
            activations.push(a);
            wave.push((TRAIN, a, COMPUTE_STREAM));
            out.free(TRAIN, ws, Some(COMPUTE_STREAM));
        }
        if out.done() {
            break;
        }
        out.advance(rng, MEAN_KERNEL_NS);
        let logits = out.alloc(TRAIN, logits_bytes, ALIGN_BYTES, Some(COMPUTE_STREAM));
        out.advance(rng, MEAN_KERNEL_NS);
        out.free(TRAIN, logits, Some(COMPUTE_STREAM));

        // Backward: reverse layer order; gradients live until the optimizer step.
        let mut gradients = Vec::with_capacity(layers);
        for a in activations.into_iter().rev() {
            if out.done() {
                break 'train;
            }
            out.advance(rng, MEAN_KERNEL_NS);
            let g = out.alloc(TRAIN, weight_bytes, ALIGN_BYTES, Some(COMPUTE_STREAM));
            gradients.push(g);
            wave.push((TRAIN, g, COMPUTE_STREAM));
            out.free(TRAIN, a, Some(COMPUTE_STREAM));
            wave.retain(|&(_, p, _)| p != a);
            if let Some(c) = comm {
                // All-reduce bucket for this gradient, on the communication stream.
                out.advance(rng, MEAN_KERNEL_NS / 4);
                let bucket = out.alloc(c, weight_bytes, ALIGN_BYTES, Some(COMM_STREAM));
                out.advance(rng, MEAN_KERNEL_NS / 4);
                out.free(c, bucket, Some(COMM_STREAM));
            }
        }
        // Optimizer step, then the batch is done.
        for g in gradients {
            out.advance(rng, MEAN_KERNEL_NS / 8);
            out.free(TRAIN, g, Some(COMPUTE_STREAM));
        }
        out.free(TRAIN, batch, Some(COMPUTE_STREAM));
        wave.clear();
    }
    // Budget reached mid-iteration: free what the wave holds, newest first, then weights.
    for (t, ptr, stream) in wave.into_iter().rev() {
        out.advance(rng, MEAN_KERNEL_NS / 8);
        out.free(t, ptr, Some(stream));
    }
    for ptr in persistent.into_iter().rev() {
        out.advance(rng, 1_000);
        out.free(TRAIN, ptr, Some(COMPUTE_STREAM));
    }
}
