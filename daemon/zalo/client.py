"""Thin Zalo OA API client: throttle, token, one request, classify. No retries of its own
except the single token-refresh retry; callers (workers) decide what a failure means."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import orjson

from .. import logs
from ..metrics import Metrics
from ..throttle import SEND, PriorityThrottle
from .errors import Action, ZaloResult, classify_response, transport_failure
from .tokens import TokenManager, TokenUnavailable

log = logs.get_logger("zalo.client")


class ZaloClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        api_base: str,
        throttle: PriorityThrottle,
        tokens: TokenManager,
        metrics: Metrics,
        *,
        timeout_s: float = 30.0,
    ) -> None:
        self.session = session
        self.api_base = api_base.rstrip("/")
        self.throttle = throttle
        self.tokens = tokens
        self.metrics = metrics
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        upload: tuple[str, bytes, str] | None = None,
        priority: int = SEND,
    ) -> ZaloResult:
        """One API call. Token errors trigger one refresh and one retry; a second is returned."""
        endpoint = path
        for attempt in (1, 2):
            await self.throttle.acquire(priority)
            try:
                async with self.tokens.use() as token:
                    result = await self._once(method, path, token, params, json, upload)
            except TokenUnavailable as exc:
                self.metrics.zalo_calls.labels(endpoint, "no_token").inc()
                return ZaloResult(Action.RETRY, message=f"no access token: {exc}")
            self.metrics.zalo_calls.labels(endpoint, str(result.error or result.http_status or "transport")).inc()
            if result.action is Action.REFRESH_TOKEN and attempt == 1:
                try:
                    await self.tokens.on_token_error(token)
                except TokenUnavailable as exc:
                    return ZaloResult(Action.RETRY, error=result.error, message=f"token refresh failed: {exc}")
                continue
            if result.action is Action.RATE_LIMITED:
                self.throttle.slow_down()
                log.warning("zalo_rate_limited", endpoint=endpoint, rate_per_s=self.throttle.current_rate)
            return result
        return result  # pragma: no cover - loop always returns

    async def _once(
        self,
        method: str,
        path: str,
        token: str,
        params: dict[str, Any] | None,
        json: Any,
        upload: tuple[str, bytes, str] | None,
    ) -> ZaloResult:
        headers = {"access_token": token}
        kwargs: dict[str, Any] = {"headers": headers, "timeout": self.timeout}
        if params is not None:
            # GET parameters travel as one URL-encoded JSON value named `data`.
            kwargs["params"] = {"data": orjson.dumps(params).decode()}
        if json is not None:
            kwargs["data"] = orjson.dumps(json)
            headers["Content-Type"] = "application/json"
        if upload is not None:
            name, content, ctype = upload
            form = aiohttp.FormData()
            form.add_field("file", content, filename=name, content_type=ctype)
            kwargs["data"] = form
        started = time.monotonic()
        try:
            async with self.session.request(method, self.api_base + path, **kwargs) as resp:
                raw = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            return transport_failure(f"{type(exc).__name__}: {exc}"[:200])
        finally:
            self.metrics.zalo_seconds.labels(path).observe(time.monotonic() - started)
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
        return classify_response(status, body)
