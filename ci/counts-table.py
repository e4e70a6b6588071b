#!/usr/bin/env python3
"""Print the counts tier of a results file (ci/baseline.json by default) as markdown tables,
one per trace: instructions per op kind, misses per op and estimated cycles per op."""
import json
import sys

path = sys.argv[1] if len(sys.argv) > 1 else "ci/baseline.json"
results = json.load(open(path))
for trace in results["traces"]:
    name = trace["path"].rsplit("/", 1)[-1]
    print(f"{name} ({trace['events']:,} events, {trace['threads']} threads)\n")
    print("| backend | instr/alloc | instr/free | instr/realloc | L1 misses/op | LL misses/op | est. cycles/op |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in trace["results"]:
        c = r.get("counts")
        if not c:
            continue
        ops = [c[k] for k in ("alloc", "free", "realloc")]
        calls = sum(o["calls"] for o in ops) or 1
        l1 = sum(o["l1_misses"] for o in ops) / calls
        ll = sum(o["ll_misses"] for o in ops) / calls
        cycles = sum(o["estimated_cycles"] for o in ops) / calls
        per = [f"{o['instructions_per_op']:.1f}" if o["calls"] else "-" for o in ops]
        print(f"| {r['backend']} | {per[0]} | {per[1]} | {per[2]} | {l1:.2f} | {ll:.3f} | {cycles:.1f} |")
    print()
