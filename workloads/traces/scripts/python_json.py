"""JSON and dict churn on one thread: build records, serialise, parse, merge, discard.

Recorded with: replay record -o workloads/traces/python-json.csv -- python3 workloads/traces/scripts/python_json.py
"""
import json
import random

random.seed(7)
ROUNDS = 340

totals = {}
for round_no in range(ROUNDS):
    records = [
        {
            "id": i,
            "name": "user-%d-%d" % (round_no, i),
            "tags": ["t%d" % (i % 7), "r%d" % (round_no % 5)],
            "score": random.random(),
        }
        for i in range(40)
    ]
    text = json.dumps(records)
    for rec in json.loads(text):
        key = rec["tags"][0]
        totals[key] = totals.get(key, 0.0) + rec["score"]
    if round_no % 10 == 9:
        totals = {k: round(v, 3) for k, v in totals.items()}
print(len(totals))
