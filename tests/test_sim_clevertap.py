"""The CleverTap simulator against shared/clevertap-api.md (not against the daemon): raw HTTP."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from daemon.sim import WebhookSender


@pytest.fixture
async def http() -> Any:
    async with aiohttp.ClientSession() as s:
        yield s


async def upload(http: Any, url: str, csim: Any, records: Any, *, passcode: str | None = None, raw: bytes | None = None) -> tuple[int, Any]:
    headers = {"X-CleverTap-Account-Id": csim.account_id, "X-CleverTap-Passcode": passcode or csim.passcode,
               "Content-Type": "application/json"}  # §1.2
    async with http.post(url + "/1/upload", data=raw if raw is not None else orjson.dumps({"d": records}), headers=headers) as r:
        return r.status, await r.json(content_type=None)


def profile(i: int, **data: Any) -> dict:
    return {"type": "profile", "identity": str(i), "profileData": {"zalo_user_id": str(i), **data}}


def event(i: int, name: str = "Zalo Message Received", **data: Any) -> dict:
    return {"type": "event", "identity": str(i), "evtName": name, "evtData": {"zalo_msg_id": "m", **data}, "ts": 1717000123}


async def test_success_and_profile_upsert(http: Any, csim: Any, ct_url: str) -> None:
    status, body = await upload(http, ct_url, csim, [profile(1, Name="A"), event(1)])
    assert (status, body) == (200, {"status": "success", "processed": 2, "unprocessed": []})  # §1.6
    await upload(http, ct_url, csim, [profile(1, zalo_follower=True)])
    assert csim.profiles["1"] == {"zalo_user_id": "1", "Name": "A", "zalo_follower": True}  # §1.4: upsert


async def test_partial_failure_is_http_200_with_one_based_record_numbers(http: Any, csim: Any, ct_url: str) -> None:
    records = [event(1), {"type": "event", "identity": "2", "evtData": {}}, profile(3, Phone="0912345678")]
    status, body = await upload(http, ct_url, csim, records)
    assert status == 200 and body["status"] == "partial" and body["processed"] == 1  # §1.6
    codes = {u["code"]: u for u in body["unprocessed"]}
    assert set(codes) == {509, 516}  # event name mandatory; phone must be E.164 (§6 pain point 6)
    assert codes[509]["error"].endswith("Skipped record number : 2") and codes[509]["record"] == records[1]
    assert codes[516]["error"].endswith("Skipped record number : 3")


@pytest.mark.parametrize(
    ("record", "code"),
    [
        ({"type": "event", "identity": "1", "evtName": "Notification Sent", "evtData": {}}, 513),  # §4 reserved
        ({"type": "event", "identity": "1", "evtName": "E", "evtData": {"nested": {"a": 1}}}, 512),  # §1.3 flat events
        ({"type": "event", "evtName": "E", "evtData": {}}, 523),  # missing identity
        ({"type": "thing", "identity": "1"}, 524),
        ({"type": "event", "identity": "1", "evtName": "E", "evtData": {}, "ts": 1717000123000}, 525),  # ms, not s
    ],
)
async def test_record_codes(http: Any, csim: Any, ct_url: str, record: dict, code: int) -> None:
    status, body = await upload(http, ct_url, csim, [record])
    assert status == 200 and body["status"] == "fail" and body["processed"] == 0  # §1.6: fail, still HTTP 200
    assert body["unprocessed"][0]["code"] == code


async def test_whole_request_errors(http: Any, csim: Any, ct_url: str) -> None:
    status, body = await upload(http, ct_url, csim, [event(1)], passcode="wrong")
    assert (status, body) == (401, {"status": "fail", "error": "Invalid Credentials", "code": 401})  # §1.1/1.6
    status, body = await upload(http, ct_url, csim, None, raw=b"{not json")
    assert status == 400 and body["error"] == "Malformed request"
    status, _ = await upload(http, ct_url, csim, [event(i) for i in range(1001)])
    assert status == 400  # §1.5: at most 1000 records
    status, _ = await upload(http, ct_url, csim, [event(i) for i in range(1000)])
    assert status == 200


async def test_too_many_concurrent_uploads_get_429(http: Any, csim: Any, ct_url: str) -> None:
    csim.faults.latency_s = 0.3
    results = await asyncio.gather(*(upload(http, ct_url, csim, [event(i)]) for i in range(16)))
    statuses = sorted(s for s, _ in results)
    assert statuses.count(429) == 1 and statuses.count(200) == 15  # §1.5: 15 per account
    (body,) = [b for s, b in results if s == 429]
    assert body["error"] == "Too many concurrent requests"


async def test_faults_555_and_outage(http: Any, csim: Any, ct_url: str) -> None:
    csim.faults.fail_555 = 1
    _, body = await upload(http, ct_url, csim, [event(1), event(2)])
    assert body["status"] == "partial" and body["unprocessed"][0]["code"] == 555  # §1.7 misc server error
    csim.faults.down_status = 503
    status, _ = await upload(http, ct_url, csim, [event(3)])
    assert status == 503


async def test_webhook_sender_shapes_auth_and_retry(aiohttp_server: Any, http: Any) -> None:
    seen: list[tuple[str | None, Any]] = []
    answers = [500, 200, 200, 200]

    async def hook(request: web.Request) -> web.Response:
        seen.append((request.headers.get("Authorization"), await request.json()))
        return web.Response(status=answers[len(seen) - 1])

    app = web.Application()
    app.router.add_post("/hook", hook)
    server = await aiohttp_server(app)
    sender = WebhookSender(http, str(server.make_url("/hook")), "user", "pw")
    status, _ = await sender.ping()
    assert status == 200 and len(seen) == 2  # §3.4: one retry after a failure
    auth, ping = seen[0]
    assert auth == "Basic " + base64.b64encode(b"user:pw").decode()
    assert ping["is_test"] is True and ping["targetId"] == 1234 and len(ping["profiles"]) == 5  # §3.1 test payload
    await sender.campaign(7, [{"identity": "a", "profileData": {"x": 1}}], {"k": "v"}, single_object=True, title_case=True)
    body = seen[-1][1]
    assert body["TargetId"] == 7 and body["Profiles"]["Identity"] == "a" and body["Profiles"]["ProfileData"] == {"x": 1}
    await sender.campaign(8, [{"identity": "a"}, {"identity": "b"}], {})
    assert seen[-1][1] == {"targetId": 8, "key_values": {}, "profiles": [{"identity": "a"}, {"identity": "b"}]}  # §3.2
