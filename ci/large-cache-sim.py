#!/usr/bin/env python3
"""Model of the pools' large-object cache (docs/performance.md, seventh round): replay a
canonical CSV trace's large allocations (32 KiB and up) against a cache of freed chunks and
count hits and misses (a miss is an mmap).

The policy modelled is the segment heap's: a chunk serves a request it fits within 2x and
within 25% or a segment unused (`alloc::large_reuse_fits`), the cache holds at most
max(2 segments, live large bytes / FRAC) in SLOTS slots (`alloc::large_cache_limit`), and
the oldest chunk makes room for the newest.

Usage: replay convert TRACE -o trace.csv; python3 ci/large-cache-sim.py trace.csv
"""
import sys

SEGMENT = 4 << 20
HEADER = 512
PAGE = 4096


def simulate(path, slots=32, frac=4):
    live, live_bytes, cache, clock, hits, misses = {}, 0, [], 0, 0, 0
    with open(path) as f:
        next(f)
        for line in f:
            fields = line.rstrip("\n").split(",")
            op, ptr = fields[2], fields[3]
            if op == "alloc":
                size = int(fields[4])
                if size < 32768:
                    continue
                want = size + HEADER
                fits = [
                    (length, i)
                    for i, (length, _) in enumerate(cache)
                    if want <= length <= 2 * want and length - want <= max(want // 4, SEGMENT)
                ]
                if fits:
                    length, i = min(fits)
                    cache.pop(i)
                    hits += 1
                else:
                    length = (want + PAGE - 1) // PAGE * PAGE
                    misses += 1
                live[ptr] = length
                live_bytes += length
            elif op == "free" and ptr in live:
                length = live.pop(ptr)
                live_bytes -= length
                limit = max(2 * SEGMENT, live_bytes // frac)
                if length > limit:
                    continue
                clock += 1
                while len(cache) >= slots or sum(c for c, _ in cache) + length > limit:
                    cache.remove(min(cache, key=lambda c: c[1]))
                cache.append((length, clock))
    return hits, misses


if __name__ == "__main__":
    for slots, frac in [(32, 4), (32, 2), (128, 1)]:
        hits, misses = simulate(sys.argv[1], slots, frac)
        print(f"slots {slots:3}, bytes <= live/{frac}: {hits} hits, {misses} misses")
