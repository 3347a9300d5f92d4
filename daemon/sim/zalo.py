"""A faithful simulator of the Zalo OA Open API and OAuth v4 (see shared zalo-api.md).

- ``POST /v4/oa/access_token``: form body, ``secret_key`` header; code exchange with PKCE and
  refresh with **single-use** refresh tokens; errors as HTTP 200 bodies with ``error`` and
  ``error_name``; ``expires_in`` as a string of seconds.
- ``GET /v4/oa/permission``: the consent page; redirects to ``redirect_uri`` with ``code``,
  ``oa_id`` and ``state`` (as if the OA admin clicked "allow").
- ``POST /v3.0/oa/message/cs``: consultation messages, validated like Zalo (2000 chars, 5
  buttons, list of 5, media element, file token); users outside the 7-day window get -230,
  non-followers -213; returns ``data.message_id``.
- ``POST /v2.0/oa/upload/image|gif|file``: multipart field ``file``; ids expire after 7 days (-100).
- ``GET /v3.0/oa/user/getlist`` (count <= 50, offset <= 9951) and ``GET /v3.0/oa/user/detail``.
- Every API call needs the ``access_token`` header: unknown -216, expired or replaced -220.

Everything received is recorded; ``faults`` switches inject error codes, HTTP errors, latency,
a rate limit (-32), and token expiry. The clock can be moved (``advance``).
"""

from __future__ import annotations

import asyncio
import bisect
import datetime as dt
import hashlib
import itertools
import secrets
import time
import unicodedata
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import orjson
from aiohttp import web

from ..zalo.oauth import code_challenge
from ..zalo.signature import signature_header

ACCESS_TTL_S = 90000  # "expires_in": "90000" (25 h)
REFRESH_TTL_S = 90 * 86400  # about 3 months
CODE_TTL_S = 600
ASSET_TTL_S = 7 * 86400
WINDOW_S = 7 * 86400
MAX_OFFSET = 9951
MAX_COUNT = 50

BUTTON_TYPES = {"oa.open.url", "oa.query.show", "oa.query.hide", "oa.open.phone", "oa.open.sms"}


@dataclass
class SimUser:
    user_id: str
    follower: bool = True
    last_interaction: float = 0.0  # epoch seconds
    tags: set[str] = field(default_factory=set)
    display_name: str = ""
    user_id_by_app: str = ""
    shared_info: dict[str, str] = field(default_factory=dict)


@dataclass
class Faults:
    # Per endpoint ("message", "upload", "getlist", "detail", "token"): queued outcomes for the next
    # calls; an int is a Zalo error code (HTTP 200 body), ("http", status) an HTTP error.
    next: dict[str, deque[Any]] = field(default_factory=dict)
    latency_s: float = 0.0
    rate_limit_per_min: int | None = None  # -32 past this many API calls per minute
    down: set[str] = field(default_factory=set)  # endpoints answering HTTP 503 until removed
    token_error_http_status: int = 200  # Zalo can answer token errors with HTTP 200
    expires_in_as_int: bool = False

    def queue(self, endpoint: str, *outcomes: Any) -> None:
        self.next.setdefault(endpoint, deque()).extend(outcomes)


def _mid() -> str:
    return secrets.token_hex(10)


class ZaloSim:
    def __init__(
        self,
        *,
        app_id: str = "1163843031413526746",
        app_secret: str = "sim-app-secret",
        oa_id: str = "2197174064623873199",
        oa_secret_key: str = "sim-oa-secret-key",
        access_ttl_s: int = ACCESS_TTL_S,
        refresh_ttl_s: int = REFRESH_TTL_S,
        invalidate_old_access: bool = True,
    ) -> None:
        self.app_id = app_id
        self.app_secret = app_secret
        self.oa_id = oa_id
        self.oa_secret_key = oa_secret_key
        self.access_ttl_s = access_ttl_s
        self.refresh_ttl_s = refresh_ttl_s
        self.invalidate_old_access = invalidate_old_access
        self.faults = Faults()
        self.offset = 0.0
        # Tokens: value -> record
        self.access_tokens: dict[str, dict[str, Any]] = {}
        self.refresh_tokens: dict[str, dict[str, Any]] = {}
        self.codes: dict[str, dict[str, Any]] = {}
        self.assets: dict[str, dict[str, Any]] = {}
        self.users: dict[str, SimUser] = {}
        self._sorted: list[tuple[float, int, str]] | None = None
        self._list_cache: dict[Any, list[str]] = {}
        self._seq = itertools.count()
        # What was received.
        self.messages: list[dict[str, Any]] = []
        self.uploads: list[dict[str, Any]] = []
        self.token_requests: list[dict[str, Any]] = []
        self.list_calls: list[dict[str, Any]] = []
        self.detail_calls: list[str] = []
        self.api_calls: list[tuple[float, str]] = []
        self.rejected_calls: list[dict[str, Any]] = []
        self.on_token_issued: list[Any] = []  # callbacks(pair) after a refresh was answered
        self.refreshes = 0
        self.changed = asyncio.Event()  # set whenever a request was handled

    # ------------------------------------------------------------------ clock and set-up

    def now(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds

    def issue_tokens(self) -> tuple[str, str]:
        """Tokens as API Explorer would hand them out (bootstrap for tests)."""
        return self._issue(None)

    def _issue(self, previous_access: str | None) -> tuple[str, str]:
        access = "sim-at-" + secrets.token_urlsafe(24)
        refresh = "sim-rt-" + secrets.token_urlsafe(24)
        now = self.now()
        self.access_tokens[access] = {"expires_at": now + self.access_ttl_s, "revoked": False}
        self.refresh_tokens[refresh] = {"expires_at": now + self.refresh_ttl_s, "used": False, "access": access}
        if previous_access and self.invalidate_old_access and previous_access in self.access_tokens:
            self.access_tokens[previous_access]["revoked"] = True
        return access, refresh

    def expire_access_tokens(self) -> None:
        for rec in self.access_tokens.values():
            rec["expires_at"] = min(rec["expires_at"], self.now() - 1)

    def revoke_refresh_tokens(self) -> None:
        for rec in self.refresh_tokens.values():
            rec["used"] = True

    def access_token_valid(self, token: str | None) -> bool:
        rec = self.access_tokens.get(token or "")
        return bool(rec) and not rec["revoked"] and rec["expires_at"] > self.now()

    def refresh_token_valid(self, token: str | None) -> bool:
        rec = self.refresh_tokens.get(token or "")
        return bool(rec) and not rec["used"] and rec["expires_at"] > self.now()

    def add_user(
        self,
        user_id: str | None = None,
        *,
        follower: bool = True,
        last_interaction: float | None = None,
        tags: set[str] | None = None,
        display_name: str = "",
    ) -> SimUser:
        uid = user_id or str(4_000_000_000_000_000_000 + next(self._seq) * 7919 + 17)
        user = SimUser(
            uid,
            follower,
            self.now() if last_interaction is None else last_interaction,
            set(tags or ()),
            display_name or f"User {uid[-4:]}",
            user_id_by_app=str(int(uid) + 1) if uid.isdigit() else "",
        )
        self.users[uid] = user
        self._sorted = None
        self._list_cache.clear()
        return user

    def add_users(self, n: int, *, follower: bool = True, spread_days: float = 0.0, start: float | None = None) -> list[str]:
        """n users with last interactions spread evenly over ``spread_days`` before ``start``."""
        base = self.now() if start is None else start
        ids = []
        for i in range(n):
            li = base - (spread_days * 86400.0 * i / max(n, 1)) if spread_days else base
            ids.append(self.add_user(follower=follower, last_interaction=li).user_id)
        return ids

    def interact(self, user_id: str) -> None:
        self.users[user_id].last_interaction = self.now()
        self._sorted = None
        self._list_cache.clear()

    # ------------------------------------------------------------------ webhooks to the daemon

    def event(self, event_name: str, user_id: str, **extra: Any) -> dict[str, Any]:
        """A webhook body shaped like Zalo's (ids as strings, timestamp in ms as a string)."""
        ts = str(int(self.now() * 1000))
        body: dict[str, Any] = {"app_id": self.app_id, "event_name": event_name, "timestamp": ts}
        if event_name in ("follow", "unfollow"):
            body.update(oa_id=self.oa_id, follower={"id": user_id}, source="oa_profile",
                        user_id_by_app=str(int(user_id) + 1) if user_id.isdigit() else "")
        elif event_name.startswith("oa_send_"):
            body.update(sender={"id": self.oa_id}, recipient={"id": user_id},
                        message={"msg_id": extra.pop("msg_id", _mid()), "text": extra.pop("text", "")})
        else:
            body.update(sender={"id": user_id}, recipient={"id": self.oa_id},
                        user_id_by_app=str(int(user_id) + 1) if user_id.isdigit() else "")
            if event_name.startswith("user_send_"):
                body["message"] = {"msg_id": extra.pop("msg_id", _mid()), "text": extra.pop("text", "hello")}
        body.update(extra)
        if event_name in ("follow",) or event_name.startswith("user_send_") or event_name == "user_submit_info":
            if user_id in self.users:
                self.interact(user_id)
                if event_name == "follow":
                    self.users[user_id].follower = True
        if event_name == "unfollow" and user_id in self.users:
            self.users[user_id].follower = False
        return body

    def sign(self, raw: bytes, body: dict[str, Any]) -> str:
        return signature_header(str(body.get("app_id", self.app_id)), raw, str(body.get("timestamp", "")), self.oa_secret_key)

    async def deliver(self, session: Any, url: str, body: dict[str, Any], *, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        raw = orjson.dumps(body)
        hdrs = {"Content-Type": "application/json", "X-ZEvent-Signature": self.sign(raw, body), **(headers or {})}
        async with session.post(url, data=raw, headers=hdrs) as resp:
            text = await resp.read()
            try:
                return resp.status, orjson.loads(text)
            except orjson.JSONDecodeError:
                return resp.status, text

    # ------------------------------------------------------------------ HTTP app

    @web.middleware
    async def _notify(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            return await handler(request)
        finally:
            self.changed.set()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=20 * 1024 * 1024, middlewares=[self._notify])
        app.router.add_post("/v4/oa/access_token", self._token)
        app.router.add_get("/v4/oa/permission", self._permission)
        app.router.add_post("/v3.0/oa/message/cs", self._message_cs)
        app.router.add_post("/v2.0/oa/message", self._message_v2)
        app.router.add_post("/v2.0/oa/upload/{kind}", self._upload)
        app.router.add_get("/v3.0/oa/user/getlist", self._getlist)
        app.router.add_get("/v3.0/oa/user/detail", self._detail)
        return app

    @staticmethod
    def _json(data: Any, status: int = 200) -> web.Response:
        return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")

    def _err(self, code: int, message: str) -> web.Response:
        return self._json({"error": code, "message": message})

    async def _fault(self, endpoint: str) -> web.Response | None:
        if self.faults.latency_s:
            await asyncio.sleep(self.faults.latency_s)
        if endpoint in self.faults.down:
            return self._json({"error": "service unavailable"}, 503)
        q = self.faults.next.get(endpoint)
        if q:
            item = q.popleft()
            if isinstance(item, tuple) and item[0] == "http":
                return self._json({"error": f"HTTP {item[1]}"}, item[1])
            return self._err(int(item), f"simulated error {item}")
        return None

    def _auth(self, request: web.Request, endpoint: str) -> web.Response | None:
        token = request.headers.get("access_token")
        self.api_calls.append((self.now(), endpoint))
        if self.faults.rate_limit_per_min is not None:
            recent = [t for t, _ in self.api_calls[-(self.faults.rate_limit_per_min + 1):] if t > self.now() - 60]
            if len(recent) > self.faults.rate_limit_per_min:
                return self._err(-32, "Your application reached limit call api")
        rec = self.access_tokens.get(token or "")
        if rec is None:
            self.rejected_calls.append({"endpoint": endpoint, "reason": "invalid"})
            return self._err(-216, "Access token is invalid")
        if rec["revoked"] or rec["expires_at"] <= self.now():
            self.rejected_calls.append({"endpoint": endpoint, "reason": "expired"})
            return self._err(-220, "access_token is expired or removed")
        return None

    # --- OAuth

    async def _permission(self, request: web.Request) -> web.Response:
        q = request.query
        if q.get("app_id") != self.app_id:
            return self._json({"error": -14002, "error_name": "Invalid appId"})
        if not q.get("redirect_uri"):
            return self._json({"error": -14003, "error_name": "Invalid redirect uri"})
        code = "sim-code-" + secrets.token_urlsafe(16)
        self.codes[code] = {"challenge": q.get("code_challenge", ""), "expires_at": self.now() + CODE_TTL_S, "used": False}
        sep = "&" if "?" in q["redirect_uri"] else "?"
        location = q["redirect_uri"] + sep + urlencode({"code": code, "oa_id": self.oa_id, "state": q.get("state", "")})
        raise web.HTTPFound(location)

    def grant_code(self, challenge: str) -> str:
        """The code an OA admin's consent would produce (without a browser)."""
        code = "sim-code-" + secrets.token_urlsafe(16)
        self.codes[code] = {"challenge": challenge, "expires_at": self.now() + CODE_TTL_S, "used": False}
        return code

    def _token_error(self, code: int, name: str, reason: str = "") -> web.Response:
        body = {"error": code, "error_name": name, "error_reason": reason, "ref_doc": "https://developers.zalo.me/docs/"}
        return self._json(body, self.faults.token_error_http_status)

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        record = {k: form.get(k) for k in ("app_id", "grant_type", "refresh_token", "code", "code_verifier")}
        record["secret_key_ok"] = request.headers.get("secret_key") == self.app_secret
        self.token_requests.append(record)
        fault = await self._fault("token")
        if fault is not None:
            return fault
        if form.get("app_id") != self.app_id:
            return self._token_error(-14002, "Invalid appId")
        if request.headers.get("secret_key") != self.app_secret:
            return self._token_error(-14001, "Invalid secret key")
        grant = form.get("grant_type")
        if grant == "refresh_token":
            rt = str(form.get("refresh_token") or "")
            rec = self.refresh_tokens.get(rt)
            if rec is None or rec["used"] or rec["expires_at"] <= self.now():
                return self._token_error(-14014, "Invalid refresh token", "refresh token is invalid or already used")
            rec["used"] = True  # single use
            access, refresh = self._issue(rec["access"])
        elif grant == "authorization_code":
            code = str(form.get("code") or "")
            rec = self.codes.get(code)
            if rec is None or rec["used"] or rec["expires_at"] <= self.now():
                return self._token_error(-14014, "Invalid code", "code has expired or was used")
            if code_challenge(str(form.get("code_verifier") or "")) != rec["challenge"]:
                return self._token_error(-14019, "Invalid code verifier")
            rec["used"] = True
            access, refresh = self._issue(None)
        else:
            return self._token_error(-14004, "Invalid grant_type")
        self.refreshes += 1
        expires: Any = self.access_ttl_s if self.faults.expires_in_as_int else str(self.access_ttl_s)
        resp = self._json({"access_token": access, "refresh_token": refresh, "expires_in": expires})
        await resp.prepare(request)
        await resp.write_eof()
        for cb in list(self.on_token_issued):
            cb((access, refresh))
        return resp

    # --- messages

    def _user_problem(self, user_id: Any) -> web.Response | None:
        if not isinstance(user_id, str) or not user_id.isdigit():
            return self._err(-201, "user_id is invalid!")
        user = self.users.get(user_id)
        if user is None:
            return self._err(-201, "user_id is invalid!")
        if not user.follower and self.now() - user.last_interaction > WINDOW_S:
            return self._err(-213, "User has not followed OA")
        if self.now() - user.last_interaction > WINDOW_S:
            return self._err(-230, "User has not interacted with the OA in the past 7 days")
        return None

    def _asset(self, asset_id: Any, kinds: tuple[str, ...]) -> web.Response | None:
        rec = self.assets.get(str(asset_id))
        if rec is None or rec["kind"] not in kinds:
            return self._err(-201, "attachment_id is invalid!")
        if rec["expires_at"] <= self.now():
            return self._err(-100, "attachment_id was expired")
        return None

    def _check_buttons(self, buttons: Any) -> web.Response | None:
        if not isinstance(buttons, list) or not buttons:
            return self._err(-201, "buttons is invalid!")
        if len(buttons) > 5:
            return self._err(-210, "Parameter exceeds allowable limit")
        for b in buttons:
            if not isinstance(b, dict) or b.get("type") not in BUTTON_TYPES or not isinstance(b.get("title"), str):
                return self._err(-201, "button is invalid!")
            p = b.get("payload")
            t = b["type"]
            if t == "oa.open.url" and not (isinstance(p, dict) and isinstance(p.get("url"), str)):
                return self._err(-201, "payload.url is invalid!")
            if t in ("oa.query.show", "oa.query.hide") and not isinstance(p, str):
                return self._err(-201, "payload is invalid!")
            if t in ("oa.open.phone", "oa.open.sms") and not (isinstance(p, dict) and isinstance(p.get("phone_code"), str)):
                return self._err(-201, "payload.phone_code is invalid!")
        return None

    def _check_message(self, msg: Any) -> web.Response | None:
        if not isinstance(msg, dict) or not msg:
            return self._err(-201, "message is invalid!")
        text = msg.get("text")
        if text is not None:
            if not isinstance(text, str):
                return self._err(-201, "text is invalid!")
            if len(unicodedata.normalize("NFC", text)) > 2000:
                return self._err(-210, "Parameter exceeds allowable limit")
        att = msg.get("attachment")
        if att is None:
            return None if isinstance(text, str) and text else self._err(-201, "message is invalid!")
        if not isinstance(att, dict):
            return self._err(-201, "attachment is invalid!")
        payload = att.get("payload")
        if att.get("type") == "file":
            if not isinstance(payload, dict) or "token" not in payload:
                return self._err(-201, "payload.token is invalid!")
            return self._asset(payload["token"], ("file",))
        if att.get("type") != "template" or not isinstance(payload, dict):
            return self._err(-233, "message type is invalid or not support")
        ttype = payload.get("template_type")
        if ttype is None:
            return self._check_buttons(payload.get("buttons"))
        if ttype == "media":
            els = payload.get("elements")
            if not isinstance(els, list) or len(els) != 1 or not isinstance(els[0], dict):
                return self._err(-201, "elements is invalid!")
            el = els[0]
            mt = el.get("media_type")
            if mt not in ("image", "gif", "sticker"):
                return self._err(-201, "media_type is invalid!")
            if mt == "gif" and not (el.get("width") and el.get("height")):
                return self._err(-201, "width is invalid!")
            if ("url" in el) == ("attachment_id" in el):
                return self._err(-201, "elements is invalid!")
            if "attachment_id" in el and mt != "sticker":
                return self._asset(el["attachment_id"], ("image", "gif"))
            if "url" in el and not str(el["url"]).startswith(("http://", "https://")):
                return self._err(-201, "url is invalid!")
            return None
        if ttype == "list":
            els = payload.get("elements")
            if not isinstance(els, list) or not els:
                return self._err(-201, "elements is invalid!")
            if len(els) > 5:
                return self._err(-210, "Parameter exceeds allowable limit")
            for el in els:
                if not isinstance(el, dict) or not isinstance(el.get("title"), str) or not el["title"]:
                    return self._err(-201, "title is invalid!")
                act = el.get("default_action")
                if act is not None and (not isinstance(act, dict) or act.get("type") not in BUTTON_TYPES):
                    return self._err(-201, "default_action is invalid!")
            if payload.get("buttons"):
                return self._check_buttons(payload["buttons"])
            return None
        if ttype == "request_user_info":
            els = payload.get("elements")
            if not isinstance(els, list) or len(els) != 1:
                return self._err(-201, "elements is invalid!")
            return None
        return self._err(-233, "message type is invalid or not support")

    async def _message_cs(self, request: web.Request) -> web.Response:
        problem = self._auth(request, "message")
        if problem is not None:
            return problem
        fault = await self._fault("message")
        if fault is not None:
            return fault
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return self._err(-201, "body is invalid!")
        if not isinstance(body, dict) or not isinstance(body.get("recipient"), dict):
            return self._err(-201, "recipient is invalid!")
        uid = body["recipient"].get("user_id")
        problem = self._user_problem(uid) or self._check_message(body.get("message"))
        if problem is not None:
            self.rejected_calls.append({"endpoint": "message", "user_id": uid, "body": orjson.loads(problem.body)})
            return problem
        message_id = _mid()
        self.messages.append({"user_id": uid, "message": body["message"], "message_id": message_id, "at": self.now()})
        return self._json(
            {
                "data": {"message_id": message_id, "user_id": uid, "sent_time": str(int(self.now() * 1000)),
                         "quota": {"quota_type": "reply", "remain": "8", "total": "8"}},
                "error": 0,
                "message": "Success",
            }
        )

    async def _message_v2(self, request: web.Request) -> web.Response:
        problem = self._auth(request, "message_v2")
        if problem is not None:
            return problem
        return self._err(-240, "MessageV2 API has been shut down, please switch to MessageV3")

    # --- uploads

    async def _upload(self, request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        if kind not in ("image", "gif", "file"):
            raise web.HTTPNotFound()
        problem = self._auth(request, "upload")
        if problem is not None:
            return problem
        fault = await self._fault("upload")
        if fault is not None:
            return fault
        try:
            form = await request.post()
        except ValueError:
            return self._err(-201, "file is invalid!")
        f = form.get("file")
        if f is None or not hasattr(f, "file"):
            return self._err(-201, "file is invalid!")
        content = f.file.read()
        name = f.filename or ""
        ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
        limits = {"image": (1024 * 1024, {"jpg", "jpeg", "png"}), "gif": (5 * 1024 * 1024, {"gif"}),
                  "file": (5 * 1024 * 1024, {"pdf", "doc", "docx", "csv"})}
        max_size, exts = limits[kind]
        if ext not in exts:
            return self._err(-201, "file type is invalid!")
        if len(content) > max_size:
            return self._err(-210, "Parameter exceeds allowable limit")
        asset_id = hashlib.sha256(content + secrets.token_bytes(8)).hexdigest()[:32]
        self.assets[asset_id] = {"kind": kind, "expires_at": self.now() + ASSET_TTL_S, "name": name, "size": len(content)}
        self.uploads.append({"kind": kind, "name": name, "size": len(content), "id": asset_id})
        key = "token" if kind == "file" else "attachment_id"
        return self._json({"data": {key: asset_id}, "error": 0, "message": "Success"})

    def expire_assets(self) -> None:
        for rec in self.assets.values():
            rec["expires_at"] = self.now() - 1

    # --- users

    @staticmethod
    def _data_param(request: web.Request) -> dict[str, Any] | None:
        try:
            data = orjson.loads(request.query.get("data", ""))
        except orjson.JSONDecodeError:
            return None
        return data if isinstance(data, dict) else None

    def _day(self, ts: float) -> dt.date:
        return dt.datetime.fromtimestamp(ts, dt.timezone(dt.timedelta(hours=7))).date()  # Vietnam time

    def _period_bounds(self, period: str) -> tuple[float, float] | None:
        tz = dt.timezone(dt.timedelta(hours=7))
        today = self._day(self.now())

        def start(d: dt.date) -> float:
            return dt.datetime(d.year, d.month, d.day, tzinfo=tz).timestamp()

        if period == "TODAY":
            return start(today), float("inf")
        if period == "YESTERDAY":
            return start(today - dt.timedelta(days=1)), start(today)
        if period in ("L7D", "L30D"):
            days = 7 if period == "L7D" else 30
            return start(today - dt.timedelta(days=days - 1)), float("inf")
        if ":" in period:
            a, b = period.split(":", 1)
            try:
                d1 = dt.datetime.strptime(a, "%Y_%m_%d").date()
                d2 = dt.datetime.strptime(b, "%Y_%m_%d").date()
            except ValueError:
                return None
            if d2 < d1:
                return None
            return start(d1), start(d2 + dt.timedelta(days=1))
        return None

    def _filtered(self, is_follower: bool | None, period: str | None, tag: str | None) -> list[str] | None:
        key = (is_follower, period, tag)
        cached = self._list_cache.get(key)
        if cached is not None:
            return cached
        if self._sorted is None:
            self._sorted = sorted((u.last_interaction, i, u.user_id) for i, u in enumerate(self.users.values()))
        rows = self._sorted
        if period:
            bounds = self._period_bounds(period)
            if bounds is None:
                return None
            lo = bisect.bisect_left(rows, (bounds[0], -1, ""))
            hi = bisect.bisect_left(rows, (bounds[1], -1, "")) if bounds[1] != float("inf") else len(rows)
            rows = rows[lo:hi]
        out = []
        for _, _, uid in rows:
            u = self.users[uid]
            if is_follower is not None and u.follower != is_follower:
                continue
            if tag and tag not in u.tags:
                continue
            out.append(uid)
        self._list_cache[key] = out
        return out

    async def _getlist(self, request: web.Request) -> web.Response:
        problem = self._auth(request, "getlist")
        if problem is not None:
            return problem
        fault = await self._fault("getlist")
        if fault is not None:
            return fault
        data = self._data_param(request)
        if data is None:
            return self._err(-201, "data is invalid!")
        offset, count = data.get("offset", 0), data.get("count", 15)
        if not isinstance(offset, int) or not isinstance(count, int) or offset < 0 or count < 1:
            return self._err(-201, "offset or count is invalid!")
        if count > MAX_COUNT or offset > MAX_OFFSET:
            self.list_calls.append({**data, "rejected": True})
            return self._err(-210, "Parameter exceeds allowable limit")
        fol = data.get("is_follower")
        is_follower = None if fol is None else (fol is True or fol == "true")
        users = self._filtered(is_follower, data.get("last_interaction_period"), data.get("tag_name"))
        if users is None:
            return self._err(-201, "last_interaction_period is invalid!")
        self.list_calls.append(data)
        page = users[offset : offset + count]
        return self._json(
            {"data": {"total": len(users), "count": len(page), "offset": offset, "users": [{"user_id": u} for u in page]},
             "error": 0, "message": "Success"}
        )

    async def _detail(self, request: web.Request) -> web.Response:
        problem = self._auth(request, "detail")
        if problem is not None:
            return problem
        fault = await self._fault("detail")
        if fault is not None:
            return fault
        data = self._data_param(request) or {}
        uid = str(data.get("user_id", ""))
        self.detail_calls.append(uid)
        u = self.users.get(uid)
        if u is None:
            return self._err(-213, "User has not followed OA")
        return self._json(
            {
                "data": {
                    "user_id": u.user_id,
                    "user_id_by_app": u.user_id_by_app,
                    "display_name": u.display_name,
                    "user_alias": "",
                    "is_sensitive": False,
                    "user_last_interaction_date": self._day(u.last_interaction).strftime("%d/%m/%Y"),
                    "user_is_follower": u.follower,
                    "avatar": f"https://s120-ava-talk.zadn.vn/sim/{u.user_id}.jpg",
                    "avatars": {"120": f"https://s120-ava-talk.zadn.vn/sim/{u.user_id}.jpg"},
                    "tags_and_notes_info": {"notes": [], "tag_names": sorted(u.tags)},
                    "shared_info": dict(u.shared_info),
                },
                "error": 0,
                "message": "Success",
            }
        )
