"""Exact JSON for webhook bodies.

orjson is fast but turns integers wider than 64 bits into floats (losing digits) and cannot
serialise them back. Bodies that contain such numbers are re-parsed with the standard library,
and any integer outside the 64-bit range becomes a string (ids are strings anyway).
"""

from __future__ import annotations

import json
from typing import Any

import orjson

_MIN, _MAX = -(2**63), 2**64 - 1


class JSONError(ValueError):
    pass


def _has_float(obj: Any) -> bool:
    if isinstance(obj, float):
        return True
    if isinstance(obj, dict):
        return any(_has_float(v) for v in obj.values())
    if isinstance(obj, list):
        return any(_has_float(v) for v in obj)
    return False


def _narrow(obj: Any) -> Any:
    if isinstance(obj, bool):
        return obj
    if isinstance(obj, int):
        return obj if _MIN <= obj <= _MAX else str(obj)
    if isinstance(obj, dict):
        return {k: _narrow(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_narrow(v) for v in obj]
    return obj


def loads(raw: bytes) -> Any:
    """Parse JSON exactly; raises JSONError."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    else:
        if not _has_float(data):
            return data
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise JSONError(str(exc)) from None
    return _narrow(data)
