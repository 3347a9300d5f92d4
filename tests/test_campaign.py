"""Flow 2 through real sockets: CleverTap webhooks -> daemon -> Zalo simulator -> outcome events."""

from __future__ import annotations

import base64
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from .conftest import WEBHOOK_PASSWORD, WEBHOOK_USER, DaemonProcess, daemon_config_values, eventually, free_port, subprocess_env, write_config


def custom(uid: str, spec: dict[str, Any], campaign: str = "c1", **extra: Any) -> dict[str, Any]:
    return {"campaign": campaign, "zalo_user_id": uid, "identity": f"cust-{uid}", "message": spec, **extra}


async def sent_to(bridge: Any, n: int) -> list[dict[str, Any]]:
    await bridge.until(lambda: len(bridge.zsim.messages) >= n, what=f"{n} messages at Zalo")
    return bridge.zsim.messages


EXACT = [
    ({"type": "text", "text": "Xin chào {{Profile.Name}}"}, {"text": "Xin chào Lan"}),
    ({"type": "image", "url": "https://cdn.example.com/b.jpg", "text": "Mới"},
     {"text": "Mới", "attachment": {"type": "template", "payload": {"template_type": "media",
                                                                     "elements": [{"media_type": "image", "url": "https://cdn.example.com/b.jpg"}]}}}),
    ({"type": "buttons", "text": "Chọn", "buttons": [{"type": "url", "title": "Web", "url": "https://e.com"},
                                                      {"type": "query_show", "title": "Hỏi", "payload": "#hoi"},
                                                      {"type": "query_hide", "title": "Đơn", "payload": "#don"},
                                                      {"type": "phone", "title": "Gọi", "phone": "84123456789"},
                                                      {"type": "sms", "title": "SMS", "phone": "84123456789", "content": "Hi"}]},
     {"text": "Chọn", "attachment": {"type": "template", "payload": {"buttons": [
         {"type": "oa.open.url", "title": "Web", "payload": {"url": "https://e.com"}},
         {"type": "oa.query.show", "title": "Hỏi", "payload": "#hoi"},
         {"type": "oa.query.hide", "title": "Đơn", "payload": "#don"},
         {"type": "oa.open.phone", "title": "Gọi", "payload": {"phone_code": "84123456789"}},
         {"type": "oa.open.sms", "title": "SMS", "payload": {"phone_code": "84123456789", "content": "Hi"}}]}}}),
    ({"type": "quick_replies", "text": "OK?", "replies": [{"title": "Có", "payload": "#yes"}, {"title": "Không", "hidden": True}]},
     {"text": "OK?", "attachment": {"type": "template", "payload": {"buttons": [
         {"title": "Có", "type": "oa.query.show", "payload": "#yes"},
         {"title": "Không", "type": "oa.query.hide", "payload": "Không"}]}}}),
    ({"type": "list", "elements": [{"title": "Áo", "subtitle": "199k", "image_url": "https://e.com/a.jpg",
                                    "action": {"type": "url", "url": "https://e.com/a"}},
                                   {"title": "Giá", "action": {"type": "query_show", "payload": "#gia"}}]},
     {"attachment": {"type": "template", "payload": {"template_type": "list", "elements": [
         {"title": "Áo", "subtitle": "199k", "image_url": "https://e.com/a.jpg", "default_action": {"type": "oa.open.url", "url": "https://e.com/a"}},
         {"title": "Giá", "default_action": {"type": "oa.query.show", "payload": "#gia"}}]}}}),
    ({"type": "raw", "message": {"text": "raw", "quote_message_id": "q1"}}, {"text": "raw", "quote_message_id": "q1"}),
]


@pytest.mark.parametrize("index", range(len(EXACT)))
async def test_each_message_type_reaches_zalo_exactly(bridge: Any, index: int) -> None:
    spec, expected = EXACT[index]
    uid = bridge.zsim.add_user().user_id
    status, answer = await bridge.sender().post(custom(uid, spec, profile={"Name": "Lan"}))
    assert status == 200 and answer["accepted"] == 1, answer
    (msg,) = await sent_to(bridge, 1)
    assert msg["user_id"] == uid and msg["message"] == expected
    await bridge.until(lambda: bridge.csim.events_named("Zalo Message Sent"), what="outcome event")
    (evt,) = bridge.csim.events_named("Zalo Message Sent")
    assert evt["identity"] == f"cust-{uid}"
    assert evt["evtData"] == {"campaign_id": "c1", "zalo_user_id": uid, "message_type": spec["type"],
                              "zalo_message_id": msg["message_id"]}


@pytest.fixture
async def files(aiohttp_server: Any) -> Any:
    hits: list[str] = []

    async def pdf(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(body=b"%PDF-1.4 test", content_type="application/pdf")

    async def huge(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * 6_000_000, content_type="application/pdf")

    app = web.Application()
    app.router.add_get("/b.pdf", pdf)
    app.router.add_get("/huge.pdf", huge)
    server = await aiohttp_server(app)
    return str(server.make_url("")).rstrip("/"), hits


async def test_file_is_downloaded_and_uploaded_once_then_reuploaded_on_expiry(bridge: Any, files: Any) -> None:
    base, hits = files
    users = [bridge.zsim.add_user().user_id for _ in range(3)]
    spec = {"type": "file", "url": base + "/b.pdf"}
    profiles = [{"identity": u, "profileData": {"zalo_user_id": u}} for u in users]
    body = {"targetId": 77, "profiles": profiles, "message": spec}
    status, answer = await bridge.sender().post(body)
    assert status == 200 and answer["accepted"] == 3
    msgs = await sent_to(bridge, 3)
    tokens = {m["message"]["attachment"]["payload"]["token"] for m in msgs}
    assert len(tokens) == 1 and hits == ["/b.pdf"] and len(bridge.zsim.uploads) == 1
    assert bridge.zsim.uploads[0]["name"] == "b.pdf"
    # Zalo expires uploads after 7 days: -100 makes the sender upload again.
    bridge.zsim.expire_assets()
    other = bridge.zsim.add_user().user_id
    await bridge.sender().post(custom(other, spec, campaign="c2"))
    await sent_to(bridge, 4)
    assert len(bridge.zsim.uploads) == 2 and hits == ["/b.pdf", "/b.pdf"]


async def test_file_too_large_is_dead_with_reason(bridge: Any, files: Any) -> None:
    base, _ = files
    uid = bridge.zsim.add_user().user_id
    await bridge.sender().post(custom(uid, {"type": "file", "url": base + "/huge.pdf"}))
    await bridge.until(lambda: _states(bridge, {"dead"}), what="dead job")
    (job,) = await bridge.jobs(kind="zalo_send")
    assert "larger than" in job.last_error
    await bridge.until(lambda: bridge.csim.events_named("Zalo Message Failed"), what="failure reported")


async def _states(bridge: Any, states: set[str], kind: str = "zalo_send") -> bool:
    jobs = await bridge.jobs(kind=kind)
    return bool(jobs) and {j.state for j in jobs} <= states


@pytest.mark.parametrize(
    ("code", "state"),
    [(-213, "failed"), (-230, "failed"), (-232, "failed"), (-217, "failed"), (-227, "failed"), (-244, "failed"),
     (-201, "dead"), (-210, "dead"), (-233, "dead")],
)
async def test_user_and_payload_errors_are_not_retried(bridge: Any, code: int, state: str) -> None:
    uid = bridge.zsim.add_user().user_id
    bridge.zsim.faults.queue("message", code)
    await bridge.sender().post(custom(uid, {"type": "text", "text": "hi"}))
    await bridge.until(lambda: _states(bridge, {state}), what=state)
    (job,) = await bridge.jobs(kind="zalo_send")
    assert job.attempts == 1 and str(code) in job.last_error
    await bridge.until(lambda: bridge.csim.events_named("Zalo Message Failed"), what="failure event")
    (evt,) = bridge.csim.events_named("Zalo Message Failed")
    assert evt["evtData"]["error_code"] == str(code) and evt["evtData"]["campaign_id"] == "c1"
    assert bridge.zsim.messages == []


async def test_user_outside_the_window_fails_at_the_simulator(bridge: Any) -> None:
    import time

    uid = bridge.zsim.add_user(last_interaction=time.time() - 8 * 86400).user_id
    await bridge.sender().post(custom(uid, {"type": "text", "text": "hi"}))
    await bridge.until(lambda: _states(bridge, {"failed"}), what="failed")
    (job,) = await bridge.jobs(kind="zalo_send")
    assert "-230" in job.last_error


@pytest.mark.parametrize("fault", [-32, ("http", 502), -200])
async def test_transient_errors_are_retried_until_sent(bridge: Any, fault: Any) -> None:
    uid = bridge.zsim.add_user().user_id
    bridge.zsim.faults.queue("message", fault, fault)
    await bridge.sender().post(custom(uid, {"type": "text", "text": "hi"}))
    await sent_to(bridge, 1)
    await bridge.until(lambda: _states(bridge, {"done"}), what="done")
    (job,) = await bridge.jobs(kind="zalo_send")
    assert job.attempts == 3
    if fault == -32:
        assert bridge.rt.throttle.current_rate < bridge.rt.cfg.zalo.requests_per_second  # slowed down


async def test_network_errors_and_timeouts_are_retried(bridge_factory: Any, zsim: Any) -> None:
    b = await bridge_factory(zalo__request_timeout_s=0.3)
    uid = zsim.add_user().user_id
    zsim.faults.latency_s = 1.0
    await b.sender().post(custom(uid, {"type": "text", "text": "hi"}))
    await b.until(lambda: _attempted(b, 2), what="two timed-out attempts")
    zsim.faults.latency_s = 0
    await sent_to(b, 1)


async def _attempted(bridge: Any, n: int) -> bool:
    jobs = await bridge.jobs(kind="zalo_send")
    return bool(jobs) and jobs[0].attempts >= n


async def test_attempts_exhausted_go_dead_and_replay(bridge_factory: Any, zsim: Any) -> None:
    b = await bridge_factory(sender__max_attempts=2)
    uid = zsim.add_user().user_id
    zsim.faults.down.add("message")
    await b.sender().post(custom(uid, {"type": "text", "text": "hi"}))
    await b.until(lambda: _states(b, {"dead"}), what="dead")
    (job,) = await b.jobs(kind="zalo_send")
    assert job.attempts == 2 and "gave up after 2 attempts" in job.last_error
    zsim.faults.down.discard("message")
    assert await b.store.retry_dead() == 1
    await sent_to(b, 1)


async def test_token_error_on_send_refreshes_and_retries(bridge: Any) -> None:
    await bridge.until(lambda: bridge.rt.tokens.valid_for() > 0, what="token")
    uid = bridge.zsim.add_user().user_id
    refreshes = bridge.zsim.refreshes
    bridge.zsim.expire_access_tokens()
    await bridge.sender().post(custom(uid, {"type": "text", "text": "hi"}))
    await sent_to(bridge, 1)
    assert bridge.zsim.refreshes == refreshes + 1
    (job,) = await bridge.jobs(kind="zalo_send")
    assert job.attempts == 1


async def test_test_ping_sends_nothing(bridge: Any) -> None:
    status, answer = await bridge.sender().ping()
    assert (status, answer) == (200, {"ok": True, "test": True})
    assert await bridge.jobs() == []


async def test_default_payload_single_object_title_case_and_missing_ids(bridge: Any) -> None:
    a = bridge.zsim.add_user().user_id
    body = bridge.sender().default_payload(
        42, [{"identity": "cust-a", "profileData": {"zalo_user_id": a, "Name": "An"}}],
        {"zalo_template": "promo_test"}, single_object=True, title_case=True)
    bridge.rt.cfg.templates["promo_test"] = {"type": "text", "text": "Hi {{Profile.Name}} {{Campaign.zalo_template}}"}
    status, answer = await bridge.sender().post(body)
    assert status == 200 and answer["accepted"] == 1
    (msg,) = await sent_to(bridge, 1)
    assert msg["message"] == {"text": "Hi An promo_test"}
    profiles = [{"identity": "no-zalo", "profileData": {"Name": "X"}},
                {"identity": "liquid", "profileData": {"zalo_user_id": "{{Profile.zalo_user_id}}"}}]
    status, answer = await bridge.sender().post({"targetId": 43, "profiles": profiles,
                                                 "message": {"type": "text", "text": "hi"}})
    assert status == 200 and answer["accepted"] == 0 and answer["skipped_no_user_id"] == 2
    await bridge.until(lambda: len(bridge.csim.events_named("Zalo Message Failed")) == 2, what="reported")
    reasons = {e["evtData"]["error_code"] for e in bridge.csim.events_named("Zalo Message Failed")}
    assert reasons == {"no_user_id"}


async def test_retried_webhook_is_deduplicated(bridge: Any) -> None:
    users = [bridge.zsim.add_user().user_id for _ in range(3)]
    body = {"targetId": 9, "profiles": [{"identity": u, "profileData": {"zalo_user_id": u}} for u in users],
            "message": {"type": "text", "text": "once"}}
    s1, a1 = await bridge.sender().post(body)
    s2, a2 = await bridge.sender().post(body)
    assert (s1, a1["accepted"], a1["duplicates"]) == (200, 3, 0)
    assert (s2, a2["accepted"], a2["duplicates"]) == (200, 0, 3)
    await sent_to(bridge, 3)
    await bridge.until(lambda: _states(bridge, {"done"}), what="done")
    assert Counter(m["user_id"] for m in bridge.zsim.messages) == Counter(users)
    # Another message to the same people in the same campaign is not a duplicate.
    body["message"] = {"type": "text", "text": "second"}
    s3, a3 = await bridge.sender().post(body)
    assert a3["accepted"] == 3


@pytest.mark.parametrize(
    "auth",
    [None, "", "Basic", "Bearer abc", "Basic " + base64.b64encode(f"{WEBHOOK_USER}:wrong".encode()).decode(),
     "Basic " + base64.b64encode(f"someone:{WEBHOOK_PASSWORD}".encode()).decode(), "Basic !!!notbase64",
     "Basic " + base64.b64encode(WEBHOOK_USER.encode()).decode()],
)
async def test_auth_failures_are_401_and_store_nothing(bridge: Any, auth: str | None) -> None:
    uid = bridge.zsim.add_user().user_id
    headers = {"Content-Type": "application/json"}
    if auth is not None:
        headers["Authorization"] = auth
    resp = await bridge.client.post("/webhooks/clevertap", data=orjson.dumps(custom(uid, {"type": "text", "text": "x"})),
                                    headers=headers)
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith("Basic realm=")
    assert (await resp.json())["error"]["code"] == "unauthorized"
    assert await bridge.jobs() == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"campaign": "c", "zalo_user_id": "1", "message": {"type": "text", "text": "x" * 2001}}, "message.text"),
        ({"campaign": "c", "zalo_user_id": "1", "message": {"type": "buttons", "text": "t", "buttons": []}}, "message.buttons"),
        ({"campaign": "c", "zalo_user_id": "1", "message": {"type": "list", "elements": [{"title": "a"}] * 6}}, "message.elements"),
        ({"campaign": "c", "zalo_user_id": "1", "message": {"type": "carousel"}}, "message.type"),
        ({"campaign": "c", "zalo_user_id": "1", "template": "nope"}, "template"),
        ({"targetId": 1, "key_values": {"zalo_template": "nope"}, "profiles": [{"identity": "a"}]}, "key_values.zalo_template"),
        ({"targetId": 1, "profiles": [{"identity": "a", "profileData": {"zalo_user_id": "1"}}]}, "message"),
        ({"targetId": 1, "profiles": "everyone", "message": {"type": "text", "text": "x"}}, "profiles"),
        ({"nothing": "useful"}, "body"),
    ],
)
async def test_invalid_specs_are_422_naming_the_field(bridge: Any, body: dict[str, Any], field: str) -> None:
    status, answer = await bridge.sender().post(body)
    assert status == 422, answer
    assert answer["error"]["field"] == field and answer["error"]["code"] in ("invalid_message", "invalid_payload")
    assert await bridge.jobs() == []


async def test_malformed_json_and_oversized_body(bridge_factory: Any) -> None:
    b = await bridge_factory(server__max_body_bytes=4096)
    status, answer = await b.sender().post(None, raw=b'{"targetId": 1, "profiles": [')
    assert status == 400 and answer["error"]["code"] == "malformed_json"
    status, answer = await b.sender().post({"targetId": 1, "profiles": [{"identity": "x" * 5000}]})
    assert status == 413 and answer["error"]["code"] == "body_too_large"
    assert await b.jobs() == []


async def test_echo_of_a_sent_message_is_not_user_activity(bridge: Any) -> None:
    uid = bridge.zsim.add_user().user_id
    await bridge.sender().post(custom(uid, {"type": "text", "text": "hi"}))
    (msg,) = await sent_to(bridge, 1)
    await bridge.until(lambda: bridge.csim.events_named("Zalo Message Sent"), what="sent event")
    calls = len(bridge.csim.calls)
    echo = bridge.zsim.event("oa_send_text", uid, msg_id=msg["message_id"], text="hi")
    status, _ = await bridge.zalo(echo)
    assert status == 200
    await bridge.until(lambda: _states(bridge, {"done"}, kind="zalo_event"), what="echo settled")
    (job,) = await bridge.jobs(kind="zalo_event")
    assert job.last_error.startswith("echo") and len(bridge.csim.calls) == calls


async def test_quick_reply_taps_come_back_as_user_text(bridge: Any) -> None:
    uid = bridge.zsim.add_user().user_id
    await bridge.sender().post(custom(uid, {"type": "quick_replies", "text": "OK?", "replies": [{"title": "Yes", "payload": "#yes"}]}))
    await sent_to(bridge, 1)
    tap = bridge.zsim.event("user_send_text", uid, text="#yes")
    assert (await bridge.zalo(tap))[0] == 200
    await bridge.until(lambda: bridge.csim.events_named("Zalo Message Received"), what="tap recorded")
    (evt,) = bridge.csim.events_named("Zalo Message Received")
    assert evt["evtData"]["zalo_user_id"] == uid and evt["evtData"]["message_type"] == "text"


# ---------------------------------------------------------------------------- real processes


async def _campaign(session: aiohttp.ClientSession, url: str, users: list[str], target: int) -> None:
    from daemon.sim import WebhookSender

    sender = WebhookSender(session, url + "/webhooks/clevertap", WEBHOOK_USER, WEBHOOK_PASSWORD, timeout_s=30)
    for i in range(0, len(users), 500):
        chunk = users[i : i + 500]
        status, answer = await sender.campaign(target, [{"identity": u, "profileData": {"zalo_user_id": u}} for u in chunk],
                                               {"zalo_template": "welcome"})
        assert status == 200 and answer["accepted"] == len(chunk), answer


async def _run_campaign_with_interruption(tmp_path: Path, zsim: Any, csim: Any, zalo_url: str, ct_url: str, *,
                                          kill: bool) -> tuple[Counter[str], list[str]]:
    port = free_port()
    values = daemon_config_values(tmp_path, zsim, zalo_url, ct_url, port,
                                  zalo={"requests_per_second": 400.0}, sender={"concurrency": 8})
    cfg = write_config(tmp_path / "c.toml", values)
    with open(tmp_path / "c.toml", "a") as f:
        f.write('\n[templates.welcome]\ntype = "text"\ntext = "Xin chào!"\n')
    users = zsim.add_users(2000)
    env = subprocess_env(zsim, csim, zsim.issue_tokens()[1])
    first = await DaemonProcess(cfg, env, port).start()
    async with aiohttp.ClientSession() as session:
        await _campaign(session, first.url, users, 555)
        await eventually(lambda: len(zsim.messages) >= 600, zsim.changed, timeout=30, what="600 messages")
        if kill:
            await first.kill()
        else:
            assert await first.terminate() == 0
        at_stop = len(zsim.messages)
        assert at_stop < 2000, "the campaign finished before the interruption"
        second = await DaemonProcess(cfg, subprocess_env(zsim, csim), port).start()
        try:
            await eventually(lambda: len(set(m["user_id"] for m in zsim.messages)) >= 2000, zsim.changed, timeout=60,
                             what="every recipient")
        finally:
            assert await second.terminate() == 0
    return Counter(m["user_id"] for m in zsim.messages), users


async def test_kill_9_mid_campaign_loses_nothing(tmp_path: Path, zsim: Any, csim: Any, zalo_url: str, ct_url: str) -> None:
    counts, users = await _run_campaign_with_interruption(tmp_path, zsim, csim, zalo_url, ct_url, kill=True)
    assert set(counts) == set(users)  # every recipient got the message
    duplicates = sum(n - 1 for n in counts.values())
    assert duplicates <= 8  # at most the sends in flight at the kill (sender.concurrency)


async def test_sigterm_mid_campaign_finishes_in_flight_and_duplicates_nothing(tmp_path: Path, zsim: Any, csim: Any,
                                                                              zalo_url: str, ct_url: str) -> None:
    counts, users = await _run_campaign_with_interruption(tmp_path, zsim, csim, zalo_url, ct_url, kill=False)
    assert set(counts) == set(users)
    assert max(counts.values()) == 1
