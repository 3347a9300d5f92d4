"""Resident memory and start-up time: idle, and with 1,000,000 jobs queued.

    .venv/bin/python benchmarks/memory.py [--jobs 1000000]

Baseline (same run): a bare aiohttp app in the same interpreter. The daemon runs as
``zalo-bridge run``; for the loaded case the store is first filled with queued send jobs while
Zalo is unreachable (so they stay queued), the way a backlog builds during an outage.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import free_port  # noqa: E402

BARE = """
import sys
from aiohttp import web
app = web.Application()
app.router.add_get("/healthz", lambda r: web.json_response({"ok": True}))
print("ready", flush=True)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""



def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def wait_healthy(port: int, timeout: float = 120) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return time.monotonic() - start
        except OSError:
            time.sleep(0.02)
    raise TimeoutError


def fill(db: str, n: int) -> None:
    from daemon.store import _SCHEMA

    conn = sqlite3.connect(db)
    conn.executescript(_SCHEMA)
    conn.execute("PRAGMA journal_mode=WAL")
    now = time.time()
    payload = b'{"campaign_id":"9001","user_id":"4000000000000000017","ref":{"identity":"4000000000000000017"},"spec":{"type":"text","text":"Xin chao"}}'
    rows = ((("zalo_send", "ready", payload, f"ct:9001:{i}:x", 0, now, now, now)) for i in range(n))
    conn.executemany("INSERT INTO jobs (kind, state, payload, dedupe_key, attempts, next_at, created_at, updated_at)"
                     " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    conn.commit()
    conn.close()


def daemon(cfg: Path, port: int, env: dict[str, str]) -> tuple[float, float, float]:
    p = subprocess.Popen([sys.executable, "-m", "daemon", "run", "--config", str(cfg)], cwd=ROOT, env=env,
                         stdout=subprocess.DEVNULL)
    try:
        startup = wait_healthy(port)
        time.sleep(3)
        idle = rss_mb(p.pid)
        for path in ("/readyz", "/metrics"):  # count the queue (a full scan of the job index)
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30).read()
            except OSError:
                pass
        time.sleep(2)
        after = rss_mb(p.pid)
    finally:
        p.terminate()
        p.wait(60)
    return startup, idle, after if after else idle


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=1_000_000)
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory()
    port = free_port()
    bare = subprocess.Popen([sys.executable, "-c", BARE, str(port)], stdout=subprocess.PIPE)
    bare.stdout.readline()
    wait_healthy(port)
    time.sleep(1)
    bare_rss = rss_mb(bare.pid)
    bare.terminate()
    bare.wait()
    db = f"{tmp.name}/m.db"
    cfg = Path(tmp.name) / "m.toml"
    cfg.write_text(f"""
[server]
port = {port}
[store]
path = "{db}"
[log]
level = "warning"
[zalo]
app_id = "1"
oa_id = "2"
api_base = "http://127.0.0.1:9"
oauth_base = "http://127.0.0.1:9"
[clevertap]
api_base = "http://127.0.0.1:9"
[backfill]
enabled = false
""")
    env = {**os.environ, "ZALO_APP_SECRET": "a", "ZALO_OA_SECRET_KEY": "b", "ZALO_REFRESH_TOKEN": "c",
           "CLEVERTAP_ACCOUNT_ID": "d", "CLEVERTAP_PASSCODE": "e", "CLEVERTAP_WEBHOOK_USER": "f",
           "CLEVERTAP_WEBHOOK_PASSWORD": "g"}
    s_empty, idle_empty, after_empty = daemon(cfg, port, env)
    t = time.monotonic()
    fill(db, args.jobs)
    fill_s = time.monotonic() - t
    s_full, idle_full, after_full = daemon(cfg, port, env)
    size = sum(f.stat().st_size for f in Path(tmp.name).glob("m.db*")) / 1e6
    tmp.cleanup()
    print(f"bare aiohttp app (baseline): RSS {bare_rss:.1f} MB")
    print(f"daemon, empty store        : start-up {s_empty * 1000:.0f} ms to /healthz, RSS idle {idle_empty:.1f} MB "
          f"({idle_empty / bare_rss:.2f}x baseline), after /readyz+/metrics {after_empty:.1f} MB")
    print(f"daemon, {args.jobs:,} jobs queued : start-up {s_full * 1000:.0f} ms, RSS {idle_full:.1f} MB "
          f"({idle_full / bare_rss:.2f}x baseline), after /readyz+/metrics {after_full:.1f} MB "
          f"(store {size:.0f} MB on disk, filled in {fill_s:.1f}s)")


if __name__ == "__main__":
    main()
