"""What to do with a Zalo API answer: the error classes of zalo-api.md §3.3-3.4."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any


class Action(enum.Enum):
    OK = "ok"
    REFRESH_TOKEN = "refresh_token"  # refresh once, retry once
    RETRY = "retry"  # transient: backoff and retry
    RATE_LIMITED = "rate_limited"  # retry later and slow the whole budget down
    REUPLOAD = "reupload"  # uploaded asset expired
    USER = "user"  # the recipient cannot get this message now: failed, not retried
    PAYLOAD = "payload"  # our message is invalid: dead, with the reason
    ALERT = "alert"  # app/OA configuration problem: dead, operator must act


TOKEN_ERRORS = frozenset({-216, -220, -124})
USER_ERRORS = frozenset({-213, -217, -218, -227, -230, -232, -244, -234})
PAYLOAD_ERRORS = frozenset({-201, -210, -233})
ALERT_ERRORS = frozenset({-204, -205, -209, -211, -212, -219, -221, -223, -224, -240, -242, -248})
RETRY_ERRORS = frozenset({-200})


@dataclass(frozen=True)
class ZaloResult:
    """A parsed OA API envelope (or a transport failure)."""

    action: Action
    error: int = 0
    message: str = ""
    data: Any = None
    http_status: int | None = None

    @property
    def ok(self) -> bool:
        return self.action is Action.OK

    def describe(self) -> str:
        if self.http_status and self.http_status >= 300:
            return f"HTTP {self.http_status}"
        return f"{self.error} {self.message}".strip()


def classify_code(code: int) -> Action:
    if code == 0:
        return Action.OK
    if code in TOKEN_ERRORS:
        return Action.REFRESH_TOKEN
    if code == -32:
        return Action.RATE_LIMITED
    if code == -100:
        return Action.REUPLOAD
    if code in USER_ERRORS:
        return Action.USER
    if code in PAYLOAD_ERRORS:
        return Action.PAYLOAD
    if code in ALERT_ERRORS:
        return Action.ALERT
    if code in RETRY_ERRORS:
        return Action.RETRY
    # Unknown negative codes: do not loop on them forever, do not lose them either.
    return Action.PAYLOAD


def classify_response(http_status: int, body: Any) -> ZaloResult:
    """Zalo answers errors with HTTP 200 and a non-zero ``error``; only ``error == 0`` is success."""
    if http_status == 429 or http_status >= 500:
        return ZaloResult(Action.RETRY, http_status=http_status, message=f"HTTP {http_status}")
    if http_status == 401:
        return ZaloResult(Action.REFRESH_TOKEN, http_status=http_status, message="HTTP 401")
    if http_status >= 400:
        return ZaloResult(Action.PAYLOAD, http_status=http_status, message=f"HTTP {http_status}")
    if not isinstance(body, dict) or "error" not in body:
        return ZaloResult(Action.RETRY, http_status=http_status, message="unexpected response body")
    try:
        code = int(body.get("error", 0))
    except (TypeError, ValueError):
        return ZaloResult(Action.RETRY, http_status=http_status, message="unexpected error field")
    return ZaloResult(
        classify_code(code), error=code, message=str(body.get("message", "")), data=body.get("data"),
        http_status=http_status,
    )


def transport_failure(reason: str) -> ZaloResult:
    return ZaloResult(Action.RETRY, message=reason)
