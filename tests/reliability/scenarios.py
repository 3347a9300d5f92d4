"""Kill-under-load scenario, shared by the reliability test and benchmarks/killtest.py.

A real daemon process takes mixed load (signed Zalo events and a CleverTap campaign) and is
SIGKILLed several times; after each kill it is restarted on the same store. Unacknowledged
Zalo events are redelivered, as Zalo does. At the end, every acknowledged event must have
reached CleverTap and every campaign recipient must have had the message.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from daemon.sim import CleverTapSim, WebhookSender, ZaloSim

from ..conftest import WEBHOOK_PASSWORD, WEBHOOK_USER, DaemonProcess, daemon_config_values, eventually, free_port, subprocess_env, write_config


async def kill_under_load(tmp_path: Path, zsim: ZaloSim, csim: CleverTapSim, zalo_url: str, ct_url: str, *,
                          events: int = 1500, recipients: int = 600, kills: int = 3, interval_s: float = 1.0,
                          event_rate: float = 300.0, send_rate: float = 200.0) -> dict[str, Any]:
    port = free_port()
    values = daemon_config_values(tmp_path, zsim, zalo_url, ct_url, port, zalo={"requests_per_second": send_rate},
                                  sender={"concurrency": 8})
    cfg = write_config(tmp_path / "kill.toml", values)
    with open(cfg, "a") as f:
        f.write('\n[templates.k]\ntype = "text"\ntext = "Xin chào {{Profile.Name | default: \\"bạn\\"}}"\n')
    users = zsim.add_users(recipients)
    env_first = subprocess_env(zsim, csim, zsim.issue_tokens()[1])
    env = subprocess_env(zsim, csim)
    daemon = await DaemonProcess(cfg, env_first, port).start()
    outputs: list[bytes] = []
    acked: set[str] = set()
    sent_attempts = 0
    pending = [f"kill-{i}" for i in range(events)]
    campaign_acked = False
    stop = asyncio.Event()

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        url = lambda: daemon.url  # noqa: E731 - same port across restarts

        async def zalo_load() -> None:
            nonlocal sent_attempts
            senders = [f"{9100000000000000000 + i}" for i in range(50)]
            while pending and not stop.is_set():
                batch, pending[:] = pending[:20], pending[20:]
                retry: list[str] = []

                async def one(mid: str, retry: list[str] = retry) -> None:
                    nonlocal sent_attempts
                    body = zsim.event("user_send_text", senders[hash(mid) % len(senders)], msg_id=mid, text="hi")
                    sent_attempts += 1
                    try:
                        status, _ = await zsim.deliver(session, url() + "/webhooks/zalo", body)
                    except (aiohttp.ClientError, asyncio.TimeoutError):
                        status = 0
                    if status == 200:
                        acked.add(mid)
                    else:
                        retry.append(mid)  # Zalo redelivers what was not acknowledged

                await asyncio.gather(*(one(m) for m in batch))
                pending.extend(retry)
                # Pace the load (a load generator's rate, not synchronisation) so it spans every kill.
                await asyncio.sleep(len(batch) / event_rate)

        async def campaign() -> None:
            nonlocal campaign_acked
            sender = WebhookSender(session, "", WEBHOOK_USER, WEBHOOK_PASSWORD, timeout_s=10)
            profiles = [{"identity": u, "profileData": {"zalo_user_id": u}} for u in users]
            while not campaign_acked:
                sender.url = url() + "/webhooks/clevertap"
                status, _ = await sender.campaign(4242, profiles, {"zalo_template": "k"})
                campaign_acked = status == 200
                if not campaign_acked:
                    await asyncio.sleep(0.1)

        load = asyncio.gather(zalo_load(), campaign())
        kill_stats = []
        for _ in range(kills):
            await asyncio.sleep(interval_s)
            kill_stats.append({"acked": len(acked), "messages": len(zsim.messages)})
            await daemon.kill()
            outputs.extend(daemon.raw)
            daemon = await DaemonProcess(cfg, env, port).start()
        await load
        delivered_ids = lambda: {e["evtData"]["zalo_msg_id"] for e in csim.events_named("Zalo Message Received")}  # noqa: E731
        await eventually(lambda: acked <= delivered_ids() and len({m["user_id"] for m in zsim.messages}) >= recipients,
                         zsim.changed, csim.changed, timeout=90, what="everything delivered after the kills")
        rc = await daemon.terminate()
        outputs.extend(daemon.raw)
    received = Counter(e["evtData"]["zalo_msg_id"] for e in csim.events_named("Zalo Message Received"))
    messaged = Counter(m["user_id"] for m in zsim.messages)
    return {
        "kills": kills,
        "at_kills": kill_stats,
        "events_sent": sent_attempts,
        "events_acknowledged": len(acked),
        "events_delivered": len(set(received) & acked),
        "events_lost": len(acked - set(received)),
        "event_duplicates": sum(n - 1 for n in received.values()),
        "campaign_recipients": recipients,
        "messages_delivered": len(messaged),
        "message_duplicates": sum(n - 1 for n in messaged.values()),
        "exit_code_after_sigterm": rc,
        "log_bytes": sum(len(o) for o in outputs),
        "_log": b"".join(outputs),
    }


def summary_json(result: dict[str, Any]) -> str:
    return orjson.dumps({k: v for k, v in result.items() if not k.startswith("_")}, option=orjson.OPT_INDENT_2).decode()


__all__ = ["kill_under_load", "summary_json", "time"]
