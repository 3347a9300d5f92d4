"""Enqueue throughput: grouped commits vs one commit per enqueue, same run, same disk.

    .venv/bin/python benchmarks/store.py [--writers 32] [--jobs 4000] [--rounds 3]

Both variants use the daemon's Store (WAL, synchronous=FULL); the baseline sets max_group=1,
so every enqueue is its own transaction and fsync. Rounds alternate (A B A B ...) so that
machine noise hits both; the ratio is computed per round and the median is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from daemon.store import Store  # noqa: E402


async def run(max_group: int, writers: int, jobs: int, directory: str) -> float:
    path = str(Path(directory) / f"bench-{max_group}-{time.monotonic_ns()}.db")
    store = await Store.open(path, max_group=max_group)
    per_writer = jobs // writers
    payload = {"event": {"event_name": "user_send_text", "sender": {"id": "4339761418830368433"}, "message": {"text": "x" * 60}}}

    async def writer(w: int) -> None:
        for i in range(per_writer):
            await store.enqueue("zalo_event", payload, dedupe_key=f"k:{w}:{i}", dedupe_window_s=86400)

    started = time.perf_counter()
    await asyncio.gather(*(writer(w) for w in range(writers)))
    elapsed = time.perf_counter() - started
    commits = store.commits
    await store.close()
    print(f"  max_group={max_group:<4} {per_writer * writers / elapsed:9.0f} enqueues/s  ({commits} commits)", flush=True)
    return per_writer * writers / elapsed


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--writers", type=int, default=32)
    ap.add_argument("--jobs", type=int, default=4000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", default=None, help="directory for the database files (default: a temp dir on /tmp's disk)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        grouped, single, ratios = [], [], []
        for r in range(args.rounds):
            print(f"round {r + 1}")
            s = await run(1, args.writers, args.jobs // 4, d)  # the baseline is slow: fewer jobs
            g = await run(512, args.writers, args.jobs, d)
            single.append(s)
            grouped.append(g)
            ratios.append(g / s)
    print(f"\n{args.writers} concurrent writers, synchronous=FULL, WAL")
    print(f"one commit per enqueue : {statistics.median(single):9.0f} enqueues/s (median of {args.rounds})")
    print(f"grouped commits        : {statistics.median(grouped):9.0f} enqueues/s (median of {args.rounds})")
    print(f"ratio grouped/single   : {statistics.median(ratios):9.1f}x (median of per-round ratios)")


if __name__ == "__main__":
    asyncio.run(main())
