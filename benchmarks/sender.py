"""Campaign sender: achieved send rate against the configured one, and webhook intake time.

    .venv/bin/python benchmarks/sender.py [--recipients 10000] [--rate 500]

The daemon (same factory as production) and both simulators run in this process. A CleverTap
campaign webhook names the recipients in payloads of 1,000 profiles; the sender must reach
``--rate`` messages/s (one throttle for all Zalo calls) without losing or duplicating any.
Also timed: the time to 200 for one 1,000-profile payload, against a bare JSON parse of the
same body in the same process (the baseline).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from daemon import logs  # noqa: E402
from daemon.app import create_app  # noqa: E402
from daemon.config import Config, Secret, Secrets  # noqa: E402
from daemon.sim import CleverTapSim, WebhookSender, ZaloSim, serve  # noqa: E402


def config(tmp: str, zsim: ZaloSim, csim: CleverTapSim, z_url: str, c_url: str, rate: float) -> Config:
    cfg = Config().replace(**{
        "store.path": f"{tmp}/bench.db", "zalo.app_id": zsim.app_id, "zalo.oa_id": zsim.oa_id,
        "zalo.api_base": z_url, "zalo.oauth_base": z_url, "zalo.requests_per_second": rate,
        "clevertap.api_base": c_url, "sender.concurrency": 32, "backfill.enabled": False,
        "server.max_body_bytes": 4 * 1024 * 1024,
    })
    cfg.templates["promo"] = {"type": "text", "text": "Ưu đãi cho {{Profile.Name | default: \"bạn\"}}"}
    return dataclasses.replace(cfg, secrets=Secrets(
        zalo_app_secret=Secret(zsim.app_secret, "bench"), zalo_oa_secret_key=Secret(zsim.oa_secret_key, "bench"),
        zalo_refresh_token=Secret(zsim.issue_tokens()[1], "bench"),
        clevertap_account_id=Secret(csim.account_id, "bench"), clevertap_passcode=Secret(csim.passcode, "bench"),
        clevertap_webhook_user=Secret("u", "bench"), clevertap_webhook_password=Secret("p", "bench")))


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipients", type=int, default=10_000)
    ap.add_argument("--rate", type=float, default=500.0)
    args = ap.parse_args()
    logs.configure("warning", "json")
    zsim, csim = ZaloSim(), CleverTapSim()
    z_runner, z_url = await serve(zsim.app())
    c_runner, c_url = await serve(csim.app())
    tmp = tempfile.TemporaryDirectory()
    app = create_app(config(tmp.name, zsim, csim, z_url, c_url, args.rate), schedule_backfill=False)
    d_runner, d_url = await serve(app)
    users = zsim.add_users(args.recipients)
    try:
        async with aiohttp.ClientSession() as session:
            sender = WebhookSender(session, d_url + "/webhooks/clevertap", "u", "p", timeout_s=30)
            payloads = [
                WebhookSender.default_payload(9001, [{"identity": u, "profileData": {"zalo_user_id": u, "Name": f"K{u[-3:]}"}}
                                                     for u in users[i : i + 1000]], {"zalo_template": "promo"})
                for i in range(0, len(users), 1000)
            ]
            intake_ms, baseline_ms = [], []
            started = time.monotonic()
            for body in payloads:
                raw = orjson.dumps(body)
                t = time.perf_counter()
                orjson.loads(raw)  # baseline: parsing the same body, nothing else
                baseline_ms.append((time.perf_counter() - t) * 1000)
                t = time.perf_counter()
                status, answer = await sender.post(None, raw=raw)
                intake_ms.append((time.perf_counter() - t) * 1000)
                assert status == 200 and answer["accepted"] == 1000, answer
            dup_status, dup = await sender.post(payloads[0])  # CleverTap's retry of the first payload
            assert dup_status == 200 and dup["duplicates"] == 1000
            deadline = time.monotonic() + args.recipients / args.rate * 3 + 60
            while len(zsim.messages) < args.recipients and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            wall = time.monotonic() - started
    finally:
        await d_runner.cleanup()
        await c_runner.cleanup()
        await z_runner.cleanup()
        tmp.cleanup()
    times = [m["at"] for m in zsim.messages]
    counts = Counter(m["user_id"] for m in zsim.messages)
    steady = (len(times) - 1) / (max(times) - min(times)) if len(times) > 1 else 0.0
    lost = args.recipients - len(counts)
    print(f"recipients {args.recipients}, configured rate {args.rate:.0f}/s, sender.concurrency 32")
    print(f"achieved rate (first to last message): {steady:.1f}/s = {steady / args.rate:.3f} x configured")
    print(f"wall time incl. intake: {wall:.1f}s (rate-limited minimum {args.recipients / args.rate:.1f}s)")
    print(f"lost: {lost}   duplicates: {sum(n - 1 for n in counts.values())}   "
          f"retried webhook deduplicated: {dup['duplicates']} of 1000")
    print(f"intake of a 1,000-profile payload: median {statistics.median(intake_ms):.1f} ms to 200 "
          f"(bare JSON parse of the same body: {statistics.median(baseline_ms):.2f} ms; "
          f"ratio {statistics.median(intake_ms) / statistics.median(baseline_ms):.0f}x), max {max(intake_ms):.1f} ms")


if __name__ == "__main__":
    asyncio.run(main())
