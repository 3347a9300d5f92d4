"""``zalo-bridge demo``: the whole daemon against the built-in simulators, no credentials needed."""

from __future__ import annotations

import asyncio
import io
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from . import config as config_mod
from . import logs
from .config import Config, Secret, Secrets
from .sim import CleverTapSim, WebhookSender, ZaloSim, serve

DEMO_PDF = b"%PDF-1.4\n% zalo-bridge demo brochure\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


async def wait_until(pred: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"demo: timed out waiting for {what}")
        await asyncio.sleep(0.05)


def demo_config(base: Config, *, zalo_url: str, ct_url: str, store_path: str, zsim: ZaloSim, csim: CleverTapSim,
                refresh_token: str) -> Config:
    """The example config pointed at the simulators, with throwaway secrets."""
    secrets = Secrets(
        zalo_app_secret=Secret(zsim.app_secret, "demo"),
        zalo_oa_secret_key=Secret(zsim.oa_secret_key, "demo"),
        zalo_refresh_token=Secret(refresh_token, "demo"),
        clevertap_account_id=Secret(csim.account_id, "demo"),
        clevertap_passcode=Secret(csim.passcode, "demo"),
        clevertap_webhook_user=Secret("clevertap", "demo"),
        clevertap_webhook_password=Secret("demo-webhook-password", "demo"),
    )
    cfg = base.replace(**{
        "server.port": 0,
        "store.path": store_path,
        "zalo.app_id": zsim.app_id,
        "zalo.oa_id": zsim.oa_id,
        "zalo.api_base": zalo_url,
        "zalo.oauth_base": zalo_url,
        "clevertap.api_base": ct_url,
        "clevertap.flush_interval_s": 0.2,
        "store.poll_interval_s": 0.5,
    })
    import dataclasses

    return dataclasses.replace(cfg, secrets=secrets)


def _profile(uid: str | None, identity: str, name: str) -> dict[str, Any]:
    data: dict[str, Any] = {"Name": name}
    if uid:
        data["zalo_user_id"] = uid
    return {"identity": identity, "objectId": f"__g{identity}", "profileData": data}


async def run(out: Callable[[str], None] = print) -> int:
    from .app import create_app
    from .appkeys import STATE

    zsim, csim = ZaloSim(), CleverTapSim()
    async def brochure(request: web.Request) -> web.Response:
        return web.Response(body=DEMO_PDF, content_type="application/pdf")

    files = web.Application()
    files.router.add_get("/files/brochure.pdf", brochure)
    runners = []
    z_runner, z_url = await serve(zsim.app())
    c_runner, c_url = await serve(csim.app())
    f_runner, f_url = await serve(files)
    runners += [z_runner, c_runner, f_runner]
    _, refresh = zsim.issue_tokens()  # as an OA admin would copy it from API Explorer
    base = config_mod.load("config.toml", env={}, require_secrets=False) if os.path.exists("config.toml") else Config(
        zalo=config_mod.ZaloConfig(app_id="1", oa_id="1"))
    tmp = tempfile.TemporaryDirectory(prefix="zalo-bridge-demo-")
    cfg = demo_config(base, zalo_url=z_url, ct_url=c_url, store_path=str(Path(tmp.name) / "demo.db"), zsim=zsim,
                      csim=csim, refresh_token=refresh)
    app = create_app(cfg, schedule_backfill=False)
    d_runner, d_url = await serve(app)
    runners.append(d_runner)
    rt = app[STATE]
    try:
        async with aiohttp.ClientSession() as session:
            # 1. Identity capture: a follow and a message from Zalo.
            alice = zsim.add_user("5510185758261927916", display_name="Alice").user_id
            bob = zsim.add_user("8309393969855402319", display_name="Bob").user_id
            zalo_results = []
            for body in (
                zsim.event("follow", alice),
                zsim.event("user_send_text", alice, text="Xin chào, tôi muốn nhận khuyến mãi"),
                zsim.event("follow", bob),
            ):
                zalo_results.append((body["event_name"], *await zsim.deliver(session, d_url + "/webhooks/zalo", body)))
            redelivered = zsim.event("user_send_text", bob, text="Giá bao nhiêu?")
            zalo_results.append(("user_send_text", *await zsim.deliver(session, d_url + "/webhooks/zalo", redelivered)))
            zalo_results.append(("(redelivery)", *await zsim.deliver(session, d_url + "/webhooks/zalo", redelivered,
                                                                     headers={"num_retry": "1"})))
            await wait_until(lambda: len(csim.events) >= 4 and alice in csim.profiles, what="profiles in CleverTap")

            # 2. Campaign delivery: CleverTap webhooks with every message type.
            sender = WebhookSender(session, d_url + "/webhooks/clevertap", "clevertap", "demo-webhook-password")
            ping = await sender.ping()
            specs = {
                "text": {"type": "text", "text": "Chào {{Profile.Name}}! Ưu đãi 20% hôm nay."},
                "image": {"type": "image", "url": "https://example.com/banner.jpg", "text": "Bộ sưu tập mới"},
                "file": {"type": "file", "url": f_url + "/files/brochure.pdf", "name": "brochure.pdf"},
                "buttons": {"type": "buttons", "text": "Bạn cần gì?", "buttons": [
                    {"type": "url", "title": "Xem website", "url": "https://example.com"},
                    {"type": "phone", "title": "Gọi hotline", "phone": "84123456789"}]},
                "quick_replies": {"type": "quick_replies", "text": "Bạn có hài lòng?", "replies": [
                    {"title": "Có", "payload": "#yes"}, {"title": "Không", "payload": "#no"}]},
                "list": {"type": "list", "elements": [
                    {"title": "Áo thun", "subtitle": "199.000đ", "image_url": "https://example.com/a.jpg",
                     "action": {"type": "url", "url": "https://example.com/a"}},
                    {"title": "Hỏi giá", "action": {"type": "query_hide", "payload": "#price"}}]},
                "raw": {"type": "raw", "message": {"text": "Tin nhắn gửi nguyên bản"}},
            }
            campaign_results = []
            for kind, spec in specs.items():
                body = {"campaign": f"demo-{kind}", "zalo_user_id": alice, "identity": alice, "message": spec,
                        "profile": {"Name": "Alice"}}
                campaign_results.append((f"custom body: {kind}", *await sender.post(body)))
            template = next(iter(cfg.templates), None)
            kv = {"zalo_template": template} if template else {}
            profiles = [_profile(alice, alice, "Alice"), _profile(bob, bob, "Bob"), _profile(None, "no-zalo-42", "Carol")]
            if not template:
                body = WebhookSender.default_payload(1700000001, profiles, kv)
                body["message"] = specs["text"]
                campaign_results.append(("default payload", *await sender.post(body)))
            else:
                campaign_results.append((f"default payload, template {template}",
                                         *await sender.campaign(1700000001, profiles, kv)))
            expected = len(specs) + 2
            await wait_until(lambda: len(zsim.messages) >= expected, what="messages at Zalo")
            await wait_until(lambda: len(csim.events_named("Zalo Message Sent")) >= expected, what="outcome events")

            # 3. Follower backfill: followers who never wrote to the OA.
            zsim.add_users(120, spread_days=20)
            summary = await rt.backfill.run_pass()
            await wait_until(lambda: len(csim.profiles) >= 122, what="backfilled profiles")

            # 4. What each side received.
            out("zalo-bridge demo: the daemon ran against the Zalo and CleverTap simulators\n")
            out("1. Zalo -> daemon (signed OA webhooks)")
            for name, status, answer in zalo_results:
                out(f"   {name:<22} HTTP {status}  {_short(answer)}")
            out("\n2. CleverTap -> daemon (campaign webhooks, Basic auth)")
            out(f"   {'test ping':<36} HTTP {ping[0]}  {_short(ping[1])}")
            for name, status, answer in campaign_results:
                out(f"   {name:<36} HTTP {status}  {_short(answer)}")
            out(f"\n3. Zalo received {len(zsim.messages)} messages via /v3.0/oa/message/cs "
                f"(uploads: {len(zsim.uploads)}, token refreshes: {zsim.refreshes})")
            for m in zsim.messages:
                out(f"   to {m['user_id']}: {_describe(m['message'])}")
            out(f"\n4. CleverTap received {len(csim.calls)} /1/upload calls, "
                f"{len(csim.profile_updates)} profile updates, {len(csim.events)} events")
            for name in sorted({e['evtName'] for e in csim.events}):
                out(f"   {name:<24} x{len(csim.events_named(name))}")
            for ident in (alice, bob):
                out(f"   profile {ident}: {csim.profiles.get(ident)}")
            out(f"\n5. Backfill pass: {summary.get('listed')} followers listed, {summary.get('uploaded')} new uploaded, "
                f"{summary.get('list_calls')} getlist calls; CleverTap now has {len(csim.profiles)} profiles")
            ready = await rt.readiness()
            out(f"\n6. /readyz: {'ready' if ready['ready'] else 'NOT ready: ' + str(ready['failing'])}; "
                f"queue: {dict((await rt.store.stats()).by_state())}")
            return 0
    finally:
        for r in reversed(runners):
            await r.cleanup()
        tmp.cleanup()


def _short(answer: Any) -> str:
    s = str(answer)
    return s if len(s) <= 110 else s[:107] + "..."


def _describe(message: dict[str, Any]) -> str:
    att = message.get("attachment") or {}
    payload = att.get("payload") or {}
    if att.get("type") == "file":
        return "file attachment (token from /v2.0/oa/upload/file)"
    kind = payload.get("template_type") or ("buttons" if payload.get("buttons") else "text")
    extra = ""
    if payload.get("buttons"):
        extra = " [" + ", ".join(f"{b['type']}:{b['title']}" for b in payload["buttons"]) + "]"
    if kind == "list":
        extra = f" [{len(payload['elements'])} elements]"
    text = message.get("text")
    return f"{kind}{extra}" + (f" {text!r}" if text else "")


def main(verbose: bool = False) -> int:
    sink = sys.stdout.buffer if verbose else io.BytesIO()
    logs.configure("info", "console" if verbose else "json", sink)
    try:
        return asyncio.run(run())
    except TimeoutError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        if not verbose:
            sys.stderr.write(sink.getvalue().decode(errors="replace")[-4000:])  # type: ignore[union-attr]
        return 1
