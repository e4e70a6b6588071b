"""Make workloads/traces/pytorch-sample.pickle.gz from the real PyTorch snapshot
../shared/traces/pytorch/gpt_train.pickle.gz: the entries a recorder with
max_entries=2500 would have kept had the snapshot been taken at entry 5,000, with the
`segments` list rebuilt for the allocator's state at that point.

Usage (from the workspace root):
    python3 workloads/traces/scripts/make_pytorch_sample.py [SRC] [OUT]

The source is read with an unpickler that refuses every import, so nothing in it runs.
"""

import gzip
import pickle
import sys

FIRST, END = 2500, 5000
SRC = sys.argv[1] if len(sys.argv) > 1 else "../shared/traces/pytorch/gpt_train.pickle.gz"
OUT = sys.argv[2] if len(sys.argv) > 2 else "workloads/traces/pytorch-sample.pickle.gz"


class PlainData(pickle.Unpickler):
    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refusing to import {module}.{name}")


with gzip.open(SRC, "rb") as f:
    snap = PlainData(f).load()
trace = snap["device_traces"][0]

segments = {}  # address -> (size, stream)
live = {}  # address -> [size, stream, free requested?]
for e in trace[:END]:
    a = e["action"]
    if a == "segment_alloc":
        segments[e["addr"]] = (e["size"], e["stream"])
    elif a == "segment_free":
        segments.pop(e["addr"], None)
    elif a == "alloc":
        live[e["addr"]] = [e["size"], e["stream"], False]
    elif a == "free_requested":
        live[e["addr"]][2] = True
    elif a == "free_completed":
        del live[e["addr"]]


def round_up(n, to=512):
    return (n + to - 1) // to * to


out_segments = []
for addr, (total, stream) in sorted(segments.items()):
    blocks, cursor = [], addr
    for b in sorted(x for x in live if addr <= x < addr + total):
        size, _, requested = live[b]
        if b > cursor:
            blocks.append(dict(address=cursor, size=b - cursor, requested_size=0,
                               state="inactive", frames=[]))
        rounded = min(round_up(size), addr + total - b)
        blocks.append(dict(address=b, size=rounded, requested_size=size,
                           state="active_pending_free" if requested else "active_allocated",
                           frames=[]))
        cursor = b + rounded
    if cursor < addr + total:
        blocks.append(dict(address=cursor, size=addr + total - cursor, requested_size=0,
                           state="inactive", frames=[]))
    active = sum(b["size"] for b in blocks if b["state"] != "inactive")
    out_segments.append(dict(
        device=0, address=addr, total_size=total, allocated_size=active,
        active_size=active,
        requested_size=sum(b["requested_size"] for b in blocks),
        stream=stream, segment_type="small" if total <= 2 << 20 else "large",
        segment_pool_id=(0, 0), is_expandable=False, frames=[], blocks=blocks))

sample = dict(
    segments=out_segments,
    device_traces=[trace[FIRST:END]],
    allocator_settings=snap["allocator_settings"],
    external_annotations=[],
)
with gzip.GzipFile(OUT, "wb", mtime=0) as f:
    pickle.dump(sample, f, protocol=4)
print(f"{OUT}: {END - FIRST} entries, {len(out_segments)} segments, {len(live)} live blocks")
