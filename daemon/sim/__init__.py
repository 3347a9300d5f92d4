"""Simulators of the Zalo OA API and CleverTap, used by the demo, the tests and the benchmarks."""

from __future__ import annotations

from aiohttp import web

from .clevertap import CleverTapSim, WebhookSender
from .zalo import ZaloSim

__all__ = ["ZaloSim", "CleverTapSim", "WebhookSender", "serve"]


async def serve(app: web.Application, host: str = "127.0.0.1", port: int = 0) -> tuple[web.AppRunner, str]:
    """Start an aiohttp app on a free port; returns the runner (call ``cleanup()``) and base URL."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    sockets = site._server.sockets if site._server else []  # type: ignore[union-attr]
    bound = sockets[0].getsockname()[1] if sockets else port
    return runner, f"http://{host}:{bound}"
