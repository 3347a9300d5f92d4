"""A faithful simulator of CleverTap's /1/upload and of its webhook sender (clevertap-api.md).

Upload: ``X-CleverTap-Account-Id``/``X-CleverTap-Passcode`` (401 ``Invalid Credentials``);
``{"d": [...]}`` with at most 1000 records; answers ``{"status": success|partial|fail,
"processed": N, "unprocessed": [...]}`` with HTTP 200 even when records fail, each failure
naming the 1-based "Skipped record number"; HTTP 429 past ``max_concurrency`` uploads in flight.
Per-record checks follow the documented codes (509, 512, 513, 516, 523, 524, 525).

Webhook sender: posts the default profile payload (list or single object, lower or title
case keys), the ``is_test`` ping, or a custom body, with Basic auth, a 3 s timeout and one retry.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from ..clevertap.records import RESERVED_EVENTS

MAX_RECORDS = 1000
E164 = re.compile(r"^\+[1-9]\d{7,14}$")
FORBIDDEN_KEY_CHARS = set("%><!|&.:;$'\"\\")


@dataclass
class Faults:
    next_http: deque[int] = field(default_factory=deque)  # HTTP statuses for the next calls
    down_status: int | None = None  # every call answers this status until cleared (an outage)
    latency_s: float = 0.0
    fail_555: int = 0  # the next N records get per-record code 555 (server error, retryable)
    record_error: Any = None  # or: callable(record) -> (code, message) | None


class CleverTapSim:
    def __init__(self, account_id: str = "SIM-ACCOUNT", passcode: str = "sim-passcode", *, max_concurrency: int = 15) -> None:
        self.account_id = account_id
        self.passcode = passcode
        self.max_concurrency = max_concurrency
        self.faults = Faults()
        self.profiles: dict[str, dict[str, Any]] = {}  # identity -> merged profileData
        self.profile_updates: list[dict[str, Any]] = []  # every processed profile record
        self.events: list[dict[str, Any]] = []  # every processed event record
        self.calls: list[dict[str, Any]] = []  # per /1/upload call: records, status, http
        self.inflight = 0
        self.peak_inflight = 0
        self.changed = asyncio.Event()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=50 * 1024 * 1024)
        app.router.add_post("/1/upload", self._upload)
        return app

    @staticmethod
    def _json(data: Any, status: int = 200) -> web.Response:
        return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")

    def events_named(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("evtName") == name]

    def _check(self, rec: Any) -> tuple[int, str] | None:
        if not isinstance(rec, dict):
            return 524, "Record is neither event nor profile"
        rtype = rec.get("type")
        if rtype not in ("profile", "event"):
            return 524, "Record is neither event nor profile"
        if not any(rec.get(k) for k in ("identity", "objectId", "FBID", "GPID")):
            return 523, "Missing identity"
        if "ts" in rec and (isinstance(rec["ts"], bool) or not isinstance(rec["ts"], int) or rec["ts"] > 10**11):
            return 525, "Timestamp is not in epoch seconds"
        if rtype == "event":
            name = rec.get("evtName")
            if not isinstance(name, str) or not name:
                return 509, "Event Name is incorrect. ErrorCode: 509 - Event name is mandatory"
            if name in RESERVED_EVENTS:
                return 513, "Event Name is incorrect. ErrorCode: 513 - Trying to raise a restricted system event"
            if FORBIDDEN_KEY_CHARS & set(name):
                return 509, "Event Name is incorrect. ErrorCode: 509 - Event name has invalid characters"
            data = rec.get("evtData") or {}
            if not isinstance(data, dict):
                return 512, "Event data is incorrect"
            for k, v in data.items():
                if isinstance(v, (dict, list)):
                    return 512, f"Event data is incorrect. 512 - Only Items can have a nested structure, incorrect nested structure for field : {k}"
        else:
            data = rec.get("profileData")
            if not isinstance(data, dict):
                return 524, "profileData is missing"
            phone = data.get("Phone")
            if phone is not None and (not isinstance(phone, str) or not E164.match(phone)):
                return 516, "Phone number is invalid"
            for k in data:
                if FORBIDDEN_KEY_CHARS & set(k) or len(k) > 120:
                    return 512, f"Invalid property key {k}"
        return None

    async def _upload(self, request: web.Request) -> web.Response:
        if (
            request.headers.get("X-CleverTap-Account-Id") != self.account_id
            or request.headers.get("X-CleverTap-Passcode") != self.passcode
        ):
            self.calls.append({"records": 0, "http": 401})
            self.changed.set()
            return self._json({"status": "fail", "error": "Invalid Credentials", "code": 401}, 401)
        if self.inflight >= self.max_concurrency:
            self.calls.append({"records": 0, "http": 429})
            self.changed.set()
            return self._json({"status": "fail", "error": "Too many concurrent requests", "code": 429}, 429)
        self.inflight += 1
        self.peak_inflight = max(self.peak_inflight, self.inflight)
        try:
            if self.faults.latency_s:
                await asyncio.sleep(self.faults.latency_s)
            if self.faults.down_status is not None:
                self.calls.append({"records": 0, "http": self.faults.down_status})
                return self._json({"status": "fail", "error": "Service unavailable"}, self.faults.down_status)
            if self.faults.next_http:
                status = self.faults.next_http.popleft()
                self.calls.append({"records": 0, "http": status})
                return self._json({"status": "fail", "error": f"HTTP {status}", "code": status}, status)
            try:
                body = orjson.loads(await request.read())
                records = body["d"]
                if not isinstance(records, list):
                    raise TypeError
            except (orjson.JSONDecodeError, KeyError, TypeError):
                self.calls.append({"records": 0, "http": 400})
                return self._json({"status": "fail", "error": "Malformed request", "code": 400}, 400)
            if len(records) > MAX_RECORDS:
                self.calls.append({"records": len(records), "http": 400})
                return self._json({"status": "fail", "error": f"Max {MAX_RECORDS} records allowed per request", "code": 400}, 400)
            unprocessed = []
            processed = 0
            for i, rec in enumerate(records, start=1):
                problem = self._check(rec)
                if problem is None and self.faults.fail_555 > 0:
                    self.faults.fail_555 -= 1
                    problem = (555, "Miscellaneous server error")
                if problem is None and self.faults.record_error is not None:
                    problem = self.faults.record_error(rec)
                if problem is not None:
                    code, err = problem
                    unprocessed.append({"status": "fail", "code": code, "error": f"{err}. Skipped record number : {i}", "record": rec})
                    continue
                processed += 1
                if rec["type"] == "profile":
                    ident = rec.get("identity") or rec.get("objectId")
                    self.profiles.setdefault(str(ident), {}).update(rec["profileData"])
                    self.profile_updates.append(rec)
                else:
                    self.events.append(rec)
            status = "success" if not unprocessed else ("partial" if processed else "fail")
            self.calls.append({"records": len(records), "http": 200, "status": status, "processed": processed})
            self.changed.set()
            return self._json({"status": status, "processed": processed, "unprocessed": unprocessed})
        finally:
            self.inflight -= 1
            self.changed.set()


class WebhookSender:
    """Posts CleverTap webhook requests the way CleverTap does (timeout 3 s, one retry)."""

    def __init__(self, session: aiohttp.ClientSession, url: str, user: str, password: str, *,
                 timeout_s: float = 3.0, retries: int = 1) -> None:
        self.session = session
        self.url = url
        self.auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.retries = retries
        self.sent: list[dict[str, Any]] = []  # every attempt: status, body, seconds

    async def post(self, body: Any, *, auth: str | None = None, raw: bytes | None = None) -> tuple[int, Any]:
        data = raw if raw is not None else orjson.dumps(body)
        status, answer = 0, None
        for _attempt in range(1 + self.retries):
            loop = asyncio.get_running_loop()
            started = loop.time()
            try:
                async with self.session.post(
                    self.url, data=data, timeout=self.timeout,
                    headers={"Content-Type": "application/json", "Authorization": auth if auth is not None else self.auth},
                ) as resp:
                    status = resp.status
                    text = await resp.read()
                    try:
                        answer = orjson.loads(text)
                    except orjson.JSONDecodeError:
                        answer = text
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                status, answer = 0, repr(exc)
            self.sent.append({"status": status, "seconds": loop.time() - started, "size": len(data)})
            if status == 200:
                break
        return status, answer

    async def ping(self) -> tuple[int, Any]:
        profiles = [{"Identity": f"UserId{i}", "Email": f"user{i}@example.com", "push_token": "Token"} for i in range(5)]
        return await self.post({"is_test": True, "targetId": 1234, "key_values": {"key": "value"}, "profiles": profiles})

    @staticmethod
    def default_payload(target_id: int, profiles: list[dict[str, Any]], key_values: dict[str, Any] | None = None, *,
                        single_object: bool = False, title_case: bool = False) -> dict[str, Any]:
        def keys(p: dict[str, Any]) -> dict[str, Any]:
            if not title_case:
                return p
            names = {"identity": "Identity", "email": "Email", "objectId": "ObjectId", "profileData": "ProfileData",
                     "event_properties": "Event_properties", "push_token": "Push_token"}
            return {names.get(k, k): v for k, v in p.items()}

        shaped = [keys(p) for p in profiles]
        body: dict[str, Any] = {"targetId": target_id, "key_values": key_values or {}}
        body["profiles"] = shaped[0] if single_object and len(shaped) == 1 else shaped
        if title_case:
            body = {"TargetId": body["targetId"], "Key_Values": body["key_values"], "Profiles": body["profiles"]}
        return body

    async def campaign(self, target_id: int, profiles: list[dict[str, Any]], key_values: dict[str, Any] | None = None,
                       **kw: Any) -> tuple[int, Any]:
        return await self.post(self.default_payload(target_id, profiles, key_values, **kw))
