"""Flow 4, follower backfill: every follower's user_id reaches CleverTap.

``user/getlist`` pages 50 users at a time and never past offset 9951, so one query reaches at
most 10,000 users. A pass first asks for the total; an OA with more followers is listed in
slices by ``last_interaction_period`` date ranges (Vietnam dates), each range split until it
holds at most ``SLICE_MAX`` users, plus any configured tags. Users are deduplicated across
slices through the users table (users learned from webhooks count as known).

The pass is resumable: after every flushed batch of up to 1000 new users, the upload job, the
users rows and the pass position are committed together, so a restart continues from there.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import logs
from ..clevertap.records import profile_record
from ..config import Config
from ..metrics import Metrics
from ..retry import backoff_delay
from ..store import NewJob, Store
from ..throttle import BACKGROUND
from ..zalo.client import ZaloClient
from ..zalo.errors import Action
from ..zalo.events import normalize_phone
from .identity import IdentitySettings, identity_ref

log = logs.get_logger("backfill")

PASS_KEY = "backfill_pass"
LAST_KEY = "backfill_last"
PAGE = 50
MAX_OFFSET = 9951
LIST_LIMIT = MAX_OFFSET + PAGE  # 10,000 users reachable per query
SLICE_MAX = 9000  # split ranges above this (totals move while we list)
FLUSH_USERS = 1000
VN = dt.timezone(dt.timedelta(hours=7))


def day_str(d: dt.date) -> str:
    return d.strftime("%Y_%m_%d")


def parse_day(s: str) -> dt.date:
    return dt.datetime.strptime(s, "%Y_%m_%d").date()


def split_range(start: dt.date, end: dt.date, parts: int) -> list[tuple[dt.date, dt.date]]:
    """Split [start, end] (inclusive days) into up to ``parts`` contiguous ranges."""
    days = (end - start).days + 1
    parts = max(1, min(parts, days))
    out = []
    for i in range(parts):
        a = start + dt.timedelta(days=(days * i) // parts)
        b = start + dt.timedelta(days=(days * (i + 1)) // parts - 1)
        out.append((a, b))
    return out


class ListError(Exception):
    def __init__(self, message: str, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass
class BackfillSettings:
    since: str = "2014_01_01"
    tags: tuple[str, ...] = ()
    fetch_details: bool = False
    max_page_retries: int = 6


class Backfill:
    def __init__(
        self,
        store: Store,
        client: ZaloClient,
        cfg: Config,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.client = client
        self.cfg = cfg
        self.metrics = metrics
        self.clock = clock
        self.rng = rng or random.Random()
        self.identity = IdentitySettings.from_config(cfg)
        self.settings = BackfillSettings(
            since=cfg.backfill.since, tags=tuple(cfg.backfill.tags), fetch_details=cfg.backfill.fetch_details
        )
        self._lock = asyncio.Lock()
        self.last: dict[str, Any] | None = None
        self.running = False
        self.list_calls = 0

    # ------------------------------------------------------------------ Zalo calls

    async def _list(self, filt: dict[str, Any], offset: int) -> tuple[int, list[str]]:
        assert offset <= MAX_OFFSET
        query = {"offset": offset, "count": PAGE, "is_follower": True, **filt}
        for attempt in range(1, self.settings.max_page_retries + 1):
            self.list_calls += 1
            result = await self.client.call("GET", "/v3.0/oa/user/getlist", params=query, priority=BACKGROUND)
            if result.ok and isinstance(result.data, dict):
                users = [str(u.get("user_id")) for u in result.data.get("users") or [] if isinstance(u, dict) and u.get("user_id")]
                total = result.data.get("total", 0)
                try:
                    total = int(total)
                except (TypeError, ValueError):
                    total = 0
                self.metrics.backfill_listed.inc(len(users))
                return total, users
            transient = result.action in (Action.RETRY, Action.RATE_LIMITED, Action.REFRESH_TOKEN)
            if not transient or attempt == self.settings.max_page_retries:
                raise ListError(f"user/getlist failed: {result.describe()}", transient)
            delay = backoff_delay(attempt, 1.0, 60.0, rng=self.rng)
            log.warning("backfill_list_retry", error=result.describe(), attempt=attempt, delay_s=round(delay, 1))
            await asyncio.sleep(delay)
        raise ListError("unreachable", True)  # pragma: no cover

    async def _details(self, user_id: str) -> dict[str, Any]:
        result = await self.client.call("GET", "/v3.0/oa/user/detail", params={"user_id": user_id}, priority=BACKGROUND)
        if not result.ok or not isinstance(result.data, dict):
            return {}
        return result.data

    # ------------------------------------------------------------------ planning

    async def _plan(self, state: dict[str, Any]) -> None:
        """Decide the slices of a new pass (the first page of each final slice is kept)."""
        total, first = await self._list({}, 0)
        state["total"] = total
        if total <= LIST_LIMIT:
            state["slices"] = [{"key": "all", "filter": {}, "offset": len(first), "total": total, "done": not first or len(first) >= total}]
            state["pending"] = first
            return
        today = dt.datetime.fromtimestamp(self.clock(), VN).date()
        since = parse_day(self.settings.since)
        pending = [(since, today)]
        slices: list[dict[str, Any]] = []
        pending_users: list[str] = []
        while pending:
            a, b = pending.pop(0)
            period = f"{day_str(a)}:{day_str(b)}"
            n, page = await self._list({"last_interaction_period": period}, 0)
            if n > SLICE_MAX and a < b:
                parts = math.ceil(n / SLICE_MAX) + 1
                pending[:0] = split_range(a, b, parts)
                continue
            key = f"period:{period}"
            slices.append({"key": key, "filter": {"last_interaction_period": period}, "offset": len(page), "total": n,
                           "done": not page or len(page) >= n})
            pending_users.extend(page)
        for tag in self.settings.tags:
            key = f"tag:{tag}"
            n, page = await self._list({"tag_name": tag}, 0)
            slices.append({"key": key, "filter": {"tag_name": tag}, "offset": len(page), "total": n, "done": not page or len(page) >= n})
            pending_users.extend(page)
        covered = sum(s["total"] for s in slices if s["key"].startswith("period:"))
        state["slices"] = slices
        state["pending"] = pending_users
        state["unreachable"] = sum(max(0, s["total"] - LIST_LIMIT) for s in slices)
        if covered < total:
            state["unsliced"] = total - covered
            log.warning("backfill_unsliced_followers", total=total, covered_by_date_slices=covered,
                        hint="followers whose last interaction is before backfill.since are not listed")

    # ------------------------------------------------------------------ the pass

    async def run_pass(self) -> dict[str, Any]:
        """One pass (or the rest of an interrupted one). Never runs twice at once."""
        if self._lock.locked():
            return {"ok": False, "skipped": "a pass is already running"}
        async with self._lock:
            self.running = True
            started = time.monotonic()
            try:
                summary = await self._run()
                summary["ok"] = True
            except ListError as exc:
                summary = {"ok": False, "error": str(exc)}
                log.error("backfill_pass_failed", error=str(exc), resumable=True)
            finally:
                self.running = False
            summary["seconds"] = round(time.monotonic() - started, 3)
            summary["list_calls"] = self.list_calls
            self.last = {**summary, "finished_at": self.clock()}
            if summary["ok"]:
                self.metrics.backfill_seconds.set(summary["seconds"])
                self.metrics.backfill_last_success.set(self.clock())
            await self.store.kv_put(LAST_KEY, self.last)
            return summary

    async def _run(self) -> dict[str, Any]:
        state = await self.store.kv_get(PASS_KEY)
        resumed = bool(state)
        if not state:
            state = {"started_at": self.clock(), "uploaded": 0, "listed": 0, "no_identity": 0}
            await self._plan(state)
            await self.store.kv_put(PASS_KEY, state)
        log.info("backfill_pass_started", resumed=resumed, total=state.get("total"), slices=len(state["slices"]))
        # Users listed but not yet flushed travel with the saved position.
        buffer: list[str] = state.pop("pending", [])
        for sl in state["slices"]:
            while not sl["done"]:
                if sl["offset"] > MAX_OFFSET or sl["offset"] >= sl["total"]:
                    sl["done"] = True
                    break
                total, users = await self._list(sl["filter"], sl["offset"])
                sl["total"] = total
                sl["offset"] += len(users)
                buffer.extend(users)
                if not users or len(users) < PAGE or sl["offset"] >= total or sl["offset"] > MAX_OFFSET:
                    sl["done"] = True
                if len(buffer) >= FLUSH_USERS:
                    buffer = await self._flush(state, buffer)
            done = sum(1 for s in state["slices"] if s["done"])
            self.metrics.backfill_progress.set(done / max(1, len(state["slices"])))
        while buffer:
            buffer = await self._flush(state, buffer, final=True)
        await self.store.kv_delete(PASS_KEY)
        summary = {
            "total": state.get("total", 0),
            "listed": state["listed"],
            "uploaded": state["uploaded"],
            "no_identity": state["no_identity"],
            "slices": len(state["slices"]),
            "unreachable": state.get("unreachable", 0),
            "resumed": resumed,
        }
        log.info("backfill_pass_finished", **summary)
        return summary

    async def _flush(self, state: dict[str, Any], buffer: list[str], *, final: bool = False) -> list[str]:
        """Enqueue uploads for up to FLUSH_USERS new users and save the position, atomically."""
        take, rest = buffer[:FLUSH_USERS], buffer[FLUSH_USERS:]
        unique = list(dict.fromkeys(take))
        existing = await self.store.get_users(unique)
        new = [u for u in unique if u not in existing]
        records = []
        users = []
        details: dict[str, dict[str, Any]] = {}
        if self.settings.fetch_details and new:
            got = await asyncio.gather(*(self._details(u) for u in new))
            details = dict(zip(new, got))
        for uid in new:
            d = details.get(uid, {})
            phone = normalize_phone(str((d.get("shared_info") or {}).get("phone") or "")) if d else None
            ref = identity_ref(self.identity, uid, {"user_id_by_app": d.get("user_id_by_app"), "phone": phone})
            data: dict[str, Any] = {self.identity.user_id_property: uid, "zalo_follower": True}
            if d.get("display_name"):
                data["zalo_display_name"] = d["display_name"]
            if d.get("avatar"):
                data["zalo_avatar"] = d["avatar"]
            if d.get("user_id_by_app"):
                data["zalo_user_id_by_app"] = str(d["user_id_by_app"])
            shared = d.get("shared_info") or {}
            if shared.get("name"):
                data["Name"] = shared["name"]
            if phone:
                data["Phone"] = phone
            row = {"user_id": uid, "follower": True, "source": "backfill", "phone": phone,
                   "user_id_by_app": str(d["user_id_by_app"]) if d.get("user_id_by_app") else None}
            if ref is None:
                state["no_identity"] += 1
                users.append(row)
                continue
            records.append({"key": f"profile:{uid}", "record": profile_record(ref, data)})
            users.append(row)
        job = None
        if records:
            job = NewJob(
                "ct_record",
                {"records": records, "users": [{"user_id": r["record"]["profileData"][self.identity.user_id_property],
                                                "uploaded_state": {"zalo_follower": True}, "mark_uploaded": True}
                                               for r in records]},
            )
        state["listed"] += len(take)
        state["uploaded"] += len(records)
        snapshot = {**state, "pending": rest}

        def op(conn: Any) -> None:
            now = self.store.clock()
            if job is not None:
                self.store._insert(conn, now, job)
            if users:
                self.store._upsert_users(conn, now, users)
            self.store._kv_put(conn, PASS_KEY, snapshot)

        await self.store.run(op, notify=("ct_record",) if job else ())
        self.metrics.backfill_users.inc(len(records))
        return rest

    # ------------------------------------------------------------------ schedule

    def readiness_detail(self) -> dict[str, Any]:
        return {"running": self.running, "last": self.last}

    async def loop(self) -> None:
        """First pass shortly after start (jittered), then every interval (jittered)."""
        self.last = await self.store.kv_get(LAST_KEY)
        delay = self.cfg.backfill.first_run_delay_s * self.rng.uniform(1.0, 1.5)
        while True:
            await asyncio.sleep(delay)
            try:
                summary = await self.run_pass()
            except Exception as exc:  # never let the scheduler die
                log.exception("backfill_pass_error", error=repr(exc))
                summary = {"ok": False}
            base = self.cfg.backfill.interval_s if summary.get("ok") else min(self.cfg.backfill.interval_s, 600.0)
            delay = base * self.rng.uniform(0.9, 1.1)


async def run_once(cfg: Config) -> dict[str, Any]:
    """``zalo-bridge backfill --once``: one pass with the daemon's own store, then upload it all."""
    from aiohttp import web

    from ..app import create_app
    from ..appkeys import STATE

    app = create_app(cfg)
    runner = web.AppRunner(app, handle_signals=True)
    await runner.setup()  # store (exclusive), clients, workers; no HTTP listener
    try:
        rt = app[STATE]
        summary = await rt.backfill.run_pass()
        # Wait until what the pass queued has been uploaded (bounded).
        deadline = time.monotonic() + max(60.0, cfg.clevertap.flush_interval_s * 10)
        while time.monotonic() < deadline:
            stats = await rt.store.stats()
            if not any(n for (kind, st), n in stats.counts.items() if kind == "ct_record" and st in ("ready", "inflight")):
                break
            await asyncio.sleep(0.2)
        stats = await rt.store.stats()
        summary["upload_backlog"] = sum(n for (k, s), n in stats.counts.items() if k == "ct_record" and s in ("ready", "inflight"))
        return summary
    finally:
        await runner.cleanup()
