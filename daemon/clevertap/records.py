"""CleverTap record builders (pure)."""

from __future__ import annotations

from typing import Any

RESERVED_EVENTS = frozenset(
    {
        "Notification Sent", "Notification Viewed", "Notification Clicked", "Notification Delivered",
        "Notification Replied", "UTM Visited", "App Launched", "App Installed", "App Uninstalled",
        "App Version Changed", "Stayed", "Reply Sent", "Experiment Rendered", "Reachable By",
        "Identity Reset", "Identity Set", "Identity Error", "Web Page Viewed",
    }
)


def date_value(epoch_s: int | float) -> str:
    """CleverTap date property: ``$D_<epoch seconds>``."""
    return f"$D_{int(epoch_s)}"


def identity_fields(ref: dict[str, Any]) -> dict[str, Any]:
    """Keep the one identifier CleverTap should match on (identity or objectId)."""
    if ref.get("identity"):
        return {"identity": str(ref["identity"])}
    if ref.get("objectId"):
        return {"objectId": str(ref["objectId"])}
    raise ValueError("record needs an identity or objectId")


def profile_record(ref: dict[str, Any], data: dict[str, Any], ts: int | None = None) -> dict[str, Any]:
    rec: dict[str, Any] = {"type": "profile", **identity_fields(ref), "profileData": data}
    if ts is not None:
        rec["ts"] = int(ts)
    return rec


def event_record(ref: dict[str, Any], name: str, data: dict[str, Any], ts: int | None = None) -> dict[str, Any]:
    if name in RESERVED_EVENTS:
        raise ValueError(f"{name!r} is a reserved CleverTap event name")
    flat = {k: v for k, v in data.items() if v is not None and not isinstance(v, (dict, list))}
    rec: dict[str, Any] = {"type": "event", **identity_fields(ref), "evtName": name, "evtData": flat}
    if ts is not None:
        rec["ts"] = int(ts)
    return rec
