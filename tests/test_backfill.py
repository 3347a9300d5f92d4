"""Flow 4: the follower backfill against simulated OAs of every interesting size."""

from __future__ import annotations

import asyncio
import math
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from daemon.flows.backfill import LAST_KEY, PASS_KEY, split_range
from daemon.store import Store

from .conftest import ROOT, daemon_config_values, eventually, subprocess_env, write_config


def min_list_calls(zsim: Any) -> int:
    n = sum(1 for u in zsim.users.values() if u.follower)
    return max(1, math.ceil(n / 50))


def check_pass(zsim: Any, csim: Any, n: int, summary: dict[str, Any]) -> None:
    uploads = Counter(r["identity"] for r in csim.profile_updates)
    followers = {u.user_id for u in zsim.users.values() if u.follower}
    assert set(uploads) == followers and all(c == 1 for c in uploads.values())  # each exactly once
    assert all(c.get("offset", 0) <= 9951 for c in zsim.list_calls)
    assert not [c for c in zsim.list_calls if c.get("rejected")]
    assert len(zsim.list_calls) <= 1.1 * min_list_calls(zsim) + (2 if n > 10000 else 0), len(zsim.list_calls)
    upload_calls = [c for c in csim.calls if c["records"]]
    assert len(upload_calls) <= math.ceil(n / 1000) + 1
    assert summary["ok"] and summary["listed"] >= n and summary["uploaded"] == n


@pytest.mark.parametrize("n", [0, 1, 49, 50, 51, 9_999, 10_000])
async def test_small_and_boundary_oas(bridge_factory: Any, zsim: Any, csim: Any, n: int) -> None:
    b = await bridge_factory(clevertap__flush_interval_s=0.2)
    zsim.add_users(n)
    zsim.add_users(3, follower=False)  # interacted but not following: not listed
    summary = await b.rt.backfill.run_pass()
    await b.until(lambda: len(csim.profile_updates) >= n and not csim.inflight, timeout=30, what="uploads")
    await b.until(lambda: _uploads_settled(b), timeout=30, what="jobs settled")
    check_pass(zsim, csim, n, summary)
    if n:
        assert csim.profiles[next(iter(zsim.users))] == {"zalo_user_id": next(iter(zsim.users)), "zalo_follower": True}
    # A second pass lists again but uploads nothing new.
    calls = len(csim.calls)
    again = await b.rt.backfill.run_pass()
    assert again["uploaded"] == 0 and len(csim.calls) == calls
    assert (await b.store.kv_get(LAST_KEY))["ok"] is True


async def _uploads_settled(b: Any) -> bool:
    stats = await b.store.stats()
    return not any(n for (k, s), n in stats.counts.items() if k == "ct_record" and s in ("ready", "inflight"))


@pytest.mark.slow
async def test_oa_with_120k_followers_is_listed_in_slices(bridge_factory: Any, zsim: Any, csim: Any) -> None:
    b = await bridge_factory(zalo__requests_per_second=5000.0, clevertap__flush_interval_s=0.2)
    zsim.add_users(120_000, spread_days=200)
    summary = await b.rt.backfill.run_pass()
    await b.until(lambda: len(csim.profile_updates) >= 120_000, timeout=120, what="uploads")
    await b.until(lambda: _uploads_settled(b), timeout=60, what="jobs settled")
    check_pass(zsim, csim, 120_000, summary)
    assert summary["slices"] > 12 and summary["unreachable"] == 0


async def test_users_known_from_webhooks_are_not_uploaded_again(bridge_factory: Any, zsim: Any, csim: Any) -> None:
    b = await bridge_factory()
    ids = zsim.add_users(10)
    body = zsim.event("follow", ids[0])
    assert (await b.zalo(body))[0] == 200
    await b.until(lambda: ids[0] in csim.profiles, what="webhook profile")
    await b.until(lambda: _uploads_settled_kind(b, "zalo_event"), what="settled")
    before = len(csim.profile_updates)
    summary = await b.rt.backfill.run_pass()
    assert summary["uploaded"] == 9
    await b.until(lambda: len(csim.profile_updates) == before + 9, what="backfill uploads")


async def _uploads_settled_kind(b: Any, kind: str) -> bool:
    jobs = await b.store.jobs(kind=kind)
    return bool(jobs) and all(j.state == "done" for j in jobs)


async def test_details_enrichment(bridge_factory: Any, zsim: Any, csim: Any) -> None:
    b = await bridge_factory(backfill__fetch_details=True)
    u = zsim.add_user(display_name="Trang")
    u.shared_info = {"name": "Nguyễn Trang", "phone": "0912345678"}
    summary = await b.rt.backfill.run_pass()
    assert summary["uploaded"] == 1 and zsim.detail_calls == [u.user_id]
    await b.until(lambda: u.user_id in csim.profiles, what="profile")
    p = csim.profiles[u.user_id]
    assert p["zalo_display_name"] == "Trang" and p["Phone"] == "+84912345678" and p["Name"] == "Nguyễn Trang"
    assert p["zalo_user_id_by_app"] == u.user_id_by_app


async def test_list_failures_back_off_and_leave_the_pass_resumable(bridge_factory: Any, zsim: Any) -> None:
    b = await bridge_factory()
    zsim.add_users(120)
    zsim.faults.queue("getlist", ("http", 502), -32)
    summary = await b.rt.backfill.run_pass()
    assert summary["ok"] and summary["uploaded"] == 120  # retried through two transient errors
    zsim.faults.queue("getlist", -201)  # a permanent error aborts the pass; it stays resumable
    zsim.add_users(60)
    failed = await b.rt.backfill.run_pass()
    assert not failed["ok"] and "-201" in failed["error"]
    ready = await (await b.client.get("/readyz")).json()
    assert ready["details"]["backfill"]["last"]["ok"] is False  # visible, but not a readiness failure
    assert not [f for f in ready["failing"] if f["check"] == "backfill"]


async def test_a_pass_never_runs_twice_at_once(bridge_factory: Any, zsim: Any) -> None:
    b = await bridge_factory()
    zsim.add_users(300)
    zsim.faults.latency_s = 0.02
    first, second = await asyncio.gather(b.rt.backfill.run_pass(), b.rt.backfill.run_pass())
    assert sorted([bool(first.get("skipped")), bool(second.get("skipped"))]) == [False, True]


async def test_sends_go_first_when_a_pass_races_a_campaign(bridge_factory: Any, zsim: Any, csim: Any) -> None:
    rate = 200.0
    b = await bridge_factory(zalo__requests_per_second=rate, sender__concurrency=16)
    await b.until(lambda: b.rt.tokens.valid_for() > 0, what="token")
    zsim.add_users(9000, spread_days=3)
    recipients = zsim.add_users(400)
    backfill = asyncio.create_task(b.rt.backfill.run_pass())
    await eventually(lambda: len(zsim.list_calls) >= 20, zsim.changed, what="backfill under way")
    before = list(b.rt.throttle.granted)
    body = {"targetId": 5, "profiles": [{"identity": u, "profileData": {"zalo_user_id": u}} for u in recipients],
            "message": {"type": "text", "text": "flash sale"}}
    assert (await b.sender().post(body))[0] == 200
    await eventually(lambda: len(zsim.messages) >= 400, zsim.changed, timeout=30, what="campaign sent")
    sends = b.rt.throttle.granted[0] - before[0]
    background = b.rt.throttle.granted[1] - before[1]
    print(f"while the campaign ran: {sends} send slots, {background} backfill slots")
    # While sends wait, every slot of the shared budget goes to them; the backfill only gets the
    # gaps between one send finishing and the next being claimed.
    assert sends >= 400 and background <= sends * 0.10, (sends, background)
    await backfill


async def test_kill_9_mid_pass_resumes_without_relisting_finished_slices(tmp_path: Path, zsim: Any, csim: Any,
                                                                       zalo_url: str, ct_url: str) -> None:
    zsim.add_users(60_000, spread_days=120)
    values = daemon_config_values(tmp_path, zsim, zalo_url, ct_url, 0, zalo={"requests_per_second": 3000.0})
    cfg = write_config(tmp_path / "c.toml", values)
    env = subprocess_env(zsim, csim, zsim.issue_tokens()[1])
    args = [sys.executable, "-m", "daemon", "backfill", "--once", "--config", str(cfg)]
    proc = await asyncio.create_subprocess_exec(*args, env=env, cwd=str(ROOT), stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    await eventually(lambda: len(zsim.list_calls) >= 700, zsim.changed, timeout=60, what="half the pass")
    proc.kill()
    await proc.wait()
    first_calls = len(zsim.list_calls)
    store = await Store.open(str(tmp_path / "state" / "bridge.db"), exclusive=False)
    try:
        saved = await store.kv_get(PASS_KEY)
    finally:
        await store.close()
    assert saved is not None
    finished = {s["filter"].get("last_interaction_period") for s in saved["slices"] if s["done"]}
    assert finished, "no slice finished before the kill"
    proc = await asyncio.create_subprocess_exec(*[a for a in args], env=subprocess_env(zsim, csim), cwd=str(ROOT),
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, out.decode()[-3000:]
    summary = orjson.loads(out[out.index(b"{\n"):])
    assert summary["ok"] and summary["resumed"] and summary["upload_backlog"] == 0
    relisted = [c for c in zsim.list_calls[first_calls:] if c.get("last_interaction_period") in finished]
    assert relisted == []
    uploads = Counter(r["identity"] for r in csim.profile_updates)
    assert len(uploads) == 60_000
    assert sum(n - 1 for n in uploads.values()) <= 4000  # at most batches in flight at the kill, re-sent (idempotent)
    assert len(zsim.list_calls) <= 1.1 * min_list_calls(zsim) + 30  # resuming re-lists at most the unflushed pages


def test_split_range() -> None:
    import datetime as dt

    a, b = dt.date(2024, 1, 1), dt.date(2024, 1, 10)
    parts = split_range(a, b, 3)
    assert parts[0][0] == a and parts[-1][1] == b
    assert all((p[1] - p[0]).days >= 0 for p in parts)
    assert sum((p[1] - p[0]).days + 1 for p in parts) == 10
    assert split_range(a, a, 5) == [(a, a)]


async def test_first_pass_is_scheduled_with_jitter(bridge_factory: Any, zsim: Any, csim: Any, aiohttp_client: Any,
                                                   config_factory: Any) -> None:
    from daemon.app import create_app

    zsim.add_users(5)
    cfg = config_factory(backfill__enabled=True, backfill__first_run_delay_s=0.05)
    client = await aiohttp_client(create_app(cfg))
    from daemon.appkeys import STATE

    rt = client.server.app[STATE]
    await eventually(lambda: len(csim.profiles) >= 5, csim.changed, timeout=10, what="scheduled pass")
    await eventually(lambda: rt.backfill.last and rt.backfill.last.get("ok"), csim.changed, rt.store.activity, what="pass done")
