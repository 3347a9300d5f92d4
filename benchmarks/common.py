"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import os
import socket
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def daemon_env(zsim: Any, csim: Any) -> dict[str, str]:
    """The secrets a daemon subprocess needs to talk to the simulators."""
    return {**os.environ, "ZALO_APP_SECRET": zsim.app_secret, "ZALO_OA_SECRET_KEY": zsim.oa_secret_key,
            "ZALO_REFRESH_TOKEN": zsim.issue_tokens()[1], "CLEVERTAP_ACCOUNT_ID": csim.account_id,
            "CLEVERTAP_PASSCODE": csim.passcode, "CLEVERTAP_WEBHOOK_USER": "u", "CLEVERTAP_WEBHOOK_PASSWORD": "p"}
