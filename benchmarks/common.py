"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from daemon.config import to_toml


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def daemon_env(zsim: Any, csim: Any) -> dict[str, str]:
    """The secrets a daemon subprocess needs to talk to the simulators."""
    return {**os.environ, "ZALO_APP_SECRET": zsim.app_secret, "ZALO_OA_SECRET_KEY": zsim.oa_secret_key,
            "ZALO_REFRESH_TOKEN": zsim.issue_tokens()[1], "CLEVERTAP_ACCOUNT_ID": csim.account_id,
            "CLEVERTAP_PASSCODE": csim.passcode, "CLEVERTAP_WEBHOOK_USER": "u", "CLEVERTAP_WEBHOOK_PASSWORD": "p"}


def write_sim_config(path: Path, store_path: str, zsim: Any, z_url: str, c_url: str, **sections: dict[str, Any]) -> Path:
    """A daemon config pointed at the simulators (quiet logs), plus extra ``sections``."""
    data: dict[str, dict[str, Any]] = {
        "store": {"path": store_path},
        "log": {"level": "warning"},
        "zalo": {"app_id": zsim.app_id, "oa_id": zsim.oa_id, "api_base": z_url, "oauth_base": z_url},
        "clevertap": {"api_base": c_url},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    path.write_text(to_toml(data), encoding="utf-8")
    return path
