"""CleverTap /1/upload: reading answers (pure) and the thin HTTP client.

HTTP 200 is not success: the body says ``success | partial | fail`` and lists ``unprocessed``
records (clevertap-api.md §1.6-1.8). :func:`classify_upload` maps every sent record to one of
``processed``, ``retry`` (code 555, network, 5xx, 429) or ``dead`` (validation codes), so that
processed records are never sent again (events are not idempotent).
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

import aiohttp
import orjson

RETRYABLE_RECORD_CODES = frozenset({555})
_RECORD_NUMBER = re.compile(r"record number\s*:\s*(\d+)", re.I)

CallResult = Literal["ok", "partial", "retry", "throttled", "auth", "rejected"]


@dataclass
class UploadOutcome:
    call: CallResult
    # Per input record: ("processed", None) | ("retry", reason) | ("dead", reason)
    records: list[tuple[str, str | None]] = field(default_factory=list)
    http_status: int | None = None
    message: str = ""
    unmatched: int = 0

    @property
    def processed(self) -> int:
        return sum(1 for s, _ in self.records if s == "processed")

    @property
    def failed(self) -> int:
        return sum(1 for s, _ in self.records if s != "processed")


def _same_record(echo: Any, sent: dict[str, Any]) -> bool:
    if isinstance(echo, str):
        try:
            echo = orjson.loads(echo)
        except orjson.JSONDecodeError:
            return False
    return isinstance(echo, dict) and echo == sent


def classify_upload(http_status: int | None, body: Any, records: Sequence[dict[str, Any]], reason: str = "") -> UploadOutcome:
    n = len(records)
    if http_status is None:
        return UploadOutcome("retry", [("retry", reason or "network error")] * n, None, reason)
    if http_status == 429:
        return UploadOutcome("throttled", [("retry", "HTTP 429 too many concurrent requests")] * n, 429, "too many concurrent requests")
    if http_status >= 500:
        return UploadOutcome("retry", [("retry", f"HTTP {http_status}")] * n, http_status, f"HTTP {http_status}")
    if http_status in (401, 403):
        msg = body.get("error") if isinstance(body, dict) else None
        return UploadOutcome("auth", [("retry", f"HTTP {http_status}")] * n, http_status, str(msg or f"HTTP {http_status}"))
    if http_status >= 400 or not isinstance(body, dict):
        msg = body.get("error") if isinstance(body, dict) else "unexpected response"
        return UploadOutcome("rejected", [("dead", f"HTTP {http_status}: {msg}")] * n, http_status, str(msg))
    status = body.get("status")
    unprocessed = body.get("unprocessed") or []
    results: list[tuple[str, str | None]] = [("processed", None)] * n
    unmatched = 0
    if status == "success" and not unprocessed:
        return UploadOutcome("ok", results, http_status)
    if status not in ("success", "partial", "fail"):
        # Unknown answer: nothing says the records were processed; profiles are safe to resend
        # but events are not, so treat it as a whole-call failure to retry.
        return UploadOutcome("retry", [("retry", f"unexpected status {status!r}")] * n, http_status, "unexpected status")
    if status == "fail" and not unprocessed:
        return UploadOutcome("rejected", [("dead", "status fail without details")] * n, http_status, "fail")
    taken: set[int] = set()
    for item in unprocessed if isinstance(unprocessed, list) else []:
        if not isinstance(item, dict):
            unmatched += 1
            continue
        idx: int | None = None
        m = _RECORD_NUMBER.search(str(item.get("error", "")))
        if m:
            k = int(m.group(1)) - 1  # "Skipped record number" is 1-based
            if 0 <= k < n and k not in taken:
                idx = k
        if idx is None and "record" in item:
            for k, rec in enumerate(records):
                if k not in taken and _same_record(item["record"], rec):
                    idx = k
                    break
        if idx is None:
            unmatched += 1
            continue
        taken.add(idx)
        try:
            code = int(item.get("code", 0))
        except (TypeError, ValueError):
            code = 0
        why = f"{code} {item.get('error', '')}".strip()
        results[idx] = ("retry", why) if code in RETRYABLE_RECORD_CODES else ("dead", why)
    call: CallResult = "ok" if not taken and not unmatched else "partial"
    return UploadOutcome(call, results, http_status, str(status), unmatched)


class CleverTapClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        api_base: str,
        account_id: str,
        passcode: str,
        *,
        timeout_s: float = 60.0,
    ) -> None:
        self.session = session
        self.url = api_base.rstrip("/") + "/1/upload"
        self.headers = {
            "X-CleverTap-Account-Id": account_id,
            "X-CleverTap-Passcode": passcode,
            "Content-Type": "application/json; charset=utf-8",
        }
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def upload(self, records: Sequence[dict[str, Any]]) -> tuple[UploadOutcome, float]:
        started = time.monotonic()
        try:
            async with self.session.post(
                self.url, data=orjson.dumps({"d": list(records)}), headers=self.headers, timeout=self.timeout
            ) as resp:
                raw = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            return classify_upload(None, None, records, f"{type(exc).__name__}: {exc}"[:200]), time.monotonic() - started
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
        return classify_upload(status, body, records), time.monotonic() - started
