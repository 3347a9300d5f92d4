"""Zalo webhook ingest: the daemon (durable acks) against a bare aiohttp app that only parses JSON.

    .venv/bin/python benchmarks/ingest.py [--seconds 10] [--connections 64] [--rounds 2]

Both servers run as their own processes and get the same load: pre-signed, unique events
(so the daemon really stores each one) from wrk (Debian's package, if installed) or else an
aiohttp load generator, on the other core. Rounds alternate (bare, daemon, bare, daemon).
Reported: requests/s of each, the ratio daemon/bare, the daemon's p99 ack latency, and the
CleverTap /1/upload calls per 1000 events once everything was uploaded.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import daemon_env, free_port, write_sim_config  # noqa: E402
from daemon.sim import CleverTapSim, ZaloSim, serve  # noqa: E402

BARE_APP = """
import sys, orjson
from aiohttp import web
async def handle(request):
    orjson.loads(await request.read())
    return web.Response(body=b'{"ok":true}', content_type="application/json")
app = web.Application()
app.router.add_post("/webhooks/zalo", handle)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""

WRK_LUA = """
local reqs = {}
local i = 0
init = function(args)
  for line in io.lines(args[1]) do
    local sig, body = line:match("^([^\\t]+)\\t(.*)$")
    reqs[#reqs + 1] = wrk.format("POST", "/webhooks/zalo",
      {["Content-Type"] = "application/json", ["X-ZEvent-Signature"] = sig}, body)
  end
end
request = function()
  i = i + 1
  return reqs[((i - 1) % #reqs) + 1]
end
"""



def make_requests(zsim: ZaloSim, n: int, users: int, path: Path, start: int) -> None:
    with path.open("w") as f:
        for i in range(start, start + n):
            uid = str(6000000000000000000 + i % users)
            body = zsim.event("user_send_text", uid, msg_id=f"bench-{i}", text="Xin chào, tôi muốn hỏi giá sản phẩm")
            raw = orjson.dumps(body)
            f.write(f"{zsim.sign(raw, body)}\t{raw.decode()}\n")


async def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while True:
            try:
                async with s.get(url) as r:
                    if r.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(url)
            await asyncio.sleep(0.1)


def run_wrk(url: str, reqfile: Path, seconds: int, connections: int, tmp: Path) -> tuple[float, float]:
    lua = tmp / "zalo.lua"
    lua.write_text(WRK_LUA)
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(lua), url, "--", str(reqfile)],
                         capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))
    m = re.search(r"99%\s+([0-9.]+)(us|ms|s)", out)
    p99 = float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise RuntimeError(f"{non2xx.group(1)} non-2xx answers:\n{out}")
    return rps, p99


GEN = """
import asyncio, sys, time, aiohttp
async def main(url, path, seconds, conns):
    lines = [l.rstrip("\\n").split("\\t", 1) for l in open(path)]
    lat, idx, stop = [], [0], time.monotonic() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=conns)) as s:
        async def worker():
            while time.monotonic() < stop:
                sig, body = lines[idx[0] % len(lines)]; idx[0] += 1
                t = time.perf_counter()
                async with s.post(url + "/webhooks/zalo", data=body.encode(), headers={"Content-Type": "application/json", "X-ZEvent-Signature": sig}) as r:
                    await r.read()
                    assert r.status == 200, r.status
                lat.append(time.perf_counter() - t)
        t0 = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(conns)))
        el = time.monotonic() - t0
    lat.sort()
    print(len(lat) / el, lat[int(len(lat) * 0.99)] * 1000)
asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])))
"""


def run_python_load(url: str, reqfile: Path, seconds: int, connections: int) -> tuple[float, float]:
    out = subprocess.run([sys.executable, "-c", GEN, url, str(reqfile), str(seconds), str(connections)],
                         capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]), float(out[1])


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--users", type=int, default=1000, help="distinct Zalo users sending the events")
    args = ap.parse_args()
    use_wrk = shutil.which("wrk") is not None
    zsim, csim = ZaloSim(), CleverTapSim()
    z_runner, z_url = await serve(zsim.app())
    c_runner, c_url = await serve(csim.app())
    tmp = Path(tempfile.mkdtemp(prefix="zb-ingest-"))
    port_d, port_b = free_port(), free_port()
    cfg = write_sim_config(tmp / "bench.toml", f"{tmp}/bench.db", zsim, z_url, c_url,
                           server={"port": port_d, "max_body_bytes": 65536}, backfill={"enabled": False})
    env = daemon_env(zsim, csim)
    daemon = subprocess.Popen([sys.executable, "-m", "daemon", "run", "--config", str(cfg)], cwd=ROOT, env=env)
    bare = subprocess.Popen([sys.executable, "-c", BARE_APP, str(port_b)])
    results: dict[str, list[tuple[float, float]]] = {"bare": [], "daemon": []}
    sent_total = 0
    try:
        await wait_http(f"http://127.0.0.1:{port_d}/healthz")
        await wait_http(f"http://127.0.0.1:{port_b}/webhooks/zalo")
        per_run = 80_000
        for r in range(args.rounds):
            for name, port in (("bare", port_b), ("daemon", port_d)):
                reqfile = tmp / f"reqs-{name}-{r}.txt"
                # Fresh timestamps (the daemon refuses events older than 5 minutes) and unique ids.
                make_requests(zsim, per_run, args.users, reqfile, start=sent_total)
                sent_total += per_run
                url = f"http://127.0.0.1:{port}"
                loop = asyncio.get_running_loop()
                if use_wrk:
                    rps, p99 = await loop.run_in_executor(None, run_wrk, url, reqfile, args.seconds, args.connections, tmp)
                else:
                    rps, p99 = await loop.run_in_executor(None, run_python_load, url, reqfile, args.seconds, args.connections)
                results[name].append((rps, p99))
                print(f"round {r + 1} {name:<7} {rps:9.0f} req/s  p99 {p99:7.2f} ms", flush=True)
        # Wait until the daemon has uploaded every stored event to CleverTap.
        async with aiohttp.ClientSession() as s:
            async def backlog() -> int:
                async with s.get(f"http://127.0.0.1:{port_d}/readyz") as resp:
                    return (await resp.json())["details"]["backlog"]

            deadline = time.monotonic() + 300
            while await backlog() > 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
        events = len(csim.events)
        calls = sum(1 for c in csim.calls if c.get("records"))
        records = sum(c.get("records", 0) for c in csim.calls)
    finally:
        daemon.terminate()
        bare.terminate()
        daemon.wait(30)
        bare.wait(30)
        await z_runner.cleanup()
        await c_runner.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    ratios = [d[0] / b[0] for b, d in zip(results["bare"], results["daemon"])]
    print(f"\nload: {'wrk -t1' if use_wrk else 'aiohttp generator'} -c{args.connections}, {args.seconds}s per run, "
          f"events from {args.users} users")
    print(f"bare aiohttp (parse only) : {statistics.median(r for r, _ in results['bare']):9.0f} req/s")
    print(f"daemon (durable ack)      : {statistics.median(r for r, _ in results['daemon']):9.0f} req/s, "
          f"p99 ack {statistics.median(p for _, p in results['daemon']):.2f} ms")
    print(f"ratio daemon/bare         : {statistics.median(ratios):9.2f}  (per round: {', '.join(f'{x:.2f}' for x in ratios)})")
    print(f"CleverTap: {events} events uploaded in {calls} /1/upload calls ({records} records) = "
          f"{calls / max(events, 1) * 1000:.2f} calls per 1000 events")


if __name__ == "__main__":
    asyncio.run(main())
