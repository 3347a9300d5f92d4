"""The application factory used by ``run``, ``demo`` and the tests.

Every long-lived resource lives in the app's ``cleanup_ctx`` (created on startup, closed on
shutdown in reverse order): the store, the ClientSessions (one per external service), the
throttle and token manager, and the workers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
from aiohttp import web

from . import logs
from .appkeys import CONFIG, METRICS, STATE
from .clevertap.upload import CleverTapClient
from .config import Config
from .flows.backfill import Backfill
from .flows.campaign import SEND_KIND, AssetCache, Sender
from .flows.identity import IdentityBuilder, IdentitySettings
from .flows.uploader import Uploader, build_ct_records
from .flows.worker import Worker
from .metrics import Metrics
from .store import Store
from .throttle import PriorityThrottle
from .web import request_context, setup_routes
from .zalo.client import ZaloClient
from .zalo.oauth import TokenPair
from .zalo.tokens import TokenManager, post_token_endpoint

log = logs.get_logger("app")

USER_AGENT = "zalo-bridge/0.1 (+https://github.com/zalo-bridge)"


class Runtime:
    """Everything the daemon holds while it runs."""

    def __init__(self, cfg: Config, metrics: Metrics, clock: Callable[[], float]) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.clock = clock
        self.identity = IdentitySettings.from_config(cfg)
        self.store: Store = None  # type: ignore[assignment]
        self.sessions: dict[str, aiohttp.ClientSession] = {}
        self.throttle: PriorityThrottle = None  # type: ignore[assignment]
        self.tokens: TokenManager = None  # type: ignore[assignment]
        self.zalo: ZaloClient = None  # type: ignore[assignment]
        self.clevertap: CleverTapClient = None  # type: ignore[assignment]
        self.uploader: Uploader | None = None
        self.workers: list[Worker] = []
        self.assets: AssetCache | None = None
        self.backfill: Backfill | None = None
        self.background: list[asyncio.Task[Any]] = []
        self.extra_checks: list[Callable[[], tuple[str, str | None, Any]]] = []
        self.schedule_backfill = False

    # ------------------------------------------------------------------ readiness

    async def readiness(self) -> dict[str, Any]:
        failing: list[dict[str, str]] = []
        details: dict[str, Any] = {}
        try:
            await asyncio.wait_for(self.store.check_writable(), timeout=5.0)
        except Exception as exc:
            failing.append({"check": "store", "message": f"state store is not writable: {exc}"})
        ok, problem = self.tokens.ready()
        details["token_expires_in_s"] = round(self.tokens.valid_for())
        if not ok:
            failing.append({"check": "zalo_token", "message": problem or "no valid OA access token"})
        try:
            stats = await self.store.stats(max_age_s=1.0)
            backlog = stats.backlog()
            details["backlog"] = backlog
            if backlog >= self.cfg.store.max_backlog:
                failing.append(
                    {"check": "backlog", "message": f"{backlog} jobs waiting, limit store.max_backlog={self.cfg.store.max_backlog}"}
                )
        except Exception as exc:
            failing.append({"check": "backlog", "message": f"cannot count jobs: {exc}"})
        if self.uploader is not None and self.uploader.auth_problem:
            failing.append({"check": "clevertap", "message": self.uploader.auth_problem})
        dead_workers = [w.kind for w in self.workers if not w.alive]
        if self.uploader is not None and not self.uploader.alive:
            dead_workers.append("clevertap-uploader")
        if dead_workers:
            failing.append({"check": "workers", "message": f"workers stopped: {', '.join(dead_workers)}"})
        for check in self.extra_checks:
            name, problem_msg, info = check()
            details[name] = info
            if problem_msg:
                failing.append({"check": name, "message": problem_msg})
        return {"ready": not failing, "failing": failing, "details": details}

    def healthy(self) -> bool:
        """For the systemd watchdog: the loop runs (we are here) and the workers are alive."""
        if self.uploader is not None and not self.uploader.alive:
            return False
        return all(w.alive for w in self.workers)

    async def refresh_gauges(self) -> None:
        stats = await self.store.stats(max_age_s=1.0)
        self.metrics.queue_jobs.clear()
        for (kind, state), n in stats.counts.items():
            self.metrics.queue_jobs.labels(kind, state).set(n)
        self.metrics.token_expiry.set(self.tokens.valid_for())

    async def exchange_code(self, code: str, verifier: str, *, source: str) -> TokenPair:
        """OAuth code exchange; the pair is persisted before it is used."""
        cfg = self.cfg
        pair = await post_token_endpoint(
            self.sessions["zalo"],
            cfg.zalo.oauth_base,
            cfg.secrets.zalo_app_secret.reveal() if cfg.secrets.zalo_app_secret else "",
            {"app_id": cfg.zalo.app_id, "grant_type": "authorization_code", "code": code, "code_verifier": verifier},
            cfg.zalo.request_timeout_s,
        )
        await self.tokens.store_pair(pair, source)
        log.info("zalo_oauth_authorized", source=source, expires_in_s=pair.expires_in)
        return pair


def create_app(
    cfg: Config,
    *,
    clock: Callable[[], float] = time.time,
    start_workers: bool = True,
    schedule_backfill: bool | None = None,
) -> web.Application:
    """Build the daemon. ``start_workers=False`` serves HTTP only (used by some tests);
    ``schedule_backfill`` defaults to ``[backfill].enabled``."""
    for secret in cfg.secrets.values():
        logs.register_secret(secret)
    app = web.Application(client_max_size=cfg.server.max_body_bytes, middlewares=[request_context])
    app[CONFIG] = cfg
    app[METRICS] = Metrics()
    app[STATE] = Runtime(cfg, app[METRICS], clock)
    app[STATE].schedule_backfill = cfg.backfill.enabled if schedule_backfill is None else schedule_backfill
    app.cleanup_ctx.append(_store_ctx)
    app.cleanup_ctx.append(_clients_ctx)
    if start_workers:
        app.cleanup_ctx.append(_workers_ctx)
    setup_routes(app)
    return app


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    rt = app[STATE]
    rt.store = await Store.open(rt.cfg.store.path, exclusive=True, clock=rt.clock)
    if rt.store.recovered:
        log.warning("store_recovered_inflight_jobs", count=rt.store.recovered)
    log.info("store_opened", path=rt.cfg.store.path)
    yield
    await rt.store.close()
    log.info("store_closed")


async def _clients_ctx(app: web.Application) -> AsyncIterator[None]:
    rt = app[STATE]
    cfg = rt.cfg
    headers = {"User-Agent": USER_AGENT}
    rt.sessions = {
        "zalo": aiohttp.ClientSession(headers=headers, connector=aiohttp.TCPConnector(limit=64)),
        "clevertap": aiohttp.ClientSession(headers=headers, connector=aiohttp.TCPConnector(limit=16)),
        "assets": aiohttp.ClientSession(headers=headers, connector=aiohttp.TCPConnector(limit=8)),
    }
    rt.throttle = PriorityThrottle(
        cfg.zalo.requests_per_second,
        on_wait=lambda prio, s: rt.metrics.throttle_wait.labels("send" if prio == 0 else "background").observe(s),
    )
    s = cfg.secrets
    rt.tokens = TokenManager(
        rt.store,
        rt.sessions["zalo"],
        app_id=cfg.zalo.app_id,
        app_secret=s.zalo_app_secret.reveal() if s.zalo_app_secret else "",
        oauth_base=cfg.zalo.oauth_base,
        bootstrap_refresh_token=s.zalo_refresh_token.reveal() if s.zalo_refresh_token else None,
        refresh_margin_s=cfg.zalo.token_refresh_margin_s,
        max_age_s=cfg.zalo.token_max_age_s,
        timeout_s=cfg.zalo.request_timeout_s,
        clock=rt.clock,
        on_refresh=lambda outcome: rt.metrics.token_refreshes.labels(outcome).inc(),
    )
    rt.zalo = ZaloClient(rt.sessions["zalo"], cfg.zalo.api_base, rt.throttle, rt.tokens, rt.metrics,
                         timeout_s=cfg.zalo.request_timeout_s)
    rt.clevertap = CleverTapClient(
        rt.sessions["clevertap"],
        cfg.clevertap.api_base,
        s.clevertap_account_id.reveal() if s.clevertap_account_id else "",
        s.clevertap_passcode.reveal() if s.clevertap_passcode else "",
        timeout_s=cfg.clevertap.request_timeout_s,
    )
    await rt.tokens.start()
    yield
    await rt.tokens.stop()
    await rt.throttle.close()
    await asyncio.gather(*(sess.close() for sess in rt.sessions.values()))


async def _workers_ctx(app: web.Application) -> AsyncIterator[None]:
    rt = app[STATE]
    cfg = rt.cfg
    rt.uploader = Uploader(
        rt.store,
        rt.clevertap,
        rt.metrics,
        {"zalo_event": IdentityBuilder(rt.store, rt.identity), "ct_record": build_ct_records},
        batch_max=cfg.clevertap.batch_max,
        flush_interval_s=cfg.clevertap.flush_interval_s,
        max_concurrency=cfg.clevertap.max_concurrency,
        max_attempts=cfg.clevertap.max_attempts,
        backoff=(cfg.clevertap.backoff_base_s, cfg.clevertap.backoff_max_s),
        poll_interval_s=cfg.store.poll_interval_s,
    )
    rt.assets = AssetCache(rt.store, rt.zalo, rt.sessions["assets"], max_bytes=cfg.sender.download_max_bytes)
    sender = Worker(
        rt.store,
        SEND_KIND,
        Sender(rt.zalo, rt.assets, cfg, rt.identity, rt.metrics),
        rt.metrics,
        concurrency=cfg.sender.concurrency,
        poll_interval_s=cfg.store.poll_interval_s,
        max_attempts=cfg.sender.max_attempts,
    )
    rt.workers = [sender]
    rt.backfill = Backfill(rt.store, rt.zalo, cfg, rt.metrics, clock=rt.clock)
    bf = rt.backfill
    rt.extra_checks.append(lambda: ("backfill", None, bf.readiness_detail()))
    rt.uploader.start()
    sender.start()
    rt.background.append(asyncio.create_task(_prune_loop(rt), name="store-pruner"))
    if rt.schedule_backfill:
        rt.background.append(asyncio.create_task(bf.loop(), name="backfill-scheduler"))
    yield
    timeout = cfg.server.shutdown_timeout_s
    for task in rt.background:
        task.cancel()
    await asyncio.gather(*rt.background, return_exceptions=True)
    # Senders first (their outcomes feed the uploader), then flush the uploader.
    await asyncio.gather(*(w.stop(timeout * 0.6) for w in rt.workers))
    await rt.uploader.stop(timeout * 0.4)


async def _prune_loop(rt: Runtime) -> None:
    retention = rt.cfg.store.retention_days * 86400.0
    while True:
        await asyncio.sleep(3600.0)
        try:
            n = await rt.store.prune(retention)
            if n:
                log.info("store_pruned", jobs=n)
        except Exception as exc:
            log.error("store_prune_failed", error=repr(exc))
