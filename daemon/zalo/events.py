"""Zalo OA webhook events: parsing, finding the user, dedupe keys (zalo-api.md §4.4-4.7).

Pure functions: no I/O. Ids stay strings (they exceed 2^53); a body that carries ids as wide
JSON numbers is re-parsed with the standard library, which keeps integers exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .. import jsonutil

USER_MESSAGE_EVENTS = frozenset(
    {
        "user_send_text",
        "user_send_image",
        "user_send_gif",
        "user_send_link",
        "user_send_audio",
        "user_send_video",
        "user_send_sticker",
        "user_send_location",
        "user_send_file",
        "user_send_business_card",
    }
)
RECEIPT_EVENTS = frozenset({"user_received_message", "user_seen_message"})
REACTION_EVENTS = frozenset({"user_reacted_message", "oa_reacted_message"})
FOLLOW_EVENTS = frozenset({"follow", "unfollow"})
TAG_EVENTS = frozenset({"add_user_to_tag", "remove_user_from_tag"})
OTHER_USER_EVENTS = frozenset({"user_submit_info", "user_click_chatnow"})

# Interactions that open (or extend) the 7-day consultation-message window.
WINDOW_EVENTS = USER_MESSAGE_EVENTS | {"follow", "user_submit_info", "user_click_chatnow"}

KNOWN_EVENTS = USER_MESSAGE_EVENTS | RECEIPT_EVENTS | REACTION_EVENTS | FOLLOW_EVENTS | TAG_EVENTS | OTHER_USER_EVENTS


class EventError(ValueError):
    """The body is not a usable Zalo event (answered 400)."""


def is_oa_echo(event_name: str) -> bool:
    return event_name.startswith("oa_send_")


def is_known(event_name: str) -> bool:
    return event_name in KNOWN_EVENTS or is_oa_echo(event_name)


def parse_body(raw: bytes) -> dict[str, Any]:
    """JSON object from the raw body; raises EventError."""
    try:
        data = jsonutil.loads(raw)
    except jsonutil.JSONError as exc:
        raise EventError(f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise EventError("body must be a JSON object")
    return data


def sid(value: Any) -> str | None:
    """An id as a string (ids may arrive as JSON numbers in old samples)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        v = value.strip()
        return v or None
    return None


def _get(d: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict):
            return None
        d = d.get(p)
    return d


@dataclass(frozen=True)
class ZaloEvent:
    event_name: str
    app_id: str | None
    timestamp: str | None  # epoch milliseconds, as sent
    user_ids: tuple[str, ...]
    user_id_by_app: str | None
    msg_id: str | None
    known: bool
    opens_window: bool
    oa_echo: bool
    raw: dict[str, Any] = field(repr=False)

    @property
    def user_id(self) -> str | None:
        return self.user_ids[0] if self.user_ids else None

    @property
    def timestamp_ms(self) -> int | None:
        try:
            return int(self.timestamp) if self.timestamp is not None else None
        except ValueError:
            return None

    def dedupe_key(self) -> str:
        """Zalo redelivers the same body: key on msg_id, else on event + user + timestamp.

        The event name is part of the key because receipts carry the msg_id of the OA message
        they acknowledge, which is also the msg_id of that message's oa_send_* echo.
        """
        if self.msg_id:
            return f"zalo:{self.event_name}:{self.msg_id}"
        users = ",".join(self.user_ids) or "-"
        return f"zalo:{self.event_name}:{users}:{self.timestamp or '-'}"


def find_user_ids(data: dict[str, Any], event_name: str, oa_id: str | None) -> tuple[str, ...]:
    """Where the user id is, per event (zalo-api.md §4.5)."""
    sender = sid(_get(data, "sender", "id"))
    recipient = sid(_get(data, "recipient", "id"))
    if event_name in FOLLOW_EVENTS:
        uid = sid(_get(data, "follower", "id"))
        return (uid,) if uid else ()
    if is_oa_echo(event_name) or event_name == "oa_reacted_message":
        return (recipient,) if recipient else ()
    if event_name in TAG_EVENTS:
        ids = _get(data, "tag", "user_ids")
        if isinstance(ids, list):
            return tuple(u for u in (sid(x) for x in ids) if u)
        return ()
    if event_name in RECEIPT_EVENTS:
        # Sources disagree on which side is the OA: compare both with our oa_id.
        if oa_id and sender == oa_id:
            return (recipient,) if recipient else ()
        if oa_id and recipient == oa_id:
            return (sender,) if sender else ()
        # Unknown direction: Chatwoot's reading (the OA is the sender).
        return (recipient,) if recipient else ()
    if event_name == "user_click_chatnow":
        for path in (("user_id",), ("user", "id"), ("sender", "id"), ("follower", "id")):
            uid = sid(_get(data, *path))
            if uid:
                return (uid,)
        return ()
    if event_name.startswith("anonymous_") or "anonymous" in event_name:
        return ()  # anonymous web chat: no OA user id
    # user_send_*, user_submit_info, user_reacted_message and unknown user_* events.
    if oa_id and sender == oa_id:
        return (recipient,) if recipient else ()
    return (sender,) if sender else ()


def parse_event(data: dict[str, Any], oa_id: str | None = None) -> ZaloEvent:
    name = data.get("event_name")
    if not isinstance(name, str) or not name:
        raise EventError("event_name is missing")
    msg_id = sid(_get(data, "message", "msg_id"))
    known = is_known(name)
    users = find_user_ids(data, name, oa_id)
    ts = data.get("timestamp")
    return ZaloEvent(
        event_name=name,
        app_id=sid(data.get("app_id")),
        timestamp=sid(ts) if not isinstance(ts, str) else ts.strip(),
        user_ids=users,
        user_id_by_app=sid(data.get("user_id_by_app")),
        msg_id=msg_id,
        known=known,
        opens_window=name in WINDOW_EVENTS,
        oa_echo=is_oa_echo(name),
        raw=data,
    )


def message_type(event_name: str) -> str | None:
    """``user_send_image`` -> ``image``."""
    for prefix in ("user_send_", "oa_send_"):
        if event_name.startswith(prefix):
            return event_name[len(prefix) :]
    return None


def submitted_info(data: dict[str, Any]) -> dict[str, str]:
    """Name/phone/address from user_submit_info, in the nested or the older flat shape."""
    info = data.get("info")
    if not isinstance(info, dict):
        return {}
    out: dict[str, str] = {}
    for key in ("name", "phone", "address", "city", "district", "ward", "user_dob", "gender"):
        v = info.get(key)
        if isinstance(v, (str, int)) and str(v).strip():
            out[key] = str(v).strip()
    full = info.get("full_address")
    if isinstance(full, dict):
        parts = [str(full.get(k, "")).strip() for k in ("user_address", "user_ward", "user_district", "user_city")]
        joined = ", ".join(p for p in parts if p)
        if joined:
            out.setdefault("address", joined)
        if full.get("user_city"):
            out.setdefault("city", str(full["user_city"]).strip())
    return out


def normalize_phone(raw: str) -> str | None:
    """Vietnamese numbers to E.164: 0912345678 / 84912345678 / +84 91 234 5678 -> +84912345678."""
    digits = "".join(ch for ch in raw if ch.isdigit())
    plus = raw.strip().startswith("+")
    if not digits:
        return None
    if plus:
        e164 = "+" + digits
    elif digits.startswith("84") and len(digits) >= 11:
        e164 = "+" + digits
    elif digits.startswith("0") and len(digits) >= 10:
        e164 = "+84" + digits[1:]
    else:
        return None
    return e164 if 8 <= len(e164) - 1 <= 15 else None
