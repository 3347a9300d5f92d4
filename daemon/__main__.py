"""Command line: ``zalo-bridge`` (also ``python -m daemon``)."""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import sys
import time
from typing import Any

import orjson

from . import config as config_mod
from . import logs
from .config import Config, ConfigError

EXIT_CONFIG = 2
EXIT_STORE_LOCKED = 3
EXIT_FAILURE = 1

log = logs.get_logger("main")


def _load(args: argparse.Namespace, *, require_secrets: bool = True) -> Config:
    return config_mod.load(args.config, require_secrets=require_secrets)


def _fail(message: str, code: int) -> int:
    print(f"zalo-bridge: {message}", file=sys.stderr)
    return code


# ---------------------------------------------------------------------------- run


async def serve(cfg: Config, *, stop: asyncio.Event | None = None, ready: asyncio.Event | None = None) -> None:
    """Run the daemon until SIGTERM/SIGINT (or ``stop``)."""
    from aiohttp import web

    from .app import create_app
    from .appkeys import STATE
    from .systemd import Notifier

    notifier = Notifier()
    app = create_app(cfg)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=cfg.server.shutdown_timeout_s)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: reload_templates(cfg))
    started = time.monotonic()
    await runner.setup()  # opens the store, sessions, token manager, workers
    site = web.TCPSite(runner, cfg.server.host, cfg.server.port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise SystemExit(_fail(f"cannot listen on {cfg.server.host}:{cfg.server.port}: {exc.strerror}", EXIT_FAILURE)) from None
    rt = app[STATE]
    log.info("daemon_started", host=cfg.server.host, port=cfg.server.port, startup_ms=round((time.monotonic() - started) * 1000, 1),
             config=cfg.source, store=cfg.store.path)
    notifier.ready(f"listening on {cfg.server.host}:{cfg.server.port}")
    if ready is not None:
        ready.set()
    watchdog = asyncio.create_task(_watchdog(notifier, rt), name="systemd-watchdog")
    await stop.wait()
    log.info("daemon_stopping")
    notifier.stopping()
    watchdog.cancel()
    await runner.cleanup()  # stop accepting, finish requests, stop workers, flush, close store
    notifier.close()
    log.info("daemon_stopped")


def reload_templates(cfg: Config) -> bool:
    """SIGHUP: re-read [templates] from the config file (everything else needs a restart).

    Logs go to stdout (journald), so there is no log file to reopen.
    """
    try:
        fresh = config_mod.load(cfg.source, require_secrets=False)  # validates the templates
    except ConfigError as exc:
        log.error("templates_reload_failed", error=str(exc), kept=sorted(cfg.templates))
        return False
    cfg.templates.clear()
    cfg.templates.update(fresh.templates)
    log.info("templates_reloaded", templates=sorted(cfg.templates))
    return True


async def _watchdog(notifier: Any, rt: Any) -> None:
    interval = (notifier.watchdog_s or 30.0) / 3
    while True:
        await asyncio.sleep(interval)
        ready = await rt.readiness()
        # WATCHDOG=1 only while the loop turns and the workers are alive.
        if rt.healthy():
            notifier.watchdog()
        failing = ", ".join(f["check"] for f in ready["failing"]) or "none"
        notifier.status(f"backlog {ready['details'].get('backlog', '?')}; failing checks: {failing}")


def cmd_run(args: argparse.Namespace) -> int:
    from .store import StoreError, StoreLockedError

    try:
        cfg = _load(args)
    except ConfigError as exc:
        return _fail(f"configuration error: {exc}", EXIT_CONFIG)
    logs.configure(cfg.log.level, cfg.log.format)
    try:
        asyncio.run(serve(cfg))
    except StoreLockedError as exc:
        return _fail(str(exc), EXIT_STORE_LOCKED)
    except StoreError as exc:
        return _fail(str(exc), EXIT_FAILURE)
    return 0


# ---------------------------------------------------------------------------- check-config


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        cfg = _load(args)  # templates are validated as message specs too
    except ConfigError as exc:
        return _fail(f"configuration error: {exc}", EXIT_CONFIG)
    print(f"# effective configuration ({cfg.source}); secrets are masked")
    print(config_mod.to_toml(config_mod.effective(cfg)), end="")
    return 0


# ---------------------------------------------------------------------------- queue


async def _queue(cfg: Config, action: str, ids: list[int]) -> int:
    from .store import Store

    store = await Store.open(cfg.store.path, exclusive=False)
    try:
        if action == "stats":
            stats = await store.stats()
            kinds = sorted({k for k, _ in stats.counts})
            from .store import STATES

            print(f"{'kind':<14}" + "".join(f"{s:>10}" for s in STATES))
            for kind in kinds:
                print(f"{kind:<14}" + "".join(f"{stats.counts.get((kind, s), 0):>10}" for s in STATES))
            if not kinds:
                print("(no jobs)")
            print(f"backlog (ready + inflight): {stats.backlog()}")
        elif action == "dead":
            jobs = await store.jobs(state="dead", limit=10000)
            for j in jobs:
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(j.updated_at))
                print(f"{j.id:>8}  {j.kind:<12} attempts={j.attempts:<3} {when}Z  {j.last_error or ''}")
            print(f"{len(jobs)} dead job(s)" + ("; replay with `zalo-bridge queue retry [ID...]`" if jobs else ""))
        elif action == "retry":
            n = await store.retry_dead(ids or None)
            print(f"{n} dead job(s) made ready again")
    finally:
        await store.close()
    return 0


def cmd_queue(args: argparse.Namespace) -> int:
    try:
        cfg = _load(args, require_secrets=False)
    except ConfigError as exc:
        return _fail(f"configuration error: {exc}", EXIT_CONFIG)
    if not os.path.exists(cfg.store.path):
        return _fail(f"no state store at {cfg.store.path}", EXIT_FAILURE)
    return asyncio.run(_queue(cfg, args.action, getattr(args, "ids", None) or []))


# ---------------------------------------------------------------------------- auth


async def _auth_url(cfg: Config) -> str:
    from .store import Store
    from .zalo.oauth import code_challenge, make_verifier, permission_url

    verifier = make_verifier()
    state = secrets.token_urlsafe(24)
    store = await Store.open(cfg.store.path, exclusive=False)
    try:
        await store.kv_put(f"oauth_state:{state}", {"verifier": verifier, "created_at": time.time()})
        await store.kv_put("oauth_last_state", {"state": state})
    finally:
        await store.close()
    return permission_url(cfg.zalo.oauth_base, cfg.zalo.app_id, cfg.zalo.redirect_uri, code_challenge(verifier), state)


async def _auth_exchange(cfg: Config, code: str) -> None:
    import aiohttp

    from .store import Store
    from .zalo.oauth import TokenPair
    from .zalo.tokens import TOKENS_KEY, TokenState, post_token_endpoint

    store = await Store.open(cfg.store.path, exclusive=False)
    try:
        last = await store.kv_get("oauth_last_state")
        pending = await store.kv_take(f"oauth_state:{last['state']}") if last else None
        if pending is None:
            raise RuntimeError("no pending authorization: run `zalo-bridge auth url` first (each link works once)")
        async with aiohttp.ClientSession() as session:
            pair: TokenPair = await post_token_endpoint(
                session, cfg.zalo.oauth_base, cfg.secrets.zalo_app_secret.reveal(),  # type: ignore[union-attr]
                {"app_id": cfg.zalo.app_id, "grant_type": "authorization_code", "code": code,
                 "code_verifier": pending["verifier"]},
                cfg.zalo.request_timeout_s,
            )
        now = time.time()
        state = TokenState(pair.access_token, pair.refresh_token, now + pair.expires_in, now, now, "auth exchange")
        await store.kv_put(TOKENS_KEY, state.to_json())
    finally:
        await store.close()


def cmd_auth(args: argparse.Namespace) -> int:
    try:
        cfg = _load(args, require_secrets=args.action == "exchange")
    except ConfigError as exc:
        return _fail(f"configuration error: {exc}", EXIT_CONFIG)
    if args.action == "url":
        if not cfg.zalo.redirect_uri:
            return _fail("configuration error: zalo.redirect_uri: is required for `auth url` "
                         "(the Official Account Callback Url of your Zalo app)", EXIT_CONFIG)
        url = asyncio.run(_auth_url(cfg))
        print("Open this link as an admin of the Official Account and allow access:\n")
        print(url)
        print("\nZalo then redirects to the callback with ?code=...; the running daemon stores the tokens,"
              "\nor run `zalo-bridge auth exchange --code CODE` within 10 minutes.")
        return 0
    from .zalo.oauth import TokenEndpointError

    try:
        asyncio.run(_auth_exchange(cfg, args.code))
    except (TokenEndpointError, RuntimeError) as exc:
        return _fail(str(exc), EXIT_FAILURE)
    print("OA authorized: tokens stored in", cfg.store.path)
    return 0


# ---------------------------------------------------------------------------- backfill


def cmd_backfill(args: argparse.Namespace) -> int:
    from .store import StoreLockedError

    try:
        cfg = _load(args)
    except ConfigError as exc:
        return _fail(f"configuration error: {exc}", EXIT_CONFIG)
    logs.configure(cfg.log.level, cfg.log.format)
    from .flows.backfill import run_once

    try:
        summary = asyncio.run(run_once(cfg))
    except StoreLockedError as exc:
        return _fail(f"{exc} (stop the daemon, or let its scheduled backfill run)", EXIT_STORE_LOCKED)
    print(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
    return 0 if summary.get("ok") else EXIT_FAILURE


# ---------------------------------------------------------------------------- demo


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import main as demo_main

    return demo_main(verbose=args.verbose)


# ---------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="zalo-bridge", description="Connects a Zalo Official Account to CleverTap.")
    sub = p.add_subparsers(dest="command", required=True)

    def with_config(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument("--config", default=os.environ.get("ZALO_BRIDGE_CONFIG", "config.toml"),
                        help="path to config.toml (default: ./config.toml or $ZALO_BRIDGE_CONFIG)")
        return sp

    with_config(sub.add_parser("run", help="run the daemon")).set_defaults(func=cmd_run)
    with_config(sub.add_parser("check-config", help="validate and print the effective config")).set_defaults(func=cmd_check_config)
    demo = sub.add_parser("demo", help="run against built-in simulators and print what happened")
    demo.add_argument("--verbose", action="store_true", help="also print the daemon's log")
    demo.set_defaults(func=cmd_demo)
    auth = sub.add_parser("auth", help="OAuth bootstrap for the first OA token")
    auth_sub = auth.add_subparsers(dest="action", required=True)
    with_config(auth_sub.add_parser("url", help="print the permission URL")).set_defaults(func=cmd_auth)
    ex = with_config(auth_sub.add_parser("exchange", help="exchange an authorization code for tokens"))
    ex.add_argument("--code", required=True)
    ex.set_defaults(func=cmd_auth)
    bf = with_config(sub.add_parser("backfill", help="follower backfill"))
    bf.add_argument("--once", action="store_true", required=True, help="run one pass, then exit")
    bf.set_defaults(func=cmd_backfill)
    q = sub.add_parser("queue", help="inspect the durable queue")
    q_sub = q.add_subparsers(dest="action", required=True)
    with_config(q_sub.add_parser("stats", help="jobs by kind and state")).set_defaults(func=cmd_queue)
    with_config(q_sub.add_parser("dead", help="list dead jobs with their last error")).set_defaults(func=cmd_queue)
    r = with_config(q_sub.add_parser("retry", help="make dead jobs ready again (all, or the given ids)"))
    r.add_argument("ids", nargs="*", type=int)
    r.set_defaults(func=cmd_queue)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
