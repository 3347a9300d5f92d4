"""The Zalo simulator against shared/zalo-api.md (not against the daemon): raw HTTP, no daemon code."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest


@pytest.fixture
async def http() -> Any:
    async with aiohttp.ClientSession() as s:
        yield s


async def post_token(http: Any, url: str, zsim: Any, form: dict[str, str], secret: str | None = None) -> tuple[int, dict]:
    # §2.3/2.4: form-encoded, header secret_key = app secret.
    async with http.post(url + "/v4/oa/access_token", data=form, headers={"secret_key": secret or zsim.app_secret}) as r:
        return r.status, await r.json(content_type=None)


async def api(http: Any, method: str, url: str, token: str | None, **kw: Any) -> dict:
    headers = {"access_token": token} if token else {}
    async with http.request(method, url, headers=headers, **kw) as r:
        assert r.status == 200  # §3.2: errors come back with HTTP 200
        return await r.json(content_type=None)


async def test_refresh_rotates_and_old_refresh_token_is_single_use(http: Any, zsim: Any, zalo_url: str) -> None:
    access, refresh = zsim.issue_tokens()
    status, body = await post_token(http, zalo_url, zsim, {"app_id": zsim.app_id, "grant_type": "refresh_token", "refresh_token": refresh})
    assert status == 200 and set(body) == {"access_token", "refresh_token", "expires_in"}
    assert body["expires_in"] == "90000"  # §2.5: a string of seconds, 25 h
    assert body["refresh_token"] != refresh
    # §2.6: the old refresh token is invalidated after a successful use ...
    status, again = await post_token(http, zalo_url, zsim, {"app_id": zsim.app_id, "grant_type": "refresh_token", "refresh_token": refresh})
    # §2.7: ... and the refusal can be an HTTP 200 body with error / error_name and no tokens.
    assert status == 200 and again["error"] < 0 and again["error_name"] and "access_token" not in again
    # §2.6 (NOTE-B): the previous access token dies when the new one is issued.
    res = await api(http, "GET", zalo_url + "/v3.0/oa/user/getlist", access, params={"data": '{"offset":0,"count":1}'})
    assert res["error"] == -220
    res = await api(http, "GET", zalo_url + "/v3.0/oa/user/getlist", body["access_token"], params={"data": '{"offset":0,"count":1}'})
    assert res["error"] == 0


async def test_token_endpoint_checks_app_and_secret(http: Any, zsim: Any, zalo_url: str) -> None:
    _, refresh = zsim.issue_tokens()
    _, body = await post_token(http, zalo_url, zsim, {"app_id": "999", "grant_type": "refresh_token", "refresh_token": refresh})
    assert body["error"] == -14002  # §2.7 "Invalid appId"
    _, body = await post_token(http, zalo_url, zsim, {"app_id": zsim.app_id, "grant_type": "refresh_token", "refresh_token": refresh},
                               secret="wrong")
    assert "access_token" not in body
    assert zsim.refresh_token_valid(refresh)  # refused requests do not consume the token


async def test_permission_redirect_and_pkce_code_exchange(http: Any, zsim: Any, zalo_url: str) -> None:
    verifier = base64.urlsafe_b64encode(b"v" * 32).rstrip(b"=").decode()
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    params = {"app_id": zsim.app_id, "redirect_uri": "https://x.example/cb", "code_challenge": challenge, "state": "s1"}
    async with http.get(zalo_url + "/v4/oa/permission", params=params, allow_redirects=False) as r:
        assert r.status == 302
        q = parse_qs(urlsplit(r.headers["Location"]).query)
    assert q["state"] == ["s1"] and q["oa_id"] == [zsim.oa_id] and q["code"]  # §2.2
    code = q["code"][0]
    form = {"app_id": zsim.app_id, "grant_type": "authorization_code", "code": code, "code_verifier": "wrong" + verifier}
    _, bad = await post_token(http, zalo_url, zsim, form)
    assert "access_token" not in bad
    form["code_verifier"] = verifier
    _, ok = await post_token(http, zalo_url, zsim, form)
    assert ok["access_token"] and ok["refresh_token"]
    _, reused = await post_token(http, zalo_url, zsim, form)
    assert "access_token" not in reused  # §2.6: the code is single use


async def test_access_token_header_and_expiry(http: Any, zsim: Any, zalo_url: str) -> None:
    access, _ = zsim.issue_tokens()
    url = zalo_url + "/v3.0/oa/user/getlist"
    params = {"data": '{"offset":0,"count":1}'}
    assert (await api(http, "GET", url, None, params=params))["error"] == -216  # §3.3
    assert (await api(http, "GET", url, "garbage", params=params))["error"] == -216
    zsim.advance(90_001)  # 25 h later
    assert (await api(http, "GET", url, access, params=params))["error"] == -220


async def send(http: Any, url: str, token: str, user_id: Any, message: Any) -> dict:
    return await api(http, "POST", url + "/v3.0/oa/message/cs", token, json={"recipient": {"user_id": user_id}, "message": message})


async def test_consultation_message_rules(http: Any, zsim: Any, zalo_url: str) -> None:
    access, _ = zsim.issue_tokens()
    uid = zsim.add_user().user_id
    ok = await send(http, zalo_url, access, uid, {"text": "hello, world!"})
    assert ok["error"] == 0 and ok["message"] == "Success"  # §5.10
    assert ok["data"]["message_id"] and ok["data"]["user_id"] == uid
    assert (await send(http, zalo_url, access, uid, {"text": "x" * 2001}))["error"] == -210  # §5.3: 2,000 characters
    nfd = "\u0065\u0302\u0301" * 700  # 2100 code points in NFD, 700 in NFC
    assert (await send(http, zalo_url, access, uid, {"text": nfd}))["error"] == 0
    six = [{"title": f"b{i}", "type": "oa.query.show", "payload": "#x"} for i in range(6)]
    msg = {"text": "t", "attachment": {"type": "template", "payload": {"buttons": six}}}
    assert (await send(http, zalo_url, access, uid, msg))["error"] == -210  # §5.6: max 5 buttons
    msg["attachment"]["payload"] = {"template_type": "carousel"}
    assert (await send(http, zalo_url, access, uid, msg))["error"] == -233  # §3.4: type not supported
    lst = {"attachment": {"type": "template", "payload": {"template_type": "list", "elements": [{"title": "a"}] * 6}}}
    assert (await send(http, zalo_url, access, uid, lst))["error"] == -210  # §5.7: 5 elements
    media = {"attachment": {"type": "template", "payload": {"template_type": "media",
                                                            "elements": [{"media_type": "image", "url": "https://e/x.jpg"}]}}}
    assert (await send(http, zalo_url, access, uid, media))["error"] == 0  # §5.4 by URL
    stale = zsim.add_user(last_interaction=time.time() - 8 * 86400).user_id
    assert (await send(http, zalo_url, access, stale, {"text": "hi"}))["error"] == -230  # §5.2: 7-day window
    gone = zsim.add_user(follower=False, last_interaction=time.time() - 30 * 86400).user_id
    assert (await send(http, zalo_url, access, gone, {"text": "hi"}))["error"] == -213
    v2 = await api(http, "POST", zalo_url + "/v2.0/oa/message", access, json={"recipient": {"user_id": uid}, "message": {"text": "x"}})
    assert v2["error"] == -240  # §5.1: v2 is shut down
    assert [m["user_id"] for m in zsim.messages] == [uid, uid, uid]


async def test_uploads_and_their_seven_day_life(http: Any, zsim: Any, zalo_url: str) -> None:
    access, _ = zsim.issue_tokens()
    uid = zsim.add_user().user_id

    async def upload(kind: str, name: str, content: bytes) -> dict:
        form = aiohttp.FormData()
        form.add_field("file", content, filename=name)  # §7: multipart field "file"
        return await api(http, "POST", f"{zalo_url}/v2.0/oa/upload/{kind}", access, data=form)

    img = await upload("image", "a.png", b"\x89PNG" + b"0" * 100)
    assert img["error"] == 0 and img["data"]["attachment_id"]
    assert (await upload("image", "big.jpg", b"0" * (1024 * 1024 + 1)))["error"] == -210  # 1 MB
    f = await upload("file", "doc.pdf", b"%PDF")
    token = f["data"]["token"]  # files return a token, not an attachment_id
    file_msg = {"attachment": {"type": "file", "payload": {"token": token}}}
    assert (await send(http, zalo_url, access, uid, file_msg))["error"] == 0
    zsim.advance(7 * 86400 + 1)
    zsim.interact(uid)
    access, _ = zsim.issue_tokens()
    assert (await send(http, zalo_url, access, uid, file_msg))["error"] == -100  # expired upload


async def test_user_getlist_limits_filters_and_detail(http: Any, zsim: Any, zalo_url: str) -> None:
    access, _ = zsim.issue_tokens()
    ids = zsim.add_users(120)
    zsim.add_users(5, follower=False)
    old = zsim.add_user(last_interaction=time.time() - 40 * 86400).user_id
    url = zalo_url + "/v3.0/oa/user/getlist"

    async def getlist(data: dict) -> dict:
        return await api(http, "GET", url, access, params={"data": json.dumps(data)})  # §3.1: one JSON `data` param

    page = await getlist({"offset": 0, "count": 50, "is_follower": True})
    assert page["error"] == 0 and page["data"]["total"] == 121 and len(page["data"]["users"]) == 50
    assert set(page["data"]) >= {"total", "count", "offset", "users"}
    assert (await getlist({"offset": 0, "count": 51}))["error"] != 0  # §6.1: count <= 50
    assert (await getlist({"offset": 9952, "count": 50}))["error"] != 0  # offset <= 9951
    assert (await getlist({"offset": 9951, "count": 50}))["error"] == 0
    strings = await getlist({"offset": 0, "count": 15, "last_interaction_period": "L30D", "is_follower": "true"})
    assert strings["data"]["total"] == 120  # the string "true" works too; the 40-day-old user is outside L30D
    everyone = await getlist({"offset": 0, "count": 50})
    assert everyone["data"]["total"] == 126  # without is_follower: followers and non-followers
    detail = await api(http, "GET", zalo_url + "/v3.0/oa/user/detail", access, params={"data": json.dumps({"user_id": ids[0]})})
    assert detail["data"]["user_id"] == ids[0] and detail["data"]["user_is_follower"] is True
    assert {"display_name", "user_id_by_app", "avatar", "shared_info", "user_last_interaction_date"} <= set(detail["data"])
    missing = await api(http, "GET", zalo_url + "/v3.0/oa/user/detail", access, params={"data": '{"user_id":"1"}'})
    assert missing["error"] == -213
    assert old in zsim.users


async def test_faults_rate_limit_and_outage(http: Any, zsim: Any, zalo_url: str) -> None:
    access, _ = zsim.issue_tokens()
    uid = zsim.add_user().user_id
    zsim.faults.queue("message", -32, ("http", 502))
    assert (await send(http, zalo_url, access, uid, {"text": "a"}))["error"] == -32
    async with http.post(zalo_url + "/v3.0/oa/message/cs", headers={"access_token": access},
                         json={"recipient": {"user_id": uid}, "message": {"text": "a"}}) as r:
        assert r.status == 502
    zsim.faults.rate_limit_per_min = 2
    results = [(await send(http, zalo_url, access, uid, {"text": "a"}))["error"] for _ in range(3)]
    assert results[-1] == -32  # §3.5: over the limit the call is not executed


def test_webhook_bodies_and_signature_follow_the_docs(zsim: Any) -> None:
    body = zsim.event("user_send_text", "5510185758261927916", text="Helo")
    assert isinstance(body["timestamp"], str) and len(body["timestamp"]) == 13  # §4.4: ms, string
    assert body["sender"]["id"] == "5510185758261927916" and body["recipient"]["id"] == zsim.oa_id
    follow = zsim.event("follow", "24684588352919792")
    assert follow["follower"]["id"] == "24684588352919792" and follow["oa_id"] == zsim.oa_id
    raw = json.dumps(body).encode()
    expected = hashlib.sha256(zsim.app_id.encode() + raw + body["timestamp"].encode() + zsim.oa_secret_key.encode()).hexdigest()
    assert zsim.sign(raw, body) == "mac=" + expected  # §4.3: plain SHA-256, not HMAC
