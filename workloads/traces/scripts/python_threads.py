"""Multi-threaded Python: a producer feeds four workers through a queue.Queue; each worker
builds dicts and lists, serialises them with json and keeps a bounded per-thread cache, so
blocks are allocated on one thread and often freed on another.

Recorded with: replay record -o workloads/traces/python-threads.csv.zst -- python3 workloads/traces/scripts/python_threads.py
"""
import json
import queue
import threading

WORKERS = 4
ITEMS = 8000
jobs = queue.Queue(maxsize=64)
results = queue.Queue()


def worker(n):
    cache = {}
    while True:
        item = jobs.get()
        if item is None:
            break
        doc = {"item": item, "words": [w * (item["id"] % 5 + 1) for w in item["text"].split()]}
        encoded = json.dumps(doc)
        cache[item["id"] % 50] = json.loads(encoded)
        results.put((n, len(encoded)))


threads = [threading.Thread(target=worker, args=(n,)) for n in range(WORKERS)]
for t in threads:
    t.start()
for i in range(ITEMS):
    jobs.put({"id": i, "text": " ".join("w%d" % (j * i % 97) for j in range(12))})
for _ in threads:
    jobs.put(None)
for t in threads:
    t.join()
total = 0
while not results.empty():
    total += results.get()[1]
print(total)
