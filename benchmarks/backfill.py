"""Follower backfill of a 120,000-follower OA: wall time against the rate budget, peak memory.

    .venv/bin/python benchmarks/backfill.py [--followers 120000] [--rate 200]

Runs the real ``zalo-bridge backfill --once`` as a subprocess against the simulators (which run
in this process). Baseline: the time the rate limit allows for the Zalo calls the pass made
(calls / rate); the pass should take at most 1.05x that. Peak memory is the subprocess's
maximum RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import daemon_env, write_sim_config  # noqa: E402
from daemon.sim import CleverTapSim, ZaloSim, serve  # noqa: E402


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--followers", type=int, default=120_000)
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--days", type=float, default=365.0, help="spread of last interactions")
    args = ap.parse_args()
    zsim, csim = ZaloSim(), CleverTapSim()
    zsim.add_users(args.followers, spread_days=args.days)
    z_runner, z_url = await serve(zsim.app())
    c_runner, c_url = await serve(csim.app())
    tmp = tempfile.TemporaryDirectory()
    cfg = write_sim_config(Path(tmp.name) / "c.toml", f"{tmp.name}/b.db", zsim, z_url, c_url,
                           zalo={"requests_per_second": args.rate})
    env = daemon_env(zsim, csim)
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "daemon", "backfill", "--once", "--config", str(cfg),
                                                cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    wall = time.monotonic() - started
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    await z_runner.cleanup()
    await c_runner.cleanup()
    tmp.cleanup()
    summary = orjson.loads(out[out.index(b"{"):])
    calls = len(zsim.list_calls)
    minimum = -(-args.followers // 50)
    budget = calls / args.rate
    uploads = Counter(r["identity"] for r in csim.profile_updates)
    print(f"followers {args.followers} over {args.days:.0f} days, rate {args.rate:.0f}/s, exit code {proc.returncode}")
    print(f"slices {summary['slices']}, getlist calls {calls} (minimum {minimum}, {calls / minimum:.3f}x), max offset "
          f"{max(c.get('offset', 0) for c in zsim.list_calls)}")
    print(f"pass time {summary['seconds']:.1f}s vs rate budget {budget:.1f}s = {summary['seconds'] / budget:.3f}x "
          f"(process wall time incl. start-up and final upload {wall:.1f}s)")
    print(f"uploaded {len(uploads)} profiles, duplicates {sum(n - 1 for n in uploads.values())}, "
          f"/1/upload calls {sum(1 for c in csim.calls if c.get('records'))} (limit ceil(N/1000)+1 = {-(-args.followers // 1000) + 1})")
    print(f"peak RSS of the backfill process: {peak_kb / 1024:.1f} MB")


if __name__ == "__main__":
    asyncio.run(main())
