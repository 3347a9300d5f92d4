"""Typed keys of the aiohttp application (one module, so web.py and app.py share them)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from .config import Config
from .metrics import Metrics

if TYPE_CHECKING:
    from .app import Runtime

CONFIG = web.AppKey("config", Config)
METRICS = web.AppKey("metrics", Metrics)
STATE: web.AppKey["Runtime"] = web.AppKey("runtime")
