"""HTTP routes. Handlers validate, store, answer: they never call Zalo or CleverTap."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import structlog
from aiohttp import web

from . import jsonutil, logs
from .appkeys import CONFIG, METRICS, STATE
from .clevertap.webhook import PayloadError
from .flows.campaign import plan_campaign, summarize
from .metrics import CONTENT_TYPE_LATEST
from .zalo import signature
from .zalo.events import EventError, parse_body, parse_event
from .zalo.messages import SpecError
from .zalo.oauth import TokenEndpointError

log = logs.get_logger("web")

OAUTH_STATE_TTL_S = 600.0  # Zalo's authorization code lives 10 minutes


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json", headers=headers)


def json_error(status: int, code: str, message: str, headers: dict[str, str] | None = None, **extra: Any) -> web.Response:
    return json_response({"error": {"code": code, "message": message, **extra}}, status, headers)


# ---------------------------------------------------------------------------- middlewares


@web.middleware
async def request_context(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    rid = request.headers.get("X-Request-Id", "")[:64] or uuid.uuid4().hex[:16]
    route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
    started = time.monotonic()
    metrics = request.app[METRICS]
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=rid)
    status = 500
    try:
        try:
            resp = await handler(request)
        except web.HTTPException as exc:
            resp = _http_exception_json(exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug: never crash, never leak details
            log.exception("request_failed", route=route, error=repr(exc))
            resp = json_error(500, "internal_error", "internal error; see the daemon log", request_id=rid)
        resp.headers["X-Request-Id"] = rid
        status = resp.status
        return resp
    finally:
        metrics.http_requests.labels(route, str(status)).inc()
        metrics.http_seconds.labels(route).observe(time.monotonic() - started)
        structlog.contextvars.clear_contextvars()


def _http_exception_json(exc: web.HTTPException) -> web.Response:
    codes = {
        404: ("not_found", "no such route"),
        405: ("method_not_allowed", "method not allowed on this route"),
        413: ("body_too_large", "request body is larger than server.max_body_bytes"),
    }
    code, message = codes.get(exc.status, ("http_error", exc.reason))
    headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "www-authenticate")}
    return json_error(exc.status, code, message, headers=headers)


async def read_body(request: web.Request, source: str) -> bytes:
    limit = request.app[CONFIG].server.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        request.app[METRICS].rejections.labels(source, "body_too_large").inc()
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        request.app[METRICS].rejections.labels(source, "body_too_large").inc()
        raise


# ---------------------------------------------------------------------------- Zalo webhook


def _reject(request: web.Request, source: str, status: int, code: str, message: str, **kw: Any) -> web.Response:
    request.app[METRICS].rejections.labels(source, code).inc()
    log.warning("webhook_rejected", source=source, reason=code, detail=message)
    return json_error(status, code, message, **kw)


async def zalo_webhook(request: web.Request) -> web.Response:
    cfg = request.app[CONFIG]
    st = request.app[STATE]
    raw = await read_body(request, "zalo")
    try:
        data = parse_body(raw)
    except EventError as exc:
        return _reject(request, "zalo", 400, "malformed_json", str(exc))
    ts = data.get("timestamp")
    ts_str = ts if isinstance(ts, str) else (str(ts) if isinstance(ts, int) and not isinstance(ts, bool) else None)
    header = request.headers.get("X-ZEvent-Signature")
    if not header:
        return _reject(request, "zalo", 401, "missing_signature", "X-ZEvent-Signature header is missing")
    if ts_str is None:
        return _reject(request, "zalo", 401, "bad_signature", "body has no timestamp to verify the signature with")
    secrets = cfg.secrets
    matched = signature.verify(
        header,
        raw,
        app_id=cfg.zalo.app_id,
        timestamp=ts_str,
        oa_secret_key=secrets.zalo_oa_secret_key.reveal() if secrets.zalo_oa_secret_key else "",
        app_secret=secrets.zalo_app_secret.reveal() if secrets.zalo_app_secret else None,
        oa_id=cfg.zalo.oa_id,
        variants=cfg.zalo.signature_variants,
    )
    if matched is None:
        return _reject(request, "zalo", 401, "bad_signature", "X-ZEvent-Signature does not match")
    if matched != "standard":
        log.warning("zalo_signature_variant_matched", variant=matched)
    app_id = data.get("app_id")
    if str(app_id) != cfg.zalo.app_id:
        return _reject(request, "zalo", 401, "wrong_app", "app_id is not this daemon's Zalo app")
    try:
        ts_ms = int(ts_str)
    except ValueError:
        return _reject(request, "zalo", 401, "bad_timestamp", "timestamp is not epoch milliseconds")
    age = abs(st.clock() - ts_ms / 1000.0)
    if age > cfg.zalo.signature_max_age_s:
        return _reject(
            request, "zalo", 401, "stale_timestamp",
            f"timestamp is {age:.0f}s away from now (limit {cfg.zalo.signature_max_age_s:.0f}s)",
        )
    try:
        event = parse_event(data, cfg.zalo.oa_id)
    except EventError as exc:
        return _reject(request, "zalo", 400, "bad_event", str(exc))
    metrics = request.app[METRICS]
    payload = {"event": data, "received_at": st.clock()}
    if not event.known or not event.user_ids:
        note = f"ignored: unknown event {event.event_name}" if not event.known else "ignored: no user id in event"
        job_id = await st.store.enqueue(
            "zalo_event", payload, dedupe_key=event.dedupe_key(),
            dedupe_window_s=cfg.webhooks.zalo.dedupe_window_s, state="ignored", note=note,
        )
        metrics.zalo_events.labels(_event_label(event.event_name, event.known), "ignored").inc()
        log.info("zalo_event_ignored", event_name=event.event_name, reason=note)
        return json_response({"ok": True, "ignored": True, "duplicate": job_id is None})
    job_id = await st.store.enqueue(
        "zalo_event", payload, dedupe_key=event.dedupe_key(), dedupe_window_s=cfg.webhooks.zalo.dedupe_window_s
    )
    result = "duplicate" if job_id is None else "stored"
    metrics.zalo_events.labels(event.event_name, result).inc()
    if request.headers.get("num_retry"):
        log.info("zalo_event_redelivered", event_name=event.event_name, num_retry=request.headers.get("num_retry"), result=result)
    return json_response({"ok": True, "duplicate": job_id is None})


def _event_label(name: str, known: bool) -> str:
    # Unknown names are attacker-controlled: keep metric label cardinality bounded.
    return name if known else "unknown"


# ---------------------------------------------------------------------------- CleverTap webhook


def _basic_auth_ok(header: str | None, user: str, password: str) -> bool:
    expected_user, expected_pw = user.encode(), password.encode()
    got_user, got_pw = b"", b""
    if header and header[:6].lower() == "basic ":
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True)
        except (binascii.Error, ValueError):
            decoded = b""
        got_user, _, got_pw = decoded.partition(b":")
    # Compare both parts every time (no short-circuit on the user name).
    ok_user = hmac.compare_digest(got_user, expected_user)
    ok_pw = hmac.compare_digest(got_pw, expected_pw)
    return ok_user and ok_pw and bool(expected_user) and bool(expected_pw)


async def clevertap_webhook(request: web.Request) -> web.Response:
    cfg = request.app[CONFIG]
    st = request.app[STATE]
    metrics = request.app[METRICS]
    s = cfg.secrets
    if not _basic_auth_ok(
        request.headers.get("Authorization"),
        s.clevertap_webhook_user.reveal() if s.clevertap_webhook_user else "",
        s.clevertap_webhook_password.reveal() if s.clevertap_webhook_password else "",
    ):
        return _unauthorized(request)
    raw = await read_body(request, "clevertap")
    try:
        data = jsonutil.loads(raw)
    except jsonutil.JSONError as exc:
        return _reject(request, "clevertap", 400, "malformed_json", f"body is not valid JSON: {exc}")
    try:
        plan = plan_campaign(data, cfg, st.identity)
    except PayloadError as exc:
        return _reject(request, "clevertap", 422, "invalid_payload", exc.message, field=exc.field)
    except SpecError as exc:
        return _reject(request, "clevertap", 422, "invalid_message", exc.message, field=exc.field)
    if plan.is_test:
        metrics.campaign_recipients.labels("test_ping").inc()
        log.info("clevertap_test_ping", campaign_id=plan.campaign_id)
        return json_response({"ok": True, "test": True})
    stored = await st.store.enqueue_many(plan.jobs + plan.reports) if plan.jobs or plan.reports else []
    summary = summarize(plan, stored[: len(plan.jobs)])
    metrics.campaign_recipients.labels("accepted").inc(summary["accepted"])
    metrics.campaign_recipients.labels("duplicate").inc(summary["duplicates"])
    metrics.campaign_recipients.labels("no_user_id").inc(plan.no_user_id)
    metrics.campaign_recipients.labels("invalid").inc(len(plan.invalid))
    log.info(
        "clevertap_campaign_received",
        campaign_id=plan.campaign_id,
        accepted=summary["accepted"],
        duplicates=summary["duplicates"],
        skipped_no_user_id=plan.no_user_id,
        invalid=len(plan.invalid),
    )
    return json_response({"ok": True, **summary})


def _unauthorized(request: web.Request) -> web.Response:
    request.app[METRICS].rejections.labels("clevertap", "unauthorized").inc()
    log.warning("webhook_rejected", source="clevertap", reason="unauthorized")
    return json_error(
        401, "unauthorized", "valid Basic authorization is required",
        headers={"WWW-Authenticate": 'Basic realm="zalo-bridge", charset="UTF-8"'},
    )


# ---------------------------------------------------------------------------- OAuth callback


async def oauth_callback(request: web.Request) -> web.Response:
    st = request.app[STATE]
    code = request.query.get("code", "")
    state = request.query.get("state", "")
    if not code or not state or len(state) > 200:
        return json_error(400, "invalid_request", "code and state query parameters are required")
    logs.register_secret(code)
    pending = await st.store.kv_take(f"oauth_state:{state}")
    if pending is None:
        log.warning("oauth_state_rejected", reason="unknown or already used")
        return json_error(400, "invalid_state", "unknown or already used state; run `zalo-bridge auth url` again")
    if st.clock() - pending.get("created_at", 0) > OAUTH_STATE_TTL_S:
        return json_error(400, "expired_state", "this authorization link has expired; run `zalo-bridge auth url` again")
    try:
        await st.exchange_code(code, pending["verifier"], source="oauth callback")
    except TokenEndpointError as exc:
        log.error("oauth_exchange_failed", error=str(exc))
        return json_error(400, "code_rejected", f"Zalo did not accept the authorization code: {exc}")
    return json_response({"ok": True, "message": "OA authorized; tokens stored"})


# ---------------------------------------------------------------------------- health


async def healthz(request: web.Request) -> web.Response:
    return json_response({"ok": True})


async def readyz(request: web.Request) -> web.Response:
    report = await request.app[STATE].readiness()
    return json_response(report, 200 if report["ready"] else 503)


async def metrics_handler(request: web.Request) -> web.Response:
    await request.app[STATE].refresh_gauges()
    body = request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def zalo_webhook_get(request: web.Request) -> web.Response:
    # No URL handshake is documented for OA webhooks; answer GETs so console checks succeed.
    return json_response({"ok": True})


def setup_routes(app: web.Application) -> None:
    app.router.add_post("/webhooks/zalo", zalo_webhook)
    app.router.add_get("/webhooks/zalo", zalo_webhook_get, allow_head=False)
    app.router.add_post("/webhooks/clevertap", clevertap_webhook)
    app.router.add_get("/oauth/zalo/callback", oauth_callback)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_handler)
