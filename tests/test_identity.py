"""Flow 1 through real sockets: Zalo webhooks -> daemon -> CleverTap simulator."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest

from daemon.__main__ import main

from .samples import SAMPLES, fresh


def ids_of(csim: Any, name: str) -> list[str]:
    return [e["evtData"]["zalo_msg_id"] for e in csim.events_named(name)]


EXPECTED = {
    # sample -> (user id, CleverTap event name or None, profile fields that must be present)
    "user_send_text": ("246845883529197922", "Zalo Message Received", {"zalo_last_interaction"}),
    "user_send_text_capture": ("5510185758261927916", "Zalo Message Received", {"zalo_last_interaction"}),
    "user_send_image": ("4339761418830368433", "Zalo Message Received", {"zalo_last_interaction"}),
    "user_send_file": ("4339761418830368433", "Zalo Message Received", {"zalo_last_interaction"}),
    "user_send_sticker": ("4339761418830368433", "Zalo Message Received", {"zalo_last_interaction"}),
    "user_send_location": ("8309393969855402319", "Zalo Message Received", {"zalo_last_interaction"}),
    "follow": ("24684588352919792", "Zalo OA Followed", {"zalo_follower", "zalo_last_interaction"}),
    "user_submit_info": ("246845883529697922", "Zalo Info Submitted", {"Name", "Phone"}),
    "oa_send_text": ("4339761418830368433", None, set()),
    "user_seen_message": ("7605173638941758527", None, set()),
    "add_user_to_tag": ("246845883296197922", None, set()),
}


@pytest.mark.parametrize("sample", sorted(EXPECTED))
async def test_each_documented_event_reaches_clevertap(bridge: Any, sample: str) -> None:
    body = fresh(sample, bridge.zsim.app_id, oa_id=bridge.zsim.oa_id)
    status, answer = await bridge.zalo(body)
    assert (status, answer) == (200, {"ok": True, "duplicate": False})
    uid, event_name, fields = EXPECTED[sample]
    await bridge.until(lambda: uid in bridge.csim.profiles, what=f"profile {uid}")
    profile = bridge.csim.profiles[uid]
    assert profile["zalo_user_id"] == uid and isinstance(profile["zalo_user_id"], str)
    assert fields <= set(profile)
    if event_name:
        await bridge.until(lambda: bridge.csim.events_named(event_name), what=event_name)
        (evt,) = bridge.csim.events_named(event_name)
        assert evt["identity"] == uid and evt["evtData"]["zalo_user_id"] == uid
        assert evt["ts"] == int(body["timestamp"]) // 1000
        assert evt["evtData"]["zalo_event"] == body["event_name"]
    else:
        await bridge.until(lambda: bridge.csim.calls, what="upload")
        assert bridge.csim.events == []
    (job,) = await bridge.jobs(kind="zalo_event")
    await bridge.until(lambda: _state(bridge, job.id, "done"), what="job done")


async def _state(bridge: Any, job_id: int, state: str) -> bool:
    job = await bridge.store.get_job(job_id)
    return job is not None and job.state == state


async def test_profile_contents_for_follow_unfollow_and_submitted_info(bridge: Any) -> None:
    app = bridge.zsim.app_id
    await bridge.zalo(fresh("follow", app))
    await bridge.until(lambda: bridge.csim.events_named("Zalo OA Followed"), what="follow")
    uid = "24684588352919792"
    p = bridge.csim.profiles[uid]
    assert p["zalo_follower"] is True and p["zalo_last_interaction"].startswith("$D_")
    assert p["zalo_user_id_by_app"] == "552172779717587730"
    await bridge.zalo(fresh("unfollow", app, offset_ms=1))
    await bridge.until(lambda: bridge.csim.events_named("Zalo OA Unfollowed"), what="unfollow")
    assert bridge.csim.profiles[uid]["zalo_follower"] is False
    await bridge.zalo(fresh("user_submit_info", app))
    await bridge.until(lambda: bridge.csim.events_named("Zalo Info Submitted"), what="info")
    info = bridge.csim.profiles["246845883529697922"]
    assert info["Name"] == "Name Example" and info["Phone"] == "+84912345678"


async def test_duplicates_are_acknowledged_but_stored_once(bridge: Any) -> None:
    body = fresh("user_send_text_capture", bridge.zsim.app_id)
    assert await bridge.zalo(body) == (200, {"ok": True, "duplicate": False})
    assert await bridge.zalo(body, headers={"num_retry": "1"}) == (200, {"ok": True, "duplicate": True})
    follow = fresh("follow", bridge.zsim.app_id)  # no msg_id: event + user + timestamp
    assert (await bridge.zalo(follow))[1]["duplicate"] is False
    assert (await bridge.zalo(follow))[1]["duplicate"] is True
    assert len(await bridge.jobs(kind="zalo_event")) == 2
    await bridge.until(lambda: len(bridge.csim.events) == 2, what="two events")
    assert ids_of(bridge.csim, "Zalo Message Received") == ["e2a641af6661713b2874"]


def _bad_inputs(app_id: str) -> list[tuple[str, dict[str, Any] | None, bytes | None, dict[str, str] | None, bool, int, str]]:
    good = fresh("user_send_text", app_id)
    stale = dict(good, timestamp=str(int(time.time() * 1000) - 301_000))
    future = dict(good, timestamp=str(int(time.time() * 1000) + 301_000))
    other_app = dict(good, app_id="999")
    return [
        # name, body, raw, headers, sign, status, code
        ("missing signature", good, None, None, False, 401, "missing_signature"),
        ("wrong signature", good, None, {"X-ZEvent-Signature": "mac=" + "a" * 64}, False, 401, "bad_signature"),
        ("signature of another body", good, orjson.dumps({**good, "x": 1}), {"X-ZEvent-Signature": "mac=" + "b" * 64}, False, 401, "bad_signature"),
        ("replayed (old)", stale, None, None, True, 401, "stale_timestamp"),
        ("from the future", future, None, None, True, 401, "stale_timestamp"),
        ("another app", other_app, None, None, True, 401, "bad_signature"),
        ("malformed JSON", {}, b'{"event_name": "user_send_text",', None, True, 400, "malformed_json"),
        ("JSON array", {}, b"[]", None, True, 400, "malformed_json"),
        ("no timestamp", {k: v for k, v in good.items() if k != "timestamp"}, None, None, True, 401, "bad_signature"),
    ]


@pytest.mark.parametrize("case", range(9))
async def test_bad_input_gets_a_clear_4xx_and_changes_nothing(bridge: Any, case: int) -> None:
    name, body, raw, headers, sign, status, code = _bad_inputs(bridge.zsim.app_id)[case]
    got_status, answer = await bridge.zalo(body or {}, raw=raw, headers=headers, sign=sign)
    assert got_status == status, name
    assert answer["error"]["code"] == code and answer["error"]["message"]
    assert await bridge.jobs() == []
    assert bridge.csim.calls == []


async def test_another_app_with_a_valid_signature_for_it_is_refused(bridge: Any) -> None:
    body = dict(fresh("user_send_text", bridge.zsim.app_id), app_id="999")
    raw = orjson.dumps(body)
    from daemon.zalo.signature import signature_header

    header = signature_header(bridge.zsim.app_id, raw, body["timestamp"], bridge.zsim.oa_secret_key)
    status, answer = await bridge.zalo(body, raw=raw, headers={"X-ZEvent-Signature": header}, sign=False)
    assert status == 401 and answer["error"]["code"] == "wrong_app"
    assert await bridge.jobs() == []


async def test_oversized_body_is_413_and_stores_nothing(bridge_factory: Any) -> None:
    b = await bridge_factory(server__max_body_bytes=2048)
    body = dict(fresh("user_send_text", b.zsim.app_id), padding="x" * 4000)
    status, answer = await b.zalo(body)
    assert status == 413 and answer["error"]["code"] == "body_too_large"
    # Without Content-Length (chunked) the limit holds too.
    raw = orjson.dumps(body)

    async def chunks():  # type: ignore[no-untyped-def]
        for i in range(0, len(raw), 512):
            yield raw[i : i + 512]

    resp = await b.client.post("/webhooks/zalo", data=chunks(), headers={"X-ZEvent-Signature": b.zsim.sign(raw, body)})
    assert resp.status == 413 and (await resp.json())["error"]["code"] == "body_too_large"
    assert await b.jobs() == []


async def test_unknown_event_is_acknowledged_stored_as_ignored_and_counted(bridge: Any) -> None:
    body = fresh("user_send_text", bridge.zsim.app_id)
    body["event_name"] = "shop_has_order"
    assert await bridge.zalo(body) == (200, {"ok": True, "ignored": True, "duplicate": False})
    (job,) = await bridge.jobs()
    assert job.state == "ignored" and "unknown event" in job.last_error
    metrics = await (await bridge.client.get("/metrics")).text()
    assert 'zalo_bridge_zalo_events_total{event="unknown",result="ignored"} 1.0' in metrics
    assert bridge.csim.calls == []


async def test_echo_of_our_own_message_is_not_user_activity(bridge: Any) -> None:
    await bridge.store.run(lambda conn: conn.execute(
        "INSERT INTO sent_messages (message_id, job_id, created_at) VALUES ('This is message id 4', 1, 0)"))
    status, _ = await bridge.zalo(fresh("oa_send_text", bridge.zsim.app_id, oa_id=bridge.zsim.oa_id))
    assert status == 200
    (job,) = await bridge.jobs()
    await bridge.until(lambda: _state(bridge, job.id, "done"), what="echo settled")
    assert (await bridge.store.get_job(job.id)).last_error.startswith("echo")
    assert bridge.csim.calls == []


async def test_batches_coalesce_profiles_of_one_user(bridge_factory: Any) -> None:
    b = await bridge_factory(clevertap__flush_interval_s=0.5)
    uid = "5510185758261927916"
    for i in range(3):
        body = fresh("user_send_text_capture", b.zsim.app_id, offset_ms=i)
        body["message"] = {"text": f"m{i}", "msg_id": f"msg-{i}"}
        await b.zalo(body)
    await b.until(lambda: len(b.csim.events) == 3, what="three events")
    assert len(b.csim.calls) == 1  # one upload for everything
    assert [r["identity"] for r in b.csim.profile_updates] == [uid]  # one merged profile record


async def test_many_events_fill_batches(bridge_factory: Any) -> None:
    b = await bridge_factory(clevertap__flush_interval_s=0.3, clevertap__batch_max=100)
    for i in range(250):
        body = fresh("user_send_text_capture", b.zsim.app_id, offset_ms=i)
        body["sender"] = {"id": str(7000000000000000000 + i)}
        body["message"] = {"text": "x", "msg_id": f"m{i}"}
        await b.zalo(body)
    await b.until(lambda: len(b.csim.events) == 250, what="all events")
    records = sum(c["records"] for c in b.csim.calls)
    assert records == 500  # a profile and an event per new user
    assert len(b.csim.calls) <= records // 100 + 1
    assert max(c["records"] for c in b.csim.calls) <= 100


async def test_partial_failure_resends_only_the_failed_record(bridge: Any) -> None:
    bridge.csim.faults.fail_555 = 1  # the first record of the first call fails (the profile)
    body = fresh("user_send_text_capture", bridge.zsim.app_id)
    await bridge.zalo(body)
    await bridge.until(lambda: len(bridge.csim.calls) >= 2 and bridge.csim.profiles, what="retry of the profile")
    assert len(bridge.csim.events) == 1  # the event was processed the first time: never sent again
    assert bridge.csim.calls[0]["status"] == "partial" and bridge.csim.calls[1]["records"] == 1
    (job,) = await bridge.jobs()
    await bridge.until(lambda: _state(bridge, job.id, "done"), what="done")


async def test_permanent_record_error_goes_dead_and_is_listed(bridge: Any, capsys: Any) -> None:
    bridge.csim.faults.record_error = lambda rec: (512, "Event data is incorrect") if rec["type"] == "event" else None
    await bridge.zalo(fresh("user_send_text_capture", bridge.zsim.app_id))
    (job,) = await bridge.jobs()
    await bridge.until(lambda: _state(bridge, job.id, "dead"), what="dead")
    dead = await bridge.store.get_job(job.id)
    assert "512" in dead.last_error and dead.progress["done"] == ["profile:5510185758261927916"]
    assert len(bridge.csim.calls) == 1  # not retried


async def test_clevertap_outage_then_recovery_delivers_every_event_exactly_once(bridge: Any) -> None:
    bridge.csim.faults.down_status = 503
    sent = []
    for i in range(30):
        body = fresh("user_send_text_capture", bridge.zsim.app_id, offset_ms=i)
        body["sender"] = {"id": str(8000000000000000000 + i)}
        body["message"] = {"text": "x", "msg_id": f"out-{i}"}
        sent.append(f"out-{i}")
        await bridge.zalo(body)
    await bridge.until(lambda: sum(1 for c in bridge.csim.calls if c["http"] == 503) >= 3, what="failed attempts")
    assert bridge.csim.events == []
    bridge.csim.faults.down_status = None
    await bridge.until(lambda: len(bridge.csim.events) >= 30, timeout=20, what="recovery")
    assert sorted(ids_of(bridge.csim, "Zalo Message Received")) == sorted(sent)  # each exactly once
    assert len(bridge.csim.profile_updates) == 30


async def test_429_is_retried(bridge: Any) -> None:
    bridge.csim.faults.next_http.extend([429, 429])
    await bridge.zalo(fresh("follow", bridge.zsim.app_id))
    await bridge.until(lambda: bridge.csim.events, what="event after 429s")
    assert [c["http"] for c in bridge.csim.calls] == [429, 429, 200]
    assert len(bridge.csim.events) == 1


async def test_wrong_credentials_fail_readiness_with_a_region_hint(bridge: Any) -> None:
    bridge.csim.passcode = "rotated"
    await bridge.zalo(fresh("follow", bridge.zsim.app_id))
    await bridge.until(lambda: bridge.rt.uploader.auth_problem, what="auth failure noticed")
    failure = await bridge.readiness_failure("clevertap")
    assert "region" in failure["message"] and "CLEVERTAP_PASSCODE" in failure["message"]
    (job,) = await bridge.jobs()
    assert job.state in ("ready", "inflight") and job.attempts <= 1  # kept, attempts not burnt
    bridge.csim.passcode = bridge.rt.cfg.secrets.clevertap_passcode.reveal()
    await bridge.until(lambda: bridge.csim.events, timeout=15, what="recovery after the fix")


async def test_queue_cli_lists_and_replays_dead_jobs(bridge: Any, tmp_path: Any, capsys: Any, monkeypatch: Any) -> None:
    bridge.csim.faults.record_error = lambda rec: (512, "Event data is incorrect") if rec["type"] == "event" else None
    await bridge.zalo(fresh("user_send_text_capture", bridge.zsim.app_id))
    (job,) = await bridge.jobs()
    await bridge.until(lambda: _state(bridge, job.id, "dead"), what="dead")
    cfg_path = tmp_path / "q.toml"
    cfg_path.write_text(f'[zalo]\napp_id = "1"\noa_id = "2"\n[store]\npath = "{bridge.rt.cfg.store.path}"\n')
    import asyncio

    assert await asyncio.to_thread(main, ["queue", "stats", "--config", str(cfg_path)]) == 0
    assert "zalo_event" in capsys.readouterr().out
    assert await asyncio.to_thread(main, ["queue", "dead", "--config", str(cfg_path)]) == 0
    out = capsys.readouterr().out
    assert f"{job.id}" in out and "512" in out and "1 dead job(s)" in out
    bridge.csim.faults.record_error = None
    assert await asyncio.to_thread(main, ["queue", "retry", str(job.id), "--config", str(cfg_path)]) == 0
    assert "1 dead job(s) made ready again" in capsys.readouterr().out
    await bridge.until(lambda: bridge.csim.events, timeout=15, what="replayed event")
    assert len(bridge.csim.profile_updates) == 1  # the processed profile was not sent again


SAMPLE_NAMES = sorted(SAMPLES)
