"""X-ZEvent-Signature: the one place that knows the Zalo webhook MAC formula.

``mac=`` + hex(sha256(app_id + raw_body + timestamp + OA secret key)): a plain SHA-256 over
the concatenation (not HMAC), over the body bytes exactly as received, with the timestamp taken
from the body. Public sources disagree on the details (see zalo-api.md §4.3), so a small set of
variants can be switched on in config; the default accepts only the formula above.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

def compute_mac(app_id: str, raw_body: bytes, timestamp: str, secret: str) -> str:
    h = hashlib.sha256()
    h.update(app_id.encode())
    h.update(raw_body)
    h.update(timestamp.encode())
    h.update(secret.encode())
    return h.hexdigest()


def signature_header(app_id: str, raw_body: bytes, timestamp: str, secret: str) -> str:
    return "mac=" + compute_mac(app_id, raw_body, timestamp, secret)


def verify(
    header: str | None,
    raw_body: bytes,
    *,
    app_id: str,
    timestamp: str,
    oa_secret_key: str,
    app_secret: str | None = None,
    oa_id: str | None = None,
    variants: Iterable[str] = (),
) -> str | None:
    """Return the name of the formula that matched ("standard" or a variant), else None."""
    if not header:
        return None
    got = header.strip()
    if got.lower().startswith("mac="):
        got = got[4:]
    got = got.strip().lower()
    if len(got) != 64:
        return None
    candidates = [("standard", app_id, oa_secret_key)]
    for v in variants:
        if v == "app_secret" and app_secret:
            candidates.append(("app_secret", app_id, app_secret))
        elif v == "oa_id" and oa_id:
            candidates.append(("oa_id", oa_id, oa_secret_key))
    matched = None
    for name, first, secret in candidates:
        # Compare every candidate (no early exit) to keep timing independent of which matched.
        if hmac.compare_digest(compute_mac(first, raw_body, timestamp, secret), got) and matched is None:
            matched = name
    return matched
