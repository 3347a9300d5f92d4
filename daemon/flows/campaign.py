"""Flow 2, campaign delivery: CleverTap webhooks -> Zalo messages -> outcome events.

:func:`plan_campaign` (pure) turns a webhook body into send jobs; :class:`Sender` is the worker
handler that sends one job through the shared throttle and reports the outcome to CleverTap as
a follow-up ``ct_record`` job committed together with the send job's final state.
"""

from __future__ import annotations

import asyncio
import hashlib
import mimetypes
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from .. import logs
from ..clevertap.records import event_record
from ..clevertap.webhook import Campaign, PayloadError, parse_campaign
from ..config import Config
from ..metrics import Metrics
from ..retry import backoff_delay
from ..store import Job, NewJob, Outcome, Store
from ..templating import render
from ..zalo import messages
from ..zalo.client import ZaloClient
from ..zalo.errors import Action, ZaloResult
from ..zalo.messages import SpecError
from .identity import IdentitySettings, identity_ref

log = logs.get_logger("campaign")

SEND_KIND = "zalo_send"
MESSAGE_SENT = "Zalo Message Sent"
MESSAGE_FAILED = "Zalo Message Failed"
ASSET_LIFETIME_S = 7 * 86400 - 6 * 3600  # Zalo keeps uploads 7 days; renew a little early


@dataclass
class CampaignPlan:
    campaign_id: str
    is_test: bool
    jobs: list[NewJob] = field(default_factory=list)
    reports: list[NewJob] = field(default_factory=list)  # failures reported to CleverTap at once
    no_user_id: int = 0
    invalid: list[dict[str, str]] = field(default_factory=list)


def spec_digest(spec: Any) -> str:
    return hashlib.sha256(orjson.dumps(spec, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def _select_spec(c: Campaign, templates: dict[str, dict[str, Any]], template_key: str) -> tuple[Any, str]:
    if c.message is not None:
        return c.message, "message"
    if c.template is not None:
        if c.template not in templates:
            known = ", ".join(sorted(templates)) or "none configured"
            where = "template" if c.custom else f"key_values.{template_key}"
            raise SpecError(where, f"unknown template {c.template!r} (known: {known})")
        return templates[c.template], f"templates.{c.template}"
    raise SpecError(
        "message",
        f"no message: give a `message` spec in a custom body, or name a template in key_values.{template_key}",
    )


def failure_record(settings: IdentitySettings, r_ref: dict[str, str], user_id: str | None, campaign_id: str,
                   code: str, reason: str, message_type: str | None) -> dict[str, Any] | None:
    ref = r_ref or (identity_ref(settings, user_id, {}) if user_id else None)
    if not ref:
        return None
    return event_record(
        ref,
        MESSAGE_FAILED,
        {"campaign_id": campaign_id, "zalo_user_id": user_id, "error_code": code, "reason": reason[:500],
         "message_type": message_type},
        int(time.time()),
    )


def plan_campaign(data: Any, cfg: Config, settings: IdentitySettings) -> CampaignPlan:
    """Validate a CleverTap webhook body and plan one send job per recipient.

    Raises PayloadError (bad shape) or SpecError (invalid message, naming the field) when
    nothing at all can be sent; recipients that fail on their own are reported in the plan.
    """
    hook = cfg.webhooks.clevertap
    c = parse_campaign(data, user_id_property=cfg.clevertap.user_id_property, template_key=hook.template_key)
    plan = CampaignPlan(c.campaign_id, c.is_test)
    if c.is_test:
        return plan
    raw_spec, _ = _select_spec(c, cfg.templates, hook.template_key)
    if not isinstance(raw_spec, dict):
        raise SpecError("message", "must be an object")
    first_error: SpecError | None = None
    for i, r in enumerate(c.recipients):
        ctx = {"Profile": r.profile, "Event": r.event, "Campaign": c.key_values}
        try:
            spec = messages.validate(render(raw_spec, ctx))
        except SpecError as exc:
            first_error = first_error or exc
            plan.invalid.append({"recipient": str(i), "field": exc.field, "error": exc.message})
            continue
        if r.user_id is None:
            plan.no_user_id += 1
            rec = failure_record(settings, r.ref, None, c.campaign_id, "no_user_id",
                                 f"profile has no {cfg.clevertap.user_id_property}", spec["type"])
            if rec:
                who = r.ref.get("identity") or r.ref.get("objectId")
                plan.reports.append(
                    NewJob("ct_record", {"records": [{"key": "event", "record": rec}]},
                           dedupe_key=f"ct:{c.campaign_id}:no_user_id:{who}", dedupe_window_s=hook.dedupe_window_s)
                )
            continue
        key = f"ct:{c.campaign_id}:{r.user_id}:{spec_digest(spec)}"
        plan.jobs.append(
            NewJob(
                SEND_KIND,
                {"campaign_id": c.campaign_id, "user_id": r.user_id, "ref": r.ref, "spec": spec},
                dedupe_key=key,
                dedupe_window_s=hook.dedupe_window_s,
            )
        )
    if first_error is not None and not plan.jobs and not plan.no_user_id:
        raise first_error
    return plan


class AssetCache:
    """File attachments: download once, upload to Zalo once, reuse the token for its 7-day life."""

    def __init__(self, store: Store, client: ZaloClient, session: aiohttp.ClientSession, *, max_bytes: int,
                 timeout_s: float = 60.0) -> None:
        self.store = store
        self.client = client
        self.session = session
        self.max_bytes = max_bytes
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._inflight: dict[str, asyncio.Task[tuple[str | None, ZaloResult | None]]] = {}

    @staticmethod
    def key(url: str) -> str:
        return "asset:file:" + hashlib.sha256(url.encode()).hexdigest()[:32]

    async def invalidate(self, url: str) -> None:
        await self.store.kv_delete(self.key(url))

    async def file_token(self, url: str, name: str | None) -> tuple[str | None, ZaloResult | None]:
        cached = await self.store.kv_get(self.key(url))
        if cached and cached.get("expires_at", 0) > self.store.clock():
            return cached["token"], None
        task = self._inflight.get(url)
        if task is None or task.done():
            task = asyncio.create_task(self._fetch_and_upload(url, name))
            self._inflight[url] = task
            task.add_done_callback(lambda _t: self._inflight.pop(url, None))
        return await asyncio.shield(task)

    async def _fetch_and_upload(self, url: str, name: str | None) -> tuple[str | None, ZaloResult | None]:
        try:
            async with self.session.get(url, timeout=self.timeout) as resp:
                if resp.status != 200:
                    action = Action.RETRY if resp.status >= 500 or resp.status == 429 else Action.PAYLOAD
                    return None, ZaloResult(action, message=f"download of {url} answered HTTP {resp.status}")
                if resp.content_length and resp.content_length > self.max_bytes:
                    return None, ZaloResult(Action.PAYLOAD, message=f"file at {url} is larger than {self.max_bytes} bytes")
                content = await resp.content.read(self.max_bytes + 1)
                ctype = resp.content_type
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            return None, ZaloResult(Action.RETRY, message=f"download of {url} failed: {type(exc).__name__}")
        if len(content) > self.max_bytes:
            return None, ZaloResult(Action.PAYLOAD, message=f"file at {url} is larger than {self.max_bytes} bytes")
        filename = name or urlsplit(url).path.rsplit("/", 1)[-1] or "attachment"
        if not ctype or ctype == "application/octet-stream":
            ctype = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        result = await self.client.call("POST", "/v2.0/oa/upload/file", upload=(filename, content, ctype))
        if not result.ok:
            return None, result
        token = (result.data or {}).get("token") if isinstance(result.data, dict) else None
        if not token:
            return None, ZaloResult(Action.RETRY, message="upload answer carried no token")
        await self.store.kv_put(self.key(url), {"token": token, "expires_at": self.store.clock() + ASSET_LIFETIME_S})
        return token, None


class Sender:
    """Worker handler for ``zalo_send`` jobs."""

    def __init__(self, client: ZaloClient, assets: AssetCache, cfg: Config, settings: IdentitySettings,
                 metrics: Metrics) -> None:
        self.client = client
        self.assets = assets
        self.cfg = cfg
        self.settings = settings
        self.metrics = metrics

    def _report(self, job: Job, name: str, data: dict[str, Any]) -> list[NewJob]:
        p = job.payload
        ref = p.get("ref") or identity_ref(self.settings, p["user_id"], {})
        if not ref:
            return []
        rec = event_record(ref, name, {"campaign_id": p["campaign_id"], "zalo_user_id": p["user_id"],
                                        "message_type": p["spec"]["type"], **data}, int(time.time()))
        return [NewJob("ct_record", {"records": [{"key": "event", "record": rec}]})]

    def _give_up(self, job: Job, state: str, result: ZaloResult) -> Outcome:
        reason = result.describe()
        follow = self._report(job, MESSAGE_FAILED, {"error_code": str(result.error or result.http_status or "transport"),
                                                    "reason": reason})
        log.info("zalo_send_failed", job_id=job.id, campaign_id=job.payload["campaign_id"], outcome=state,
                 error_code=result.error, reason=reason)
        if state == "dead":
            return Outcome.dead(reason, follow_ups=follow)
        return Outcome.failed(reason, follow_ups=follow)

    def _retry(self, job: Job, result: ZaloResult, *, soon: bool = False) -> Outcome:
        if job.attempts >= self.cfg.sender.max_attempts:
            return self._give_up(job, "dead", ZaloResult(result.action, result.error,
                                                           f"gave up after {job.attempts} attempts: {result.describe()}"))
        delay = 0.0 if soon else backoff_delay(job.attempts, self.cfg.sender.backoff_base_s, self.cfg.sender.backoff_max_s)
        return Outcome.retry(delay, result.describe())

    async def __call__(self, job: Job) -> Outcome:
        p = job.payload
        spec = p["spec"]
        file_token = None
        if spec["type"] == "file" and "url" in spec:
            file_token, problem = await self.assets.file_token(spec["url"], spec.get("name"))
            if problem is not None:
                return await self._classify(job, problem, file_url=spec["url"])
        message = messages.build(spec, file_token=file_token)
        result = await self.client.call(
            "POST", "/v3.0/oa/message/cs", json={"recipient": {"user_id": p["user_id"]}, "message": message}
        )
        if result.ok:
            data = result.data if isinstance(result.data, dict) else {}
            message_id = str(data.get("message_id") or "") or None
            log.debug("zalo_message_sent", job_id=job.id, campaign_id=p["campaign_id"], message_id=message_id)
            return Outcome.done(
                sent_message_id=message_id,
                follow_ups=self._report(job, MESSAGE_SENT, {"zalo_message_id": message_id}),
            )
        return await self._classify(job, result, file_url=spec.get("url") if spec["type"] == "file" else None)

    async def _classify(self, job: Job, result: ZaloResult, *, file_url: str | None = None) -> Outcome:
        a = result.action
        if a is Action.REUPLOAD and file_url:
            # The uploaded file expired (-100): upload again on the next attempt.
            await self.assets.invalidate(file_url)
            return self._retry(job, result, soon=True)
        if a in (Action.RETRY, Action.RATE_LIMITED, Action.REFRESH_TOKEN, Action.REUPLOAD):
            return self._retry(job, result)
        if a is Action.USER:
            return self._give_up(job, "failed", result)
        return self._give_up(job, "dead", result)


def summarize(plan: CampaignPlan, stored: Sequence[int | None]) -> dict[str, Any]:
    accepted = sum(1 for s in stored if s is not None)
    return {
        "campaign_id": plan.campaign_id,
        "accepted": accepted,
        "duplicates": len(stored) - accepted,
        "skipped_no_user_id": plan.no_user_id,
        "invalid": plan.invalid,
    }


__all__ = ["plan_campaign", "Sender", "AssetCache", "CampaignPlan", "PayloadError", "SpecError", "summarize", "SEND_KIND"]
