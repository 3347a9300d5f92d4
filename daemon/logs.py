"""structlog set-up: JSON lines (orjson) or console, with secrets redacted everywhere."""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections import deque
from typing import Any, BinaryIO, MutableMapping

import orjson
import structlog

REDACTED = "[redacted]"

# Keys whose values are always secret, wherever they appear (also nested in dicts).
_SECRET_KEYS = {
    "access_token",
    "refresh_token",
    "token",
    "passcode",
    "password",
    "secret",
    "secret_key",
    "authorization",
    "code_verifier",
    "x-clevertap-passcode",
    "appsecret_proof",
}
_SECRET_SUFFIXES = ("_token", "_secret", "_passcode", "_password", "_secret_key")
# "Basic dXNlcjpwYXNz" / "Bearer abc" wherever they appear inside a string.
_AUTH_RE = re.compile(r"(?i)\b(basic|bearer)\s+[A-Za-z0-9+/=._~-]{4,}")

# Known secret values (config secrets and every token we obtain); bounded so rotated tokens
# do not accumulate forever.
_lock = threading.Lock()
_values: deque[str] = deque(maxlen=64)


def register_secret(value: str | None) -> None:
    """Make sure this exact string never appears in a log line."""
    if value and len(value) >= 4:
        with _lock:
            if value not in _values:
                _values.append(value)


def is_secret_key(key: str) -> bool:
    k = key.lower()
    return k in _SECRET_KEYS or k.endswith(_SECRET_SUFFIXES)


def scrub(value: Any) -> Any:
    """Redact secrets inside any JSON-like value."""
    if isinstance(value, str):
        if _values:
            for secret in tuple(_values):
                if secret in value:
                    value = value.replace(secret, REDACTED)
        if "asic" in value or "earer" in value:
            value = _AUTH_RE.sub(lambda m: f"{m.group(1)} {REDACTED}", value)
        return value
    if isinstance(value, dict):
        return {k: (REDACTED if isinstance(k, str) and is_secret_key(k) else scrub(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(v) for v in value]
    if isinstance(value, BaseException):
        return scrub(repr(value))
    return value


def redact(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        if is_secret_key(key):
            event_dict[key] = REDACTED
        else:
            event_dict[key] = scrub(event_dict[key])
    return event_dict


def _orjson_dumps(obj: Any, **_: Any) -> bytes:
    return orjson.dumps(obj, default=repr)


def configure(
    level: str = "info",
    fmt: str = "json",
    stream: BinaryIO | None = None,
    *,
    cache: bool = True,
) -> None:
    """Configure structlog (and route stdlib logging through the same processors)."""
    lvl = logging.getLevelNamesMapping()[level.upper()]
    out = stream if stream is not None else sys.stdout.buffer
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
    ]
    if fmt == "console":
        renderer: Any = structlog.dev.ConsoleRenderer(colors=False)
        tail: list[Any] = [redact, renderer, lambda _l, _m, s: s.encode("utf-8")]
    else:
        tail = [redact, structlog.processors.format_exc_info, structlog.processors.JSONRenderer(serializer=_orjson_dumps)]
    structlog.configure(
        processors=[*shared, structlog.processors.StackInfoRenderer(), *tail],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.BytesLoggerFactory(file=out),
        cache_logger_on_first_use=cache,
    )
    # Third-party libraries (asyncio, aiohttp) log through stdlib logging: same format.
    handler = logging.StreamHandler(_TextAdapter(out))
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                redact,
                *( [structlog.dev.ConsoleRenderer(colors=False)] if fmt == "console" else [
                    structlog.processors.format_exc_info,
                    structlog.processors.JSONRenderer(serializer=lambda o, **k: orjson.dumps(o, default=repr).decode()),
                ]),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(lvl, logging.INFO))
    logging.getLogger("aiohttp.access").disabled = True


class _TextAdapter:
    """Lets a logging.StreamHandler write str into a binary stream."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out

    def write(self, s: str) -> None:
        self._out.write(s.encode("utf-8"))

    def flush(self) -> None:
        self._out.flush()


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name) if name else structlog.get_logger()
