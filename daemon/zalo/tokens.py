"""The OA access token: always fresh, and the single-use refresh token never lost.

Rules (zalo-api.md §2.6-2.7):
- one refresh in flight, whatever the number of callers (waiters share its result);
- the new pair is committed to the store *before* anything uses the new access token, and the
  store is re-read before refreshing (``zalo-bridge auth exchange`` may have stored a new pair);
- a refresh succeeded only if both tokens came back (HTTP 200 can carry an error body);
- refresh ahead of expiry (``token_refresh_margin_s``) and at least every ``token_max_age_s``
  even when idle, so the 3-month refresh token never lapses; with jitter, so restarts don't align.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from typing import Any

import aiohttp
import orjson

from .. import logs
from ..retry import backoff_delay
from ..store import Store
from .oauth import TokenEndpointError, TokenPair, parse_token_response

TOKENS_KEY = "zalo_tokens"
REFRESH_MARKER_KEY = "zalo_token_refresh_started"

REAUTHORIZE_HINT = (
    "re-authorize the OA: run `zalo-bridge auth url`, open the link as an OA admin, "
    "and let the callback (or `zalo-bridge auth exchange --code CODE`) store new tokens"
)

log = logs.get_logger("zalo.tokens")


class TokenUnavailable(Exception):
    """No usable access token right now."""


@dataclass
class TokenState:
    access_token: str | None
    refresh_token: str
    expires_at: float  # epoch seconds; 0 when there is no access token yet
    refresh_issued_at: float
    obtained_at: float
    source: str = "refresh"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "TokenState":
        return cls(**{k: data.get(k) for k in cls.__dataclass_fields__ if k in data})  # type: ignore[arg-type]


def _crash_point(name: str) -> None:
    """Test-only fault injection: ZALO_BRIDGE_CRASH_AT=<name> SIGKILLs the process here."""
    if os.environ.get("ZALO_BRIDGE_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


async def post_token_endpoint(
    session: aiohttp.ClientSession,
    oauth_base: str,
    app_secret: str,
    form: dict[str, str],
    timeout_s: float,
) -> TokenPair:
    """One call to ``/v4/oa/access_token`` (refresh or code exchange)."""
    url = f"{oauth_base.rstrip('/')}/v4/oa/access_token"
    try:
        async with session.post(
            url,
            data=form,
            headers={"secret_key": app_secret},
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        ) as resp:
            raw = await resp.read()
            status = resp.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise TokenEndpointError(f"token endpoint unreachable: {type(exc).__name__}", transient=True) from None
    try:
        body = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        body = None
    return parse_token_response(status, body)


class TokenManager:
    def __init__(
        self,
        store: Store,
        session: aiohttp.ClientSession,
        *,
        app_id: str,
        app_secret: str,
        oauth_base: str,
        bootstrap_refresh_token: str | None = None,
        refresh_margin_s: float = 4 * 3600.0,
        max_age_s: float = 3 * 86400.0,
        timeout_s: float = 30.0,
        clock: Callable[[], float] = time.time,
        on_refresh: Callable[[str], Any] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.session = session
        self.app_id = app_id
        self.app_secret = app_secret
        self.oauth_base = oauth_base
        self.bootstrap_refresh_token = bootstrap_refresh_token
        self.refresh_margin_s = refresh_margin_s
        self.max_age_s = max_age_s
        self.timeout_s = timeout_s
        self.clock = clock
        self.on_refresh = on_refresh
        self.rng = rng or random.Random()
        self.state: TokenState | None = None
        self.problem: str | None = "no token loaded yet"
        self.rejected = False
        self.refreshes = 0
        self.failures = 0
        self._inflight: asyncio.Task[TokenState] | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        # Calls in flight with the current token. A scheduled refresh lets them finish before it
        # asks for a new token (Zalo revokes the old access token at once), holding new calls.
        self._gate = asyncio.Event()
        self._gate.set()
        self._in_use = 0
        self._drained = asyncio.Event()
        self._drained.set()
        self._abort_drain = asyncio.Event()
        # Spread proactive refreshes of restarted daemons (fraction of the margin).
        self._jitter = self.rng.uniform(0.0, 0.25)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await self._load()
        self._task = asyncio.create_task(self._keep_fresh(), name="zalo-token-refresher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._inflight is not None and not self._inflight.done():
            # Let an in-flight refresh finish: its answer must reach the store.
            try:
                await asyncio.wait_for(asyncio.shield(self._inflight), self.timeout_s)
            except (Exception, asyncio.CancelledError):
                pass

    async def _load(self) -> None:
        stored = await self.store.kv_get(TOKENS_KEY)
        if stored:
            self._adopt(TokenState.from_json(stored))
            marker = await self.store.kv_get(REFRESH_MARKER_KEY)
            if marker and marker.get("refresh_token_tail") == self.state.refresh_token[-6:]:  # type: ignore[union-attr]
                log.warning("zalo_token_refresh_interrupted", started_at=marker.get("at"))
            return
        if self.bootstrap_refresh_token:
            # First run: take ZALO_REFRESH_TOKEN once; from now on the store owns the token.
            state = TokenState(
                access_token=None,
                refresh_token=self.bootstrap_refresh_token,
                expires_at=0.0,
                refresh_issued_at=self.clock(),
                obtained_at=self.clock(),
                source="ZALO_REFRESH_TOKEN",
            )
            await self.store.kv_put(TOKENS_KEY, state.to_json())
            self._adopt(state)
            log.info("zalo_token_bootstrapped", source="ZALO_REFRESH_TOKEN")
            return
        self.problem = f"no OA token in the store and ZALO_REFRESH_TOKEN is not set; {REAUTHORIZE_HINT}"
        log.warning("zalo_token_missing", hint=REAUTHORIZE_HINT)

    def _adopt(self, state: TokenState) -> None:
        self.state = state
        logs.register_secret(state.access_token)
        logs.register_secret(state.refresh_token)
        if self.valid_for() > 0:
            self.problem = None

    # ------------------------------------------------------------------ queries

    def valid_for(self) -> float:
        """Seconds until the access token expires (<= 0: none usable)."""
        if self.state is None or not self.state.access_token:
            return -1.0
        return self.state.expires_at - self.clock()

    def ready(self) -> tuple[bool, str | None]:
        if self.valid_for() > 0 and not self.rejected:
            return True, None
        if self.valid_for() > 0 and self.rejected:
            # Still usable for now, but it will not be renewed.
            return False, self.problem
        return False, self.problem or "no valid OA access token"

    # ------------------------------------------------------------------ use

    async def access_token(self) -> str:
        """A valid access token, refreshing first if there is none (single flight)."""
        if self.valid_for() > 60:
            return self.state.access_token  # type: ignore[union-attr,return-value]
        state = await self.refresh("expired")
        assert state.access_token
        return state.access_token

    @contextlib.asynccontextmanager
    async def use(self) -> AsyncIterator[str]:
        """A token for one API call; a scheduled refresh waits for the call to finish."""
        await self._gate.wait()
        token = await self.access_token()
        self._in_use += 1
        self._drained.clear()
        try:
            yield token
        finally:
            self._in_use -= 1
            if self._in_use == 0:
                self._drained.set()

    async def _drain(self) -> None:
        """Wait (bounded) for calls in flight with the old token; a token error ends the wait."""
        if self._in_use == 0:
            return
        self._abort_drain.clear()
        waits = [asyncio.ensure_future(self._drained.wait()), asyncio.ensure_future(self._abort_drain.wait())]
        try:
            await asyncio.wait(waits, timeout=self.timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    async def on_token_error(self, bad_token: str) -> str:
        """Zalo rejected ``bad_token`` (-216/-220/-124): refresh once unless someone already did."""
        self._abort_drain.set()
        if self.state is not None and self.state.access_token and self.state.access_token != bad_token and self.valid_for() > 0:
            return self.state.access_token
        state = await self.refresh("token_error", force=True)
        assert state.access_token
        return state.access_token

    async def refresh(self, reason: str, *, force: bool = False) -> TokenState:
        """Refresh now; concurrent callers share the one refresh in flight."""
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.create_task(self._do_refresh(reason, force), name="zalo-token-refresh")
            self._inflight.add_done_callback(lambda t: t.cancelled() or t.exception())
        try:
            return await asyncio.shield(self._inflight)
        except TokenEndpointError as exc:
            raise TokenUnavailable(str(exc)) from None

    async def _do_refresh(self, reason: str, force: bool) -> TokenState:
        # Another process (auth exchange) may have stored a newer pair: adopt it first.
        stored = await self.store.kv_get(TOKENS_KEY)
        if stored:
            fresh = TokenState.from_json(stored)
            if self.state is None or fresh.refresh_token != self.state.refresh_token:
                self._adopt(fresh)
                self.rejected = False
                if not force and self.valid_for() > self.refresh_margin_s:
                    return fresh
        if self.state is None:
            self.problem = f"no OA refresh token; {REAUTHORIZE_HINT}"
            raise TokenEndpointError(self.problem)
        old = self.state
        if not force and self.valid_for() > 60:
            self._gate.clear()
            await self._drain()
        try:
            return await self._exchange_refresh(old, reason)
        finally:
            self._gate.set()

    async def _exchange_refresh(self, old: TokenState, reason: str) -> TokenState:
        await self.store.kv_put(
            REFRESH_MARKER_KEY, {"at": self.clock(), "refresh_token_tail": old.refresh_token[-6:], "reason": reason}
        )
        _crash_point("token:before_request")
        started = time.monotonic()
        try:
            pair = await post_token_endpoint(
                self.session,
                self.oauth_base,
                self.app_secret,
                {"app_id": self.app_id, "grant_type": "refresh_token", "refresh_token": old.refresh_token},
                self.timeout_s,
            )
        except TokenEndpointError as exc:
            self.failures += 1
            if self.on_refresh:
                self.on_refresh("transient_error" if exc.transient else "rejected")
            if exc.transient:
                self.problem = f"token refresh failed ({exc}); retrying"
                log.warning("zalo_token_refresh_failed", reason=reason, error=str(exc), transient=True)
            else:
                self.rejected = True
                self.problem = f"Zalo rejected the refresh token: {exc}; {REAUTHORIZE_HINT}"
                log.error("zalo_token_refresh_rejected", reason=reason, error=str(exc), hint=REAUTHORIZE_HINT)
            raise
        now = self.clock()
        new = TokenState(
            access_token=pair.access_token,
            refresh_token=pair.refresh_token,
            expires_at=now + pair.expires_in,
            refresh_issued_at=now,
            obtained_at=now,
        )
        # Persist the new pair (one committed transaction) before anything can use it.
        await self.store.run(lambda conn: self._persist(conn, new))
        _crash_point("token:after_persist")
        self._adopt(new)
        self.rejected = False
        self.problem = None
        self.refreshes += 1
        if self.on_refresh:
            self.on_refresh("ok")
        log.info(
            "zalo_token_refreshed",
            reason=reason,
            expires_in_s=pair.expires_in,
            duration_ms=round((time.monotonic() - started) * 1000, 1),
        )
        self._wake.set()
        return new

    def _persist(self, conn: Any, new: TokenState) -> None:
        self.store._kv_put(conn, TOKENS_KEY, new.to_json())
        conn.execute("DELETE FROM kv WHERE key = ?", (REFRESH_MARKER_KEY,))

    async def store_pair(self, pair: TokenPair, source: str) -> None:
        """Store a pair obtained by the OAuth code exchange and start using it."""
        now = self.clock()
        new = TokenState(pair.access_token, pair.refresh_token, now + pair.expires_in, now, now, source)
        await self.store.run(lambda conn: self._persist(conn, new))
        self._adopt(new)
        self.rejected = False
        self.problem = None
        self._wake.set()

    # ------------------------------------------------------------------ background

    def next_refresh_in(self) -> float:
        """Seconds until the proactive refresh is due."""
        if self.state is None:
            return float("inf")
        if not self.state.access_token:
            return 0.0
        margin = self.refresh_margin_s * (1.0 + self._jitter)
        by_expiry = self.state.expires_at - margin
        by_age = self.state.refresh_issued_at + self.max_age_s * (1.0 - self._jitter / 5)
        return max(0.0, min(by_expiry, by_age) - self.clock())

    def poke(self) -> None:
        """Re-evaluate the refresh schedule now (after stored tokens or the clock changed)."""
        self._wake.set()

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake early when new tokens are stored."""
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=max(0.0, min(seconds, 3600.0)))
        except TimeoutError:
            pass

    async def _keep_fresh(self) -> None:
        failures = 0
        while True:
            if self.state is None:
                # Nothing to refresh: wait for `auth exchange` (another process) to store tokens.
                await self._sleep(30.0)
                stored = await self.store.kv_get(TOKENS_KEY)
                if stored:
                    self._adopt(TokenState.from_json(stored))
                continue
            if failures:
                await self._sleep(backoff_delay(failures, 5.0, 900.0, rng=self.rng))
                if not self.rejected and self.valid_for() > self.refresh_margin_s:
                    failures = 0  # someone stored a good pair meanwhile
                    continue
            else:
                delay = self.next_refresh_in()
                if delay > 0:
                    await self._sleep(delay)
                    continue
            try:
                await self.refresh("scheduled")
                failures = 0
            except TokenUnavailable:
                failures += 1
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never let the refresher die
                failures += 1
                log.error("zalo_token_refresher_error", error=repr(exc))
