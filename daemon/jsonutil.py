"""Exact JSON for webhook bodies.

orjson is fast but turns integers wider than 64 bits into floats (losing digits) and cannot
serialise them back. Bodies that contain such numbers are re-parsed with the standard library,
and any integer outside the 64-bit range becomes a string (ids are strings anyway).
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

_MIN, _MAX = -(2**63), 2**64 - 1
# Only a run of 20+ digits can be an integer outside the 64-bit range.
_WIDE = re.compile(rb"\d{20,}")


class JSONError(ValueError):
    pass


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
    if not _WIDE.search(raw):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass  # the standard library's error message is clearer
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise JSONError(str(exc)) from None
    return _narrow(data)
