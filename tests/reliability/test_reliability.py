"""Reliability: SIGKILL under load, dependency outages, token loss mid-campaign, no secret in logs."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

from ..conftest import eventually
from .scenarios import kill_under_load, summary_json


async def test_repeated_sigkill_under_mixed_load_loses_nothing_acknowledged(tmp_path: Path, zsim: Any, csim: Any,
                                                                           zalo_url: str, ct_url: str) -> None:
    result = await kill_under_load(tmp_path, zsim, csim, zalo_url, ct_url, events=1500, recipients=500, kills=3,
                                   interval_s=1.0, event_rate=300.0, send_rate=200.0)
    print(summary_json(result))
    # The kills really landed mid-load: events were still arriving and the campaign still sending.
    assert result["at_kills"][-1]["acked"] < 1500 and result["at_kills"][0]["messages"] < 500
    assert result["events_sent"] > result["events_acknowledged"]  # some deliveries failed and were retried
    assert result["events_lost"] == 0
    assert result["events_delivered"] == result["events_acknowledged"] > 0
    assert result["messages_delivered"] == 500
    assert result["message_duplicates"] <= 3 * 8  # at most the sends in flight at each kill
    assert result["exit_code_after_sigterm"] == 0
    # (5) no secret from the configuration, and no token, in anything the daemon printed.
    log = result["_log"].decode(errors="replace")
    assert "daemon_started" in log and "zalo_token_refreshed" in log
    secrets = [zsim.app_secret, zsim.oa_secret_key, csim.passcode, csim.account_id,
               *zsim.access_tokens, *zsim.refresh_tokens]
    from ..conftest import WEBHOOK_PASSWORD, WEBHOOK_USER

    secrets += [WEBHOOK_USER, WEBHOOK_PASSWORD]
    leaked = [s for s in secrets if s in log]
    assert leaked == []


async def test_clevertap_and_zalo_outages_then_recovery(bridge_factory: Any, zsim: Any, csim: Any) -> None:
    b = await bridge_factory()
    await b.until(lambda: b.rt.tokens.valid_for() > 0, what="token")
    # Zalo's message API is down while a campaign arrives.
    users = zsim.add_users(40)
    zsim.faults.down.add("message")
    body = {"targetId": 1, "profiles": [{"identity": u, "profileData": {"zalo_user_id": u}} for u in users],
            "message": {"type": "text", "text": "sale"}}
    assert (await b.sender().post(body))[0] == 200
    await b.until(lambda: len(zsim.rejected_calls) + sum(1 for _ in zsim.api_calls) >= 40, what="failed sends")
    # CleverTap is down while Zalo events arrive.
    csim.faults.down_status = 502
    for i in range(20):
        ev = zsim.event("user_send_text", users[i], msg_id=f"o-{i}")
        assert (await b.zalo(ev))[0] == 200
    await b.until(lambda: sum(1 for c in csim.calls if c["http"] == 502) >= 2, what="failed uploads")
    zsim.faults.down.discard("message")
    csim.faults.down_status = None
    await b.until(lambda: len(zsim.messages) >= 40, timeout=30, what="campaign recovered")
    await b.until(lambda: len(csim.events_named("Zalo Message Sent")) >= 40 and len(csim.events_named("Zalo Message Received")) >= 20,
                  timeout=30, what="uploads recovered")
    assert Counter(m["user_id"] for m in zsim.messages) == Counter(users)
    assert sorted(e["evtData"]["zalo_msg_id"] for e in csim.events_named("Zalo Message Received")) == sorted(f"o-{i}" for i in range(20))

    async def all_done() -> bool:
        return {j.state for j in await b.store.jobs()} == {"done"}

    await b.until(all_done, what="every job settled as done")


async def test_token_invalidated_mid_campaign(bridge_factory: Any, zsim: Any, csim: Any) -> None:
    b = await bridge_factory(zalo__requests_per_second=300.0, sender__concurrency=8)
    await b.until(lambda: b.rt.tokens.valid_for() > 0, what="token")
    users = zsim.add_users(300)
    body = {"targetId": 2, "profiles": [{"identity": u, "profileData": {"zalo_user_id": u}} for u in users],
            "message": {"type": "text", "text": "hi"}}
    refreshes = zsim.refreshes
    assert (await b.sender().post(body))[0] == 200
    await eventually(lambda: len(zsim.messages) >= 100, zsim.changed, what="first third sent")
    zsim.expire_access_tokens()  # revoked behind the daemon's back, with sends in flight
    await b.until(lambda: len(zsim.messages) >= 300, timeout=30, what="campaign finished")
    assert zsim.refreshes == refreshes + 1  # one refresh for all the concurrent senders
    assert Counter(m["user_id"] for m in zsim.messages) == Counter(users)
    await b.until(lambda: _all_done(b), what="all jobs done")


async def _all_done(b: Any) -> bool:
    jobs = await b.store.jobs(kind="zalo_send")
    return len(jobs) == 300 and all(j.state == "done" for j in jobs)


async def test_shutdown_flushes_pending_uploads(bridge_factory: Any, zsim: Any, csim: Any) -> None:
    b = await bridge_factory(clevertap__flush_interval_s=30.0)  # nothing would be sent for 30 s
    for i in range(5):
        assert (await b.zalo(zsim.event("follow", str(7100000000000000000 + i))))[0] == 200
    await b.until(lambda: len(b.rt.uploader._pending) == 5, what="batch pending")
    await asyncio.wait_for(b.rt.uploader.stop(5.0), 10)
    assert len(csim.events_named("Zalo OA Followed")) == 5  # flushed on stop, not lost
