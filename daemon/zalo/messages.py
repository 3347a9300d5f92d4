"""Message specs -> Zalo OA consultation messages (zalo-api.md §5).

A *spec* is the small, documented JSON shape marketers write (in a CleverTap custom body or a
template in config.toml). :func:`validate` checks it against Zalo's limits and names the
offending field; :func:`build` turns a valid spec into the ``message`` object of
``POST /v3.0/oa/message/cs``. Pure functions, no I/O.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

TYPES = ("text", "image", "file", "buttons", "quick_replies", "list", "raw")
BUTTON_TYPES = {
    "url": "oa.open.url",
    "query_show": "oa.query.show",
    "query_hide": "oa.query.hide",
    "phone": "oa.open.phone",
    "sms": "oa.open.sms",
}


@dataclass(frozen=True)
class Limits:
    text_max: int = 2000  # official: "Giới hạn tối đa là 2.000 ký tự"
    buttons_max: int = 5
    button_title_max: int = 20  # ChatbotX validates 1-20; not officially documented
    list_elements_max: int = 5
    list_title_max: int = 100  # not documented; generous
    payload_max: int = 1000  # query payload text; not documented
    raw_max_bytes: int = 20_000


DEFAULT_LIMITS = Limits()


class SpecError(ValueError):
    """An invalid message spec; ``field`` names the offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def _str(spec: dict[str, Any], key: str, where: str, *, required: bool, max_len: int | None = None) -> str | None:
    value = spec.get(key)
    if value is None or (isinstance(value, str) and not value.strip() and not required):
        if required:
            raise SpecError(f"{where}.{key}", "is required")
        return None
    if not isinstance(value, str):
        raise SpecError(f"{where}.{key}", f"must be a string, got {type(value).__name__}")
    value = nfc(value)
    if required and not value.strip():
        raise SpecError(f"{where}.{key}", "must not be empty")
    if max_len is not None and len(value) > max_len:
        raise SpecError(f"{where}.{key}", f"is {len(value)} characters, the limit is {max_len}")
    return value


def _url(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise SpecError(where, "is required (an http or https URL)")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SpecError(where, f"must be an http or https URL, got {value!r}")
    return value


def _phone(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise SpecError(where, "is required (a phone number, e.g. 84912345678)")
    digits = value.lstrip("+")
    if not digits.isdigit() or not 8 <= len(digits) <= 15:
        raise SpecError(where, f"must be 8-15 digits, got {value!r}")
    return digits


def _known_keys(spec: dict[str, Any], allowed: set[str], where: str) -> None:
    for key in spec:
        if key not in allowed:
            raise SpecError(f"{where}.{key}", f"unknown field (allowed: {', '.join(sorted(allowed))})")


def _action(spec: Any, where: str, limits: Limits, *, titled: bool) -> dict[str, Any]:
    """A button (titled) or a list element's default action (untitled), as Zalo JSON."""
    if not isinstance(spec, dict):
        raise SpecError(where, "must be an object")
    kind = spec.get("type")
    if kind not in BUTTON_TYPES:
        raise SpecError(f"{where}.type", f"must be one of {', '.join(BUTTON_TYPES)}, got {kind!r}")
    allowed = {"type", "url", "payload", "phone", "content"} | ({"title"} if titled else set())
    _known_keys(spec, allowed, where)
    out: dict[str, Any] = {"type": BUTTON_TYPES[kind]}
    if titled:
        out["title"] = _str(spec, "title", where, required=True, max_len=limits.button_title_max)
    if kind == "url":
        url = _url(spec.get("url"), f"{where}.url")
        # Buttons carry payload.url; list default actions carry a flat url (SDK shapes).
        if titled:
            out["payload"] = {"url": url}
        else:
            out["url"] = url
    elif kind in ("query_show", "query_hide"):
        out["payload"] = _str(spec, "payload", where, required=True, max_len=limits.payload_max)
    elif kind == "phone":
        out["payload"] = {"phone_code": _phone(spec.get("phone"), f"{where}.phone")}
    else:  # sms
        content = _str(spec, "content", where, required=False, max_len=limits.payload_max) or ""
        out["payload"] = {"phone_code": _phone(spec.get("phone"), f"{where}.phone"), "content": content}
    return out


def _buttons(value: Any, where: str, limits: Limits, *, required: bool) -> list[dict[str, Any]]:
    if value is None and not required:
        return []
    if not isinstance(value, list) or (required and not value):
        raise SpecError(where, f"must be a list of 1-{limits.buttons_max} buttons")
    if len(value) > limits.buttons_max:
        raise SpecError(where, f"has {len(value)} buttons, Zalo allows at most {limits.buttons_max}")
    return [_action(b, f"{where}[{i}]", limits, titled=True) for i, b in enumerate(value)]


def validate(spec: Any, limits: Limits = DEFAULT_LIMITS, *, where: str = "message") -> dict[str, Any]:
    """Check a spec; return the normalised spec (NFC text). Raises SpecError."""
    if not isinstance(spec, dict):
        raise SpecError(where, "must be an object")
    kind = spec.get("type")
    if kind not in TYPES:
        raise SpecError(f"{where}.type", f"must be one of {', '.join(TYPES)}, got {kind!r}")
    out: dict[str, Any] = {"type": kind}
    if kind == "text":
        _known_keys(spec, {"type", "text"}, where)
        out["text"] = _str(spec, "text", where, required=True, max_len=limits.text_max)
    elif kind == "image":
        _known_keys(spec, {"type", "url", "attachment_id", "text"}, where)
        has_url, has_id = spec.get("url") is not None, spec.get("attachment_id") is not None
        if has_url == has_id:
            raise SpecError(f"{where}.url", "give exactly one of url or attachment_id")
        if has_url:
            out["url"] = _url(spec["url"], f"{where}.url")
        else:
            out["attachment_id"] = _str(spec, "attachment_id", where, required=True)
        caption = _str(spec, "text", where, required=False, max_len=limits.text_max)
        if caption:
            out["text"] = caption
    elif kind == "file":
        _known_keys(spec, {"type", "url", "token", "name"}, where)
        has_url, has_token = spec.get("url") is not None, spec.get("token") is not None
        if has_url == has_token:
            raise SpecError(f"{where}.url", "give exactly one of url (downloaded and uploaded) or token")
        if has_url:
            out["url"] = _url(spec["url"], f"{where}.url")
            name = _str(spec, "name", where, required=False, max_len=200)
            if name:
                out["name"] = name
        else:
            out["token"] = _str(spec, "token", where, required=True)
    elif kind == "buttons":
        _known_keys(spec, {"type", "text", "buttons"}, where)
        out["text"] = _str(spec, "text", where, required=True, max_len=limits.text_max)
        out["buttons"] = spec["buttons"]
        _buttons(spec.get("buttons"), f"{where}.buttons", limits, required=True)
    elif kind == "quick_replies":
        _known_keys(spec, {"type", "text", "replies"}, where)
        out["text"] = _str(spec, "text", where, required=True, max_len=limits.text_max)
        replies = spec.get("replies")
        rwhere = f"{where}.replies"
        if not isinstance(replies, list) or not replies:
            raise SpecError(rwhere, f"must be a list of 1-{limits.buttons_max} replies")
        if len(replies) > limits.buttons_max:
            raise SpecError(rwhere, f"has {len(replies)} replies, Zalo allows at most {limits.buttons_max}")
        norm = []
        for i, r in enumerate(replies):
            w = f"{rwhere}[{i}]"
            if not isinstance(r, dict):
                raise SpecError(w, "must be an object")
            _known_keys(r, {"title", "payload", "hidden"}, w)
            title = _str(r, "title", w, required=True, max_len=limits.button_title_max)
            payload = _str(r, "payload", w, required=False, max_len=limits.payload_max) or title
            hidden = r.get("hidden", False)
            if not isinstance(hidden, bool):
                raise SpecError(f"{w}.hidden", "must be true or false")
            norm.append({"title": title, "payload": payload, "hidden": hidden})
        out["replies"] = norm
    elif kind == "list":
        _known_keys(spec, {"type", "elements", "buttons"}, where)
        elements = spec.get("elements")
        ewhere = f"{where}.elements"
        if not isinstance(elements, list) or not elements:
            raise SpecError(ewhere, f"must be a list of 1-{limits.list_elements_max} elements")
        if len(elements) > limits.list_elements_max:
            raise SpecError(ewhere, f"has {len(elements)} elements, Zalo allows at most {limits.list_elements_max}")
        for i, el in enumerate(elements):
            w = f"{ewhere}[{i}]"
            if not isinstance(el, dict):
                raise SpecError(w, "must be an object")
            _known_keys(el, {"title", "subtitle", "image_url", "action"}, w)
            _str(el, "title", w, required=True, max_len=limits.list_title_max)
            _str(el, "subtitle", w, required=False, max_len=limits.text_max)
            if el.get("image_url") is not None:
                _url(el["image_url"], f"{w}.image_url")
            if el.get("action") is not None:
                _action(el["action"], f"{w}.action", limits, titled=False)
        out["elements"] = elements
        _buttons(spec.get("buttons"), f"{where}.buttons", limits, required=False)
        if spec.get("buttons"):
            out["buttons"] = spec["buttons"]
    else:  # raw
        _known_keys(spec, {"type", "message"}, where)
        msg = spec.get("message")
        if not isinstance(msg, dict) or not msg:
            raise SpecError(f"{where}.message", "must be a non-empty Zalo message object")
        import orjson

        if len(orjson.dumps(msg)) > limits.raw_max_bytes:
            raise SpecError(f"{where}.message", f"is larger than {limits.raw_max_bytes} bytes")
        text = msg.get("text")
        if isinstance(text, str) and len(nfc(text)) > limits.text_max:
            raise SpecError(f"{where}.message.text", f"is {len(nfc(text))} characters, the limit is {limits.text_max}")
        out["message"] = msg
    return out


def build(spec: dict[str, Any], *, file_token: str | None = None, limits: Limits = DEFAULT_LIMITS) -> dict[str, Any]:
    """The Zalo ``message`` object for a validated spec."""
    kind = spec["type"]
    if kind == "text":
        return {"text": spec["text"]}
    if kind == "image":
        element: dict[str, Any] = {"media_type": "image"}
        if "url" in spec:
            element["url"] = spec["url"]
        else:
            element["attachment_id"] = spec["attachment_id"]
        msg: dict[str, Any] = {
            "attachment": {"type": "template", "payload": {"template_type": "media", "elements": [element]}}
        }
        if spec.get("text"):
            msg["text"] = spec["text"]
        return msg
    if kind == "file":
        token = spec.get("token") or file_token
        if not token:
            raise SpecError("message.token", "file has not been uploaded yet")
        return {"attachment": {"type": "file", "payload": {"token": token}}}
    if kind == "buttons":
        buttons = _buttons(spec["buttons"], "message.buttons", limits, required=True)
        return {"text": spec["text"], "attachment": {"type": "template", "payload": {"buttons": buttons}}}
    if kind == "quick_replies":
        buttons = [
            {"title": r["title"], "type": "oa.query.hide" if r["hidden"] else "oa.query.show", "payload": r["payload"]}
            for r in spec["replies"]
        ]
        return {"text": spec["text"], "attachment": {"type": "template", "payload": {"buttons": buttons}}}
    if kind == "list":
        elements = []
        for i, el in enumerate(spec["elements"]):
            e: dict[str, Any] = {"title": nfc(el["title"])}
            if el.get("subtitle"):
                e["subtitle"] = nfc(el["subtitle"])
            if el.get("image_url"):
                e["image_url"] = el["image_url"]
            if el.get("action"):
                e["default_action"] = _action(el["action"], f"message.elements[{i}].action", limits, titled=False)
            elements.append(e)
        payload: dict[str, Any] = {"template_type": "list", "elements": elements}
        if spec.get("buttons"):
            payload["buttons"] = _buttons(spec["buttons"], "message.buttons", limits, required=False)
        return {"attachment": {"type": "template", "payload": payload}}
    if kind == "raw":
        return spec["message"]
    raise SpecError("message.type", f"unknown type {kind!r}")  # pragma: no cover - validate() guards
