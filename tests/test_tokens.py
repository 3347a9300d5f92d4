"""Flow 3: the OA token manager against the Zalo simulator (single-use refresh tokens)."""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from daemon import logs
from daemon.__main__ import _auth_url, main
from daemon.store import Store
from daemon.zalo.errors import Action
from daemon.zalo.tokens import REFRESH_MARKER_KEY, TOKENS_KEY, TokenManager, TokenUnavailable

from .conftest import DaemonProcess, daemon_config_values, eventually, free_port, subprocess_env, write_config


async def token_ready(bridge: Any) -> None:
    await bridge.until(lambda: bridge.rt.tokens.valid_for() > 0, what="a valid access token")


async def test_bootstrap_refresh_persists_the_rotated_pair(bridge: Any) -> None:
    await token_ready(bridge)
    (req,) = bridge.zsim.token_requests
    assert req["grant_type"] == "refresh_token" and req["app_id"] == bridge.zsim.app_id and req["secret_key_ok"]
    stored = await bridge.store.kv_get(TOKENS_KEY)
    assert bridge.zsim.access_token_valid(stored["access_token"])
    assert bridge.zsim.refresh_token_valid(stored["refresh_token"])  # the new one: the old was consumed
    assert stored["refresh_token"] != req["refresh_token"]
    assert await bridge.store.kv_get(REFRESH_MARKER_KEY) is None


async def make_manager(tmp_path: Path, zsim: Any, zalo_url: str, session: aiohttp.ClientSession, **kw: Any) -> tuple[Store, TokenManager]:
    store = await Store.open(str(tmp_path / "t.db"))
    tm = TokenManager(store, session, app_id=zsim.app_id, app_secret=zsim.app_secret, oauth_base=zalo_url,
                      bootstrap_refresh_token=zsim.issue_tokens()[1], **kw)
    await tm._load()
    return store, tm


async def test_hundred_callers_at_expiry_cause_one_refresh(tmp_path: Path, zsim: Any, zalo_url: str) -> None:
    async with aiohttp.ClientSession() as session:
        store, tm = await make_manager(tmp_path, zsim, zalo_url, session)
        try:
            zsim.faults.latency_s = 0.05  # keep the refresh in flight while callers pile up
            tokens = await asyncio.gather(*(tm.access_token() for _ in range(100)))
            assert len(set(tokens)) == 1 and zsim.refreshes == 1
            # Expire it: again 100 callers, again exactly one refresh.
            tm.state.expires_at = time.time() - 1
            zsim.expire_access_tokens()
            tokens2 = await asyncio.gather(*(tm.access_token() for _ in range(100)))
            assert len(set(tokens2)) == 1 and tokens2[0] != tokens[0] and zsim.refreshes == 2
            # Many callers reporting the same bad token: one refresh; a stale report: none.
            again = await asyncio.gather(*(tm.on_token_error(tokens2[0]) for _ in range(50)))
            assert len(set(again)) == 1 and zsim.refreshes == 3
            assert await tm.on_token_error(tokens2[0]) == again[0] and zsim.refreshes == 3
        finally:
            await store.close()


async def test_http_200_error_bodies_are_failures_and_keep_the_stored_pair(tmp_path: Path, zsim: Any, zalo_url: str) -> None:
    async with aiohttp.ClientSession() as session:
        store, tm = await make_manager(tmp_path, zsim, zalo_url, session)
        try:
            await tm.access_token()
            before = await store.kv_get(TOKENS_KEY)
            zsim.revoke_refresh_tokens()  # e.g. consumed elsewhere: Zalo answers HTTP 200 + error body
            with pytest.raises(TokenUnavailable, match="Invalid refresh token"):
                await tm.refresh("test", force=True)
            assert await store.kv_get(TOKENS_KEY) == before  # nothing overwritten with "undefined"
            ok, problem = tm.ready()
            assert not ok and "zalo-bridge auth url" in problem
        finally:
            await store.close()


async def test_integer_expires_in_is_accepted(tmp_path: Path, zsim: Any, zalo_url: str) -> None:
    zsim.faults.expires_in_as_int = True
    async with aiohttp.ClientSession() as session:
        store, tm = await make_manager(tmp_path, zsim, zalo_url, session)
        try:
            await tm.access_token()
            assert 89_000 < tm.valid_for() <= 90_000
        finally:
            await store.close()


async def test_transient_token_endpoint_failure_is_retried_not_fatal(tmp_path: Path, zsim: Any, zalo_url: str) -> None:
    async with aiohttp.ClientSession() as session:
        store, tm = await make_manager(tmp_path, zsim, zalo_url, session)
        try:
            zsim.faults.queue("token", ("http", 502))
            with pytest.raises(TokenUnavailable, match="HTTP 502"):
                await tm.access_token()
            assert not tm.rejected
            assert await tm.access_token()  # the refresh token was not consumed by the 502
        finally:
            await store.close()


async def test_one_token_error_refreshes_and_retries_once(bridge: Any) -> None:
    await token_ready(bridge)
    uid = bridge.zsim.add_user().user_id
    refreshes = bridge.zsim.refreshes
    bridge.zsim.faults.queue("message", -216)
    result = await bridge.rt.zalo.call("POST", "/v3.0/oa/message/cs",
                                       json={"recipient": {"user_id": uid}, "message": {"text": "hi"}})
    assert result.ok and bridge.zsim.refreshes == refreshes + 1
    bridge.zsim.faults.queue("message", -220, -216)
    result = await bridge.rt.zalo.call("POST", "/v3.0/oa/message/cs",
                                       json={"recipient": {"user_id": uid}, "message": {"text": "hi"}})
    assert result.action is Action.REFRESH_TOKEN and result.error == -216  # second token error: not retried
    assert bridge.zsim.refreshes == refreshes + 2


async def test_hours_of_simulated_time_with_concurrent_senders(bridge_factory: Any, zsim: Any) -> None:
    zsim.access_ttl_s = 3600
    clock = lambda: time.time() + zsim.offset  # noqa: E731 - daemon and simulator share the clock
    b = await bridge_factory(clock=clock, zalo__token_refresh_margin_s=600.0)
    await token_ready(b)
    users = [zsim.add_user().user_id for _ in range(5)]
    sent = 0
    for _step in range(36):  # 36 x 5 minutes = 3 hours
        zsim.advance(300)
        for u in users:
            zsim.interact(u)
        b.rt.tokens.poke()
        results = await asyncio.gather(*(
            b.rt.zalo.call("POST", "/v3.0/oa/message/cs", json={"recipient": {"user_id": u}, "message": {"text": "x"}})
            for u in users * 4
        ))
        assert all(r.ok for r in results), [r.describe() for r in results if not r.ok]
        sent += len(results)
    assert len(zsim.messages) == sent == 720
    assert [c for c in zsim.rejected_calls if c.get("reason")] == []  # no token error reached a caller
    assert 3 <= zsim.refreshes <= 8  # about one per simulated hour (+ the bootstrap)


async def test_rejected_refresh_token_fails_readiness_but_webhooks_still_work(bridge_factory: Any, zsim: Any) -> None:
    _, used = zsim.issue_tokens()
    zsim.refresh_tokens[used]["used"] = True  # the operator handed us a token that was already used
    b = await bridge_factory(refresh_token=used)
    await b.until(lambda: b.rt.tokens.rejected, what="rejection")
    failure = await b.readiness_failure("zalo_token")
    assert "Zalo rejected the refresh token" in failure["message"] and "zalo-bridge auth url" in failure["message"]
    from .samples import fresh

    status, _ = await b.zalo(fresh("follow", zsim.app_id))
    assert status == 200  # intake only needs the store
    await b.until(lambda: b.csim.events, what="identity flow still running")


async def test_oauth_callback_checks_state_and_pkce(bridge_factory: Any, zsim: Any) -> None:
    b = await bridge_factory(refresh_token=None)
    cfg = b.rt.cfg
    url = await _auth_url_in_thread(cfg)
    q = parse_qs(urlsplit(url).query)
    assert set(q) == {"app_id", "redirect_uri", "code_challenge", "state"}
    # The OA admin consents: Zalo redirects to our callback with code and state.
    async with aiohttp.ClientSession() as s:
        async with s.get(url.replace(cfg.zalo.oauth_base, cfg.zalo.oauth_base), allow_redirects=False) as resp:
            assert resp.status == 302
            loc = parse_qs(urlsplit(resp.headers["Location"]).query)
    code, state = loc["code"][0], loc["state"][0]
    assert state == q["state"][0]
    bad = await b.client.get("/oauth/zalo/callback", params={"code": code, "state": "forged"})
    assert bad.status == 400 and (await bad.json())["error"]["code"] == "invalid_state"
    assert await b.store.kv_get(TOKENS_KEY) is None
    ok = await b.client.get("/oauth/zalo/callback", params={"code": code, "state": state})
    assert ok.status == 200, await ok.text()
    stored = await b.store.kv_get(TOKENS_KEY)
    assert zsim.access_token_valid(stored["access_token"]) and stored["source"] == "oauth callback"
    (req,) = [r for r in zsim.token_requests if r["grant_type"] == "authorization_code"]
    assert req["code_verifier"] and req["secret_key_ok"]
    reused = await b.client.get("/oauth/zalo/callback", params={"code": code, "state": state})
    assert reused.status == 400 and (await reused.json())["error"]["code"] == "invalid_state"
    assert (await (await b.client.get("/readyz")).json())["ready"] is True
    missing = await b.client.get("/oauth/zalo/callback")
    assert missing.status == 400


async def _auth_url_in_thread(cfg: Any) -> str:
    return await _auth_url(cfg)


async def test_callback_with_a_code_zalo_refuses_stores_nothing(bridge_factory: Any, zsim: Any) -> None:
    b = await bridge_factory(refresh_token=None)
    url = await _auth_url(b.rt.cfg)
    state = parse_qs(urlsplit(url).query)["state"][0]
    resp = await b.client.get("/oauth/zalo/callback", params={"code": "made-up", "state": state})
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "code_rejected"
    assert await b.store.kv_get(TOKENS_KEY) is None


async def test_auth_exchange_cli_stores_tokens_for_the_running_daemon(bridge_factory: Any, zsim: Any, tmp_path: Path,
                                                                     monkeypatch: Any, capsys: Any) -> None:
    b = await bridge_factory(refresh_token=None)
    cfg = b.rt.cfg
    path = write_config(tmp_path / "c.toml", {
        "zalo": {"app_id": zsim.app_id, "oa_id": zsim.oa_id, "oauth_base": cfg.zalo.oauth_base,
                 "redirect_uri": "https://bridge.example.com/cb"},
        "store": {"path": cfg.store.path},
    })
    for k, v in subprocess_env(zsim, b.csim).items():
        if k.startswith(("ZALO_", "CLEVERTAP_")):
            monkeypatch.setenv(k, v)
    assert await asyncio.to_thread(main, ["auth", "url", "--config", str(path)]) == 0
    url = [line for line in capsys.readouterr().out.splitlines() if line.startswith("http")][0]
    challenge = parse_qs(urlsplit(url).query)["code_challenge"][0]
    code = zsim.grant_code(challenge)
    assert await asyncio.to_thread(main, ["auth", "exchange", "--code", code, "--config", str(path)]) == 0
    assert await asyncio.to_thread(main, ["auth", "exchange", "--code", code, "--config", str(path)]) == 1  # single use
    b.rt.tokens.poke()
    await b.until(lambda: b.rt.tokens.valid_for() > 0, timeout=35, what="daemon adopting the stored tokens")


async def test_tokens_never_reach_logs_metrics_or_errors(bridge_factory: Any, zsim: Any) -> None:
    sink = io.BytesIO()
    logs.configure("debug", "json", sink, cache=False)
    try:
        b = await bridge_factory()
        await token_ready(b)
        zsim.faults.queue("message", -216)
        uid = zsim.add_user().user_id
        await b.rt.zalo.call("POST", "/v3.0/oa/message/cs", json={"recipient": {"user_id": uid}, "message": {"text": "x"}})
        logs.get_logger("test").info("leak_attempt", note=f"token is {b.rt.tokens.state.access_token}",
                                     access_token=b.rt.tokens.state.access_token,
                                     nested={"refresh_token": b.rt.tokens.state.refresh_token})
        metrics = await (await b.client.get("/metrics")).text()
        ready = await (await b.client.get("/readyz")).text()
    finally:
        logs.configure("debug", "json", io.BytesIO(), cache=False)
    out = sink.getvalue().decode()
    assert "zalo_token_refreshed" in out and "leak_attempt" in out
    secrets = {t for t in zsim.access_tokens} | {t for t in zsim.refresh_tokens} | set(b.rt.cfg.secrets.values())
    for secret in secrets:
        assert secret not in out and secret not in metrics and secret not in ready


# ---------------------------------------------------------------------------- crash safety (real processes)


@pytest.mark.parametrize("crash_at", ["token:before_request", "token:after_persist"])
async def test_sigkill_during_refresh_leaves_a_usable_token(tmp_path: Path, zsim: Any, csim: Any, zalo_url: str,
                                                            ct_url: str, crash_at: str) -> None:
    port = free_port()
    cfg = write_config(tmp_path / "c.toml", daemon_config_values(tmp_path, zsim, zalo_url, ct_url, port))
    _, bootstrap = zsim.issue_tokens()
    first = DaemonProcess(cfg, subprocess_env(zsim, csim, bootstrap, ZALO_BRIDGE_CRASH_AT=crash_at), port)
    await first.start(wait=False)
    rc = await first.wait(timeout=30)
    assert rc == -9, b"".join(first.raw).decode()[-2000:]  # SIGKILLed at the crash point
    # Restart without ZALO_REFRESH_TOKEN: the store must own a usable token.
    second = DaemonProcess(cfg, subprocess_env(zsim, csim), port)
    await second.start()
    try:
        async with aiohttp.ClientSession() as s:
            async def ready() -> bool:
                async with s.get(second.url + "/readyz") as r:
                    return r.status == 200

            await eventually(ready, second.line_event, zsim.changed, timeout=20, what="readiness after restart")
        store = await Store.open(str(tmp_path / "state" / "bridge.db"), exclusive=False)
        try:
            stored = await store.kv_get(TOKENS_KEY)
        finally:
            await store.close()
        assert zsim.access_token_valid(stored["access_token"])  # valid in the simulator's eyes
        assert zsim.refresh_token_valid(stored["refresh_token"])
        if crash_at == "token:before_request":
            assert second.events("zalo_token_refresh_interrupted")
    finally:
        assert await second.terminate() == 0
