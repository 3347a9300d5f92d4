"""/healthz, /readyz, /metrics and JSON errors for unknown routes, through real sockets."""

from __future__ import annotations

from typing import Any

from daemon.zalo.tokens import TOKENS_KEY


async def test_healthz(bridge: Any) -> None:
    resp = await bridge.client.get("/healthz")
    assert resp.status == 200 and (await resp.json()) == {"ok": True}
    assert resp.headers["X-Request-Id"]


async def test_ready_when_store_token_and_backlog_are_fine(bridge: Any) -> None:
    await bridge.until(lambda: bridge.rt.tokens.valid_for() > 0, what="first token")
    resp = await bridge.client.get("/readyz")
    body = await resp.json()
    assert resp.status == 200, body
    assert body["ready"] is True and body["failing"] == []


async def test_not_ready_without_a_token(bridge_factory: Any) -> None:
    b = await bridge_factory(refresh_token=None)
    failure = await b.readiness_failure("zalo_token")
    assert "zalo-bridge auth url" in failure["message"]
    assert await b.store.kv_get(TOKENS_KEY) is None


async def test_not_ready_when_backlog_exceeds_the_limit(bridge_factory: Any) -> None:
    b = await bridge_factory(store__max_backlog=3, sender__concurrency=1)
    b.zsim.faults.down.add("message")  # nothing can be sent: jobs stay in the queue
    await b.store.enqueue_many([])
    for i in range(3):
        await b.store.enqueue("zalo_send_parked", {"i": i})
    resp = await b.client.get("/readyz")
    body = await resp.json()
    assert resp.status == 503
    assert any(f["check"] == "backlog" and "store.max_backlog=3" in f["message"] for f in body["failing"])


async def test_not_ready_when_store_is_not_writable(bridge: Any) -> None:
    await bridge.until(lambda: bridge.rt.tokens.valid_for() > 0, what="first token")

    def boom(conn: Any) -> None:
        raise OSError("disk full")

    bridge.store.check_writable = lambda: bridge.store.run(boom)  # the real op fails inside the store thread
    resp = await bridge.client.get("/readyz")
    body = await resp.json()
    assert resp.status == 503
    assert body["failing"][0]["check"] == "store" and "disk full" in body["failing"][0]["message"]


async def test_metrics_exposition(bridge: Any) -> None:
    await bridge.client.get("/healthz")
    await bridge.store.enqueue("zalo_event", {"event": {}}, state="ignored")
    resp = await bridge.client.get("/metrics")
    text = await resp.text()
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
    assert 'zalo_bridge_http_requests_total{route="/healthz",status="200"} 1.0' in text
    assert 'zalo_bridge_queue_jobs{kind="zalo_event",state="ignored"} 1.0' in text
    assert "zalo_bridge_zalo_access_token_expiry_seconds" in text


async def test_unknown_route_and_method_are_json(bridge: Any) -> None:
    resp = await bridge.client.get("/nope")
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "not_found"
    resp = await bridge.client.delete("/webhooks/zalo")
    assert resp.status == 405 and (await resp.json())["error"]["code"] == "method_not_allowed"
