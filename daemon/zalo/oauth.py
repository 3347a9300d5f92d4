"""OAuth v4 for an OA: PKCE, the permission URL, and reading token-endpoint answers."""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode


def make_verifier() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()


def code_challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def permission_url(oauth_base: str, app_id: str, redirect_uri: str, challenge: str, state: str) -> str:
    query = urlencode(
        {"app_id": app_id, "redirect_uri": redirect_uri, "code_challenge": challenge, "state": state}
    )
    return f"{oauth_base.rstrip('/')}/v4/oa/permission?{query}"


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int


class TokenEndpointError(Exception):
    """The token endpoint did not return both tokens."""

    def __init__(self, message: str, *, code: int | None = None, transient: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.transient = transient


def parse_token_response(http_status: int, body: Any) -> TokenPair:
    """A refresh or code exchange succeeded only if both tokens came back (HTTP 200 can carry errors)."""
    if http_status >= 500 or http_status == 429:
        raise TokenEndpointError(f"token endpoint answered HTTP {http_status}", transient=True)
    if not isinstance(body, dict):
        raise TokenEndpointError(f"token endpoint answered HTTP {http_status} without a JSON object", transient=True)
    access = body.get("access_token")
    refresh = body.get("refresh_token")
    if isinstance(access, str) and access and isinstance(refresh, str) and refresh:
        try:
            expires_in = int(body.get("expires_in", 90000))
        except (TypeError, ValueError):
            expires_in = 90000
        return TokenPair(access, refresh, expires_in)
    code = body.get("error")
    try:
        code = int(code) if code is not None else None
    except (TypeError, ValueError):
        code = None
    name = body.get("error_name") or body.get("message") or body.get("error_description") or "no tokens in answer"
    reason = body.get("error_reason") or body.get("error_description") or ""
    msg = f"token endpoint refused: {name}" + (f" ({reason})" if reason and reason != name else "")
    if code is not None:
        msg += f" [error {code}]"
    raise TokenEndpointError(msg, code=code)
