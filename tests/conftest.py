"""Shared fixtures: simulators on real sockets, configs, the daemon built by the production factory."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from daemon import logs
from daemon.app import create_app
from daemon.appkeys import STATE
from daemon.config import Config, Secret, Secrets
from daemon.sim import CleverTapSim, WebhookSender, ZaloSim

ROOT = Path(__file__).resolve().parent.parent
WEBHOOK_USER = "ct-hook-user-x1"
WEBHOOK_PASSWORD = "wh-pass-9f8e7d"

# Logs go to a buffer (tests that check logs configure their own sink).
logs.configure("debug", "json", io.BytesIO(), cache=False)


async def eventually(
    check: Callable[[], Any],
    *events: asyncio.Event,
    timeout: float = 10.0,
    what: str = "condition",
) -> Any:
    """Wait until ``check()`` (sync or async) is truthy, re-checking whenever one of ``events``
    fires (the simulators and the store set theirs on every request/commit)."""
    deadline = time.monotonic() + timeout
    while True:
        for e in events:
            e.clear()
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"timed out waiting for {what}")
        waits = [asyncio.ensure_future(e.wait()) for e in events]
        try:
            if waits:
                await asyncio.wait(waits, timeout=min(remaining, 1.0), return_when=asyncio.FIRST_COMPLETED)
            else:  # pragma: no cover - every call passes an event
                await asyncio.sleep(min(remaining, 0.05))
        finally:
            for w in waits:
                w.cancel()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def zsim() -> ZaloSim:
    return ZaloSim()


@pytest.fixture
def csim() -> CleverTapSim:
    return CleverTapSim()


@pytest.fixture
async def zalo_url(aiohttp_server: Any, zsim: ZaloSim) -> str:
    server = await aiohttp_server(zsim.app())
    return str(server.make_url("")).rstrip("/")


@pytest.fixture
async def ct_url(aiohttp_server: Any, csim: CleverTapSim) -> str:
    server = await aiohttp_server(csim.app())
    return str(server.make_url("")).rstrip("/")


def make_secrets(zsim: ZaloSim, csim: CleverTapSim, refresh_token: str | None) -> Secrets:
    return Secrets(
        zalo_app_secret=Secret(zsim.app_secret, "test"),
        zalo_oa_secret_key=Secret(zsim.oa_secret_key, "test"),
        zalo_refresh_token=Secret(refresh_token, "test") if refresh_token else None,
        clevertap_account_id=Secret(csim.account_id, "test"),
        clevertap_passcode=Secret(csim.passcode, "test"),
        clevertap_webhook_user=Secret(WEBHOOK_USER, "test"),
        clevertap_webhook_password=Secret(WEBHOOK_PASSWORD, "test"),
    )


def make_config(
    tmp_path: Path,
    zsim: ZaloSim,
    csim: CleverTapSim,
    zalo_url: str,
    ct_url: str,
    *,
    refresh_token: str | None = None,
    **overrides: Any,
) -> Config:
    base = Config()
    settings: dict[str, Any] = {
        "store.path": str(tmp_path / "state" / "bridge.db"),
        "zalo.app_id": zsim.app_id,
        "zalo.oa_id": zsim.oa_id,
        "zalo.api_base": zalo_url,
        "zalo.oauth_base": zalo_url,
        "zalo.redirect_uri": "https://bridge.example.com/oauth/zalo/callback",
        "zalo.requests_per_second": 1000.0,
        "clevertap.api_base": ct_url,
        "clevertap.flush_interval_s": 0.05,
        "clevertap.backoff_base_s": 0.05,
        "clevertap.backoff_max_s": 0.2,
        "sender.backoff_base_s": 0.05,
        "sender.backoff_max_s": 0.2,
        "store.poll_interval_s": 0.2,
        "backfill.enabled": False,
        "server.shutdown_timeout_s": 2.0,
    }
    settings.update({k.replace("__", "."): v for k, v in overrides.items()})
    cfg = base.replace(**settings)
    return dataclasses.replace(cfg, secrets=make_secrets(zsim, csim, refresh_token))


@pytest.fixture
def config_factory(tmp_path: Path, zsim: ZaloSim, csim: CleverTapSim, zalo_url: str, ct_url: str) -> Callable[..., Config]:
    def factory(**overrides: Any) -> Config:
        if "refresh_token" not in overrides:
            overrides["refresh_token"] = zsim.issue_tokens()[1]
        return make_config(tmp_path, zsim, csim, zalo_url, ct_url, **overrides)

    return factory


class Bridge:
    """A running daemon (same factory as production) plus handy accessors."""

    def __init__(self, client: Any, zsim: ZaloSim, csim: CleverTapSim) -> None:
        self.client = client
        self.zsim = zsim
        self.csim = csim
        self.app = client.server.app
        self.rt = self.app[STATE]

    @property
    def store(self) -> Any:
        return self.rt.store

    async def zalo(self, body: dict[str, Any], *, raw: bytes | None = None, headers: dict[str, str] | None = None,
                   sign: bool = True) -> tuple[int, Any]:
        data = raw if raw is not None else orjson.dumps(body)
        hdrs = {"Content-Type": "application/json"}
        if sign:
            hdrs["X-ZEvent-Signature"] = self.zsim.sign(data, body)
        hdrs.update(headers or {})
        resp = await self.client.post("/webhooks/zalo", data=data, headers=hdrs)
        return resp.status, await resp.json()

    def sender(self) -> WebhookSender:
        url = str(self.client.make_url("/webhooks/clevertap"))
        return WebhookSender(self.client.session, url, WEBHOOK_USER, WEBHOOK_PASSWORD)

    async def readiness_failure(self, check: str) -> dict[str, str]:
        """/readyz must answer 503 with exactly one failure of ``check``; returns it."""
        resp = await self.client.get("/readyz")
        body = await resp.json()
        assert resp.status == 503, body
        (failure,) = [f for f in body["failing"] if f["check"] == check]
        return failure

    async def jobs(self, **kw: Any) -> list[Any]:
        return await self.store.jobs(**kw)

    async def until(self, check: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
        return await eventually(check, self.zsim.changed, self.csim.changed, self.store.activity,
                                timeout=timeout, what=what)


@pytest.fixture
def bridge_factory(aiohttp_client: Any, zsim: ZaloSim, csim: CleverTapSim, config_factory: Callable[..., Config]):
    async def factory(cfg: Config | None = None, *, clock: Callable[[], float] | None = None, **overrides: Any) -> Bridge:
        cfg = cfg or config_factory(**overrides)
        kw = {"clock": clock} if clock is not None else {}
        client = await aiohttp_client(create_app(cfg, schedule_backfill=False, **kw))
        return Bridge(client, zsim, csim)

    return factory


@pytest.fixture
async def bridge(bridge_factory: Any) -> Bridge:
    return await bridge_factory()


# ---------------------------------------------------------------------------- subprocess daemon


def write_config(path: Path, cfg_values: dict[str, dict[str, Any]]) -> Path:
    lines = []
    for section, values in cfg_values.items():
        lines.append(f"[{section}]")
        for k, v in values.items():
            lines.append(f"{k} = {orjson.dumps(v).decode()}")
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def subprocess_env(zsim: ZaloSim, csim: CleverTapSim, refresh_token: str | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ZALO_", "CLEVERTAP_", "NOTIFY_", "CREDENTIALS_"))}
    env.update(
        ZALO_APP_SECRET=zsim.app_secret,
        ZALO_OA_SECRET_KEY=zsim.oa_secret_key,
        CLEVERTAP_ACCOUNT_ID=csim.account_id,
        CLEVERTAP_PASSCODE=csim.passcode,
        CLEVERTAP_WEBHOOK_USER=WEBHOOK_USER,
        CLEVERTAP_WEBHOOK_PASSWORD=WEBHOOK_PASSWORD,
        PYTHONUNBUFFERED="1",
    )
    if refresh_token:
        env["ZALO_REFRESH_TOKEN"] = refresh_token
    env.update(extra)
    return env


class DaemonProcess:
    """``python -m daemon run`` as a real subprocess; ready when it logs daemon_started."""

    def __init__(self, config_path: Path, env: dict[str, str], port: int) -> None:
        self.config_path = config_path
        self.env = env
        self.port = port
        self.proc: asyncio.subprocess.Process | None = None
        self.lines: list[dict[str, Any]] = []
        self.raw: list[bytes] = []
        self._reader: asyncio.Task[None] | None = None
        self.line_event = asyncio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, *, wait: bool = True, timeout: float = 20.0) -> "DaemonProcess":
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "daemon", "run", "--config", str(self.config_path),
            env=self.env, cwd=str(ROOT), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        self._reader = asyncio.create_task(self._read())
        if wait:
            await self.wait_for_log("daemon_started", timeout=timeout)
        return self

    async def _read(self) -> None:
        assert self.proc and self.proc.stdout
        async for line in self.proc.stdout:
            self.raw.append(line)
            try:
                self.lines.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                self.lines.append({"event": "raw", "text": line.decode(errors="replace")})
            self.line_event.set()
        self.line_event.set()

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line.get("event") == name]

    async def wait_for_log(self, name: str, timeout: float = 20.0) -> dict[str, Any]:
        def check() -> Any:
            found = self.events(name)
            if found:
                return found[-1]
            if self.proc and self.proc.returncode is not None and self._reader and self._reader.done():
                text = b"".join(self.raw).decode(errors="replace")[-3000:]
                raise AssertionError(f"daemon exited ({self.proc.returncode}) before logging {name}:\n{text}")
            return None

        return await eventually(check, self.line_event, timeout=timeout, what=f"log event {name}")

    async def kill(self) -> None:
        assert self.proc
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()
        if self._reader:
            await self._reader

    async def terminate(self, timeout: float = 20.0) -> int:
        assert self.proc
        self.proc.terminate()
        rc = await asyncio.wait_for(self.proc.wait(), timeout)
        if self._reader:
            await self._reader
        return rc

    async def wait(self, timeout: float = 20.0) -> int:
        assert self.proc
        rc = await asyncio.wait_for(self.proc.wait(), timeout)
        if self._reader:
            await self._reader
        return rc


def daemon_config_values(tmp_path: Path, zsim: ZaloSim, zalo_url: str, ct_url: str, port: int, **sections: dict[str, Any]) -> dict[str, dict[str, Any]]:
    values: dict[str, dict[str, Any]] = {
        "server": {"host": "127.0.0.1", "port": port, "shutdown_timeout_s": 3.0},
        "store": {"path": str(tmp_path / "state" / "bridge.db"), "poll_interval_s": 0.2},
        "log": {"level": "info", "format": "json"},
        "zalo": {"app_id": zsim.app_id, "oa_id": zsim.oa_id, "api_base": zalo_url, "oauth_base": zalo_url,
                 "requests_per_second": 1000.0},
        "clevertap": {"api_base": ct_url, "flush_interval_s": 0.05, "backoff_base_s": 0.05, "backoff_max_s": 0.5},
        "sender": {"backoff_base_s": 0.05, "backoff_max_s": 0.5},
        "backfill": {"enabled": False},
    }
    for name, vals in sections.items():
        values.setdefault(name, {}).update(vals)
    return values
