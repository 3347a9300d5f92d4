"""Property-based fuzzing of both webhook endpoints (hypothesis).

Random and mutated bodies, headers and sizes: never a 5xx, never a crash, and a rejected
request never stores a job. The daemon runs in a thread with its own event loop (the same
factory as production, talking to the simulators); hypothesis drives it over real HTTP.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import http.client
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.app import create_app
from daemon.sim import CleverTapSim, ZaloSim, serve

from ..conftest import WEBHOOK_PASSWORD, WEBHOOK_USER, make_config

MAX_BODY = 8192


@dataclasses.dataclass
class Running:
    port: int
    db: str
    zsim: ZaloSim
    loop: asyncio.AbstractEventLoop

    def request(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("POST", path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def jobs(self) -> int:
        with sqlite3.connect(self.db) as c:
            return c.execute("SELECT count(*) FROM jobs").fetchone()[0]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("fuzz")
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, Any] = {}

    async def main() -> None:
        zsim, csim = ZaloSim(), CleverTapSim()
        zr, zurl = await serve(zsim.app())
        cr, curl = await serve(csim.app())
        cfg = make_config(Path(tmp), zsim, csim, zurl, curl, refresh_token=zsim.issue_tokens()[1])
        cfg = cfg.replace(**{"server.max_body_bytes": MAX_BODY})
        cfg.templates["t"] = {"type": "text", "text": "hi {{Profile.Name}}"}
        # No workers: the job count then changes only through the webhook endpoints under test.
        dr, durl = await serve(create_app(cfg, start_workers=False))
        holder.update(port=int(durl.rsplit(":", 1)[1]), db=cfg.store.path, zsim=zsim, runners=[dr, cr, zr])
        holder["stop"] = asyncio.Event()
        started.set()
        await holder["stop"].wait()
        for r in holder["runners"]:
            await r.cleanup()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert started.wait(20)
    yield Running(holder["port"], holder["db"], holder["zsim"], loop)
    loop.call_soon_threadsafe(holder["stop"].set)
    thread.join(20)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=15), children, max_size=5),
    max_leaves=30,
)
event_names = st.sampled_from(["user_send_text", "follow", "unfollow", "oa_send_text", "user_seen_message",
                               "add_user_to_tag", "user_submit_info", "user_click_chatnow", "anonymous_send_text", "x"]) | st.text(max_size=20)


def zalo_body(draw: Any, zsim: ZaloSim) -> dict[str, Any]:
    body: dict[str, Any] = draw(st.dictionaries(st.sampled_from(["sender", "recipient", "follower", "message", "info", "tag",
                                                                 "oa_id", "user_id_by_app", "source", "extra"]),
                                                json_values, max_size=6))
    body["event_name"] = draw(event_names)
    body["app_id"] = draw(st.sampled_from([zsim.app_id, zsim.app_id, "1", 5]))
    ts = int(time.time() * 1000) + draw(st.sampled_from([0, 0, -10**6, 10**6, -10**9]))
    body["timestamp"] = draw(st.sampled_from([str(ts), str(ts), ts, "abc", None]))
    return body


@st.composite
def zalo_requests(draw: Any, zsim: ZaloSim) -> tuple[bytes, dict[str, str], bool]:
    body = zalo_body(draw, zsim)
    # stdlib json: wide integers and non-ASCII escapes exercise the daemon's parsers too.
    raw = json.dumps(body, ensure_ascii=draw(st.booleans())).encode()
    headers = {"Content-Type": draw(st.sampled_from(["application/json", "text/plain", ""]))}
    sig_kind = draw(st.sampled_from(["good", "good", "missing", "garbage", "other_body"]))
    ts = body.get("timestamp")
    good = zsim.sign(raw, body) if isinstance(ts, (str, int)) else "mac=" + "0" * 64
    mutate = draw(st.sampled_from(["none", "none", "flip", "truncate", "append", "pad"]))
    if mutate == "flip" and raw:
        i = draw(st.integers(0, len(raw) - 1))
        raw = raw[:i] + bytes([raw[i] ^ draw(st.integers(1, 255))]) + raw[i + 1 :]
    elif mutate == "truncate":
        raw = raw[: draw(st.integers(0, len(raw)))]
    elif mutate == "append":
        raw = raw + draw(st.binary(max_size=40))
    elif mutate == "pad":
        raw = raw + b" " * draw(st.integers(MAX_BODY - 200, MAX_BODY * 2))
    if sig_kind == "good":
        headers["X-ZEvent-Signature"] = good if mutate == "none" else zsim.sign(raw, body)
    elif sig_kind == "garbage":
        headers["X-ZEvent-Signature"] = draw(st.text(alphabet="abcdefmac=0123456789", max_size=80))
    elif sig_kind == "other_body":
        headers["X-ZEvent-Signature"] = good if mutate != "none" else "mac=" + "1" * 64
    if draw(st.booleans()):
        headers["num_retry"] = str(draw(st.integers(0, 5)))
    return raw, {k: v for k, v in headers.items() if v}, sig_kind == "good"


@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_zalo_webhook_fuzz(daemon: Running, data: st.DataObject) -> None:
    raw, headers, _ = data.draw(zalo_requests(daemon.zsim))
    before = daemon.jobs()
    status, answer = daemon.request("/webhooks/zalo", raw, headers)
    assert status < 500, answer
    parsed = orjson.loads(answer)
    if status >= 400:
        assert parsed["error"]["code"] and daemon.jobs() == before  # a rejected request stores nothing
    else:
        assert parsed["ok"] is True


def auth_header(draw: Any) -> str | None:
    good = "Basic " + base64.b64encode(f"{WEBHOOK_USER}:{WEBHOOK_PASSWORD}".encode()).decode()
    return draw(st.sampled_from([good, good, good, None, "Basic", "Basic =====", "Bearer x",
                                 "Basic " + base64.b64encode(b"a:b").decode()]))


spec_strategy = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "image", "file", "buttons", "quick_replies", "list", "raw", "nope"])},
    optional={"text": st.text(max_size=30) | json_values, "url": st.sampled_from(["https://e.com/a.jpg", "ftp://x", "", 3]),
              "buttons": json_values | st.lists(st.fixed_dictionaries({"type": st.sampled_from(["url", "query_show", "phone", "x"]),
                                                                       "title": st.text(max_size=25)},
                                                                      optional={"url": st.just("https://e.com"), "payload": st.text(max_size=5),
                                                                                "phone": st.sampled_from(["84123456789", "x"])}), max_size=7),
              "replies": json_values, "elements": json_values, "message": json_values, "attachment_id": json_values},
)


@st.composite
def clevertap_requests(draw: Any, zsim: ZaloSim) -> tuple[bytes, dict[str, str]]:
    kind = draw(st.sampled_from(["default", "custom", "ping", "random"]))
    if kind == "default":
        profiles = draw(st.lists(st.fixed_dictionaries({}, optional={
            "identity": json_values, "objectId": json_values,
            "profileData": st.fixed_dictionaries({}, optional={"zalo_user_id": st.sampled_from(["123456789", "", "{{x}}", 5]) | json_values,
                                                             "Name": json_values})}), max_size=4))
        body: Any = {"targetId": draw(json_values), "profiles": profiles if draw(st.booleans()) else (profiles[0] if profiles else {}),
                     "key_values": draw(st.sampled_from([{}, {"zalo_template": "t"}, {"zalo_template": "zz"}, []]))}
        if draw(st.booleans()):
            body["message"] = draw(spec_strategy)
    elif kind == "custom":
        body = {"campaign": draw(json_values), "zalo_user_id": draw(st.sampled_from(["123456789", "abc", 1]) | json_values),
                "message": draw(spec_strategy)}
    elif kind == "ping":
        body = {"is_test": True, "profiles": draw(json_values)}
    else:
        body = draw(json_values)
    raw = json.dumps(body).encode() if draw(st.integers(0, 9)) else draw(st.binary(max_size=200))
    if draw(st.integers(0, 19)) == 0:
        raw = raw + b" " * (MAX_BODY + 1)
    headers = {"Content-Type": "application/json"}
    auth = auth_header(draw)
    if auth is not None:
        headers["Authorization"] = auth
    return raw, headers


@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_clevertap_webhook_fuzz(daemon: Running, data: st.DataObject) -> None:
    raw, headers = data.draw(clevertap_requests(daemon.zsim))
    before = daemon.jobs()
    status, answer = daemon.request("/webhooks/clevertap", raw, headers)
    assert status < 500, answer
    parsed = orjson.loads(answer)
    if status >= 400:
        assert parsed["error"]["code"] and daemon.jobs() == before
    else:
        assert parsed["ok"] is True
