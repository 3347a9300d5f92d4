"""CleverTap campaign webhook payloads (clevertap-api.md §3.2-3.3), parsed without I/O.

Two shapes are accepted:
- the default "profile variables" payload: ``targetId``, ``key_values`` and ``profiles`` (a list,
  or a single object for non-broadcast campaigns), keys in any letter case;
- a custom body (one recipient, usually Liquid-personalised): ``campaign``, ``zalo_user_id``,
  optional ``identity``/``objectId``, and a ``message`` spec or a ``template`` name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class PayloadError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def lower_keys(d: dict[str, Any]) -> dict[str, Any]:
    return {k.lower() if isinstance(k, str) else k: v for k, v in d.items()}


def ci_get(d: dict[str, Any], name: str) -> Any:
    """Case-insensitive key lookup."""
    if name in d:
        return d[name]
    low = name.lower()
    for k, v in d.items():
        if isinstance(k, str) and k.lower() == low:
            return v
    return None


@dataclass
class Recipient:
    user_id: str | None
    ref: dict[str, str]  # identity / objectId, to report outcomes on the same profile
    profile: dict[str, Any] = field(default_factory=dict)
    event: dict[str, Any] = field(default_factory=dict)


@dataclass
class Campaign:
    is_test: bool
    campaign_id: str
    key_values: dict[str, Any]
    recipients: list[Recipient]
    message: Any = None  # a spec from a custom body
    template: str | None = None
    custom: bool = False


def _user_id(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        v = value.strip()
        # An unrendered or empty Liquid tag means the profile has no Zalo id.
        if not v or "{{" in v or not v.isdigit():
            return None
        return v
    return None


def _ref(p: dict[str, Any]) -> dict[str, str]:
    ref: dict[str, str] = {}
    identity = p.get("identity")
    if isinstance(identity, (str, int)) and str(identity).strip() and "{{" not in str(identity):
        ref["identity"] = str(identity).strip()
    obj = p.get("objectid")
    if isinstance(obj, str) and obj.strip() and "{{" not in obj:
        ref["objectId"] = obj.strip()
    return ref


def parse_campaign(data: Any, *, user_id_property: str, template_key: str) -> Campaign:
    if not isinstance(data, dict):
        raise PayloadError("body", "must be a JSON object")
    top = lower_keys(data)
    is_test = top.get("is_test") is True
    kv = top.get("key_values")
    if kv is None:
        kv = {}
    if not isinstance(kv, dict):
        raise PayloadError("key_values", "must be an object")
    if "profiles" in top:
        profiles = top["profiles"]
        if isinstance(profiles, dict):
            profiles = [profiles]
        if not isinstance(profiles, list):
            raise PayloadError("profiles", "must be a list or an object")
        recipients = []
        for i, p in enumerate(profiles):
            if not isinstance(p, dict):
                raise PayloadError(f"profiles[{i}]", "must be an object")
            pl = lower_keys(p)
            pdata = pl.get("profiledata") or {}
            if not isinstance(pdata, dict):
                pdata = {}
            event = pl.get("event_properties") or {}
            uid = _user_id(ci_get(pdata, user_id_property))
            if uid is None:
                uid = _user_id(ci_get(pl, user_id_property))
            profile = {**{k: v for k, v in pl.items() if not isinstance(v, (dict, list))}, **pdata}
            recipients.append(Recipient(uid, _ref(pl), profile, event if isinstance(event, dict) else {}))
        target = top.get("targetid")
        campaign_id = str(target) if target is not None else str(ci_get(kv, "campaign") or "unknown")
        template = ci_get(kv, template_key)
        message = top.get("message")
        return Campaign(
            is_test, campaign_id, kv, recipients,
            message=message, template=str(template) if template is not None else None,
        )
    # Custom body: one recipient.
    if not any(k in top for k in ("message", "template", user_id_property.lower(), "zalo_user_id")):
        raise PayloadError("body", "expected CleverTap's `profiles` payload or a custom body with `message` or `template`")
    profile = top.get("profile") or {}
    if not isinstance(profile, dict):
        raise PayloadError("profile", "must be an object")
    uid = _user_id(top.get(user_id_property.lower(), top.get("zalo_user_id")))
    campaign_id = top.get("campaign") or top.get("targetid") or ci_get(kv, "campaign") or "custom"
    template = top.get("template") or ci_get(kv, template_key)
    recipient = Recipient(uid, _ref(top), profile, top.get("event") if isinstance(top.get("event"), dict) else {})
    return Campaign(
        is_test, str(campaign_id), kv, [recipient], message=top.get("message"),
        template=str(template) if template is not None else None, custom=True,
    )
