"""Flow 1, identity capture: Zalo webhook events -> CleverTap profiles and events.

:func:`event_records` is the pure mapping; :class:`IdentityBuilder` feeds the uploader with
it, using the users table to skip profile updates CleverTap already has and to suppress echoes
of messages the daemon itself sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..clevertap.records import date_value, event_record, profile_record
from ..config import Config
from ..store import Job, Outcome, Store
from ..zalo.events import ZaloEvent, message_type, normalize_phone, parse_event, submitted_info
from .uploader import Prepared

EVENT_NAMES = {
    "follow": "Zalo OA Followed",
    "unfollow": "Zalo OA Unfollowed",
    "user_submit_info": "Zalo Info Submitted",
}
MESSAGE_RECEIVED = "Zalo Message Received"


@dataclass(frozen=True)
class IdentitySettings:
    strategy: str = "zalo_user_id"  # zalo_user_id | user_id_by_app | phone
    prefix: str = ""
    user_id_property: str = "zalo_user_id"
    oa_id: str = ""
    profile_refresh_s: float = 3600.0

    @classmethod
    def from_config(cls, cfg: Config) -> "IdentitySettings":
        return cls(
            cfg.clevertap.identity,
            cfg.clevertap.identity_prefix,
            cfg.clevertap.user_id_property,
            cfg.zalo.oa_id,
            cfg.clevertap.profile_refresh_s,
        )


def identity_ref(settings: IdentitySettings, user_id: str, state: dict[str, Any]) -> dict[str, str] | None:
    """The CleverTap identity for a Zalo user under the configured strategy (None: not known yet)."""
    if settings.strategy == "zalo_user_id":
        value: str | None = user_id
    elif settings.strategy == "user_id_by_app":
        value = state.get("user_id_by_app")
    else:
        value = state.get("phone")
    if not value:
        return None
    return {"identity": f"{settings.prefix}{value}" if settings.strategy != "phone" else value}


def event_records(
    event: ZaloEvent, users: dict[str, dict[str, Any]], settings: IdentitySettings
) -> tuple[list[tuple[str, dict[str, Any]]], list[str], list[dict[str, Any]], str | None]:
    """Records for one event: (records, keys skipped as unchanged, users-table updates, note)."""
    records: list[tuple[str, dict[str, Any]]] = []
    skipped: list[str] = []
    updates: list[dict[str, Any]] = []
    notes: list[str] = []
    ts_ms = event.timestamp_ms
    ts_s = ts_ms // 1000 if ts_ms else None
    info = submitted_info(event.raw) if event.event_name == "user_submit_info" else {}
    phone = normalize_phone(info["phone"]) if info.get("phone") else None
    for uid in event.user_ids:
        stored = users.get(uid, {})
        state = {
            "user_id_by_app": event.user_id_by_app if len(event.user_ids) == 1 else None,
            "phone": phone,
        }
        merged = {**stored, **{k: v for k, v in state.items() if v}}
        ref = identity_ref(settings, uid, merged)
        update: dict[str, Any] = {"user_id": uid, "source": "webhook"}
        if state["user_id_by_app"]:
            update["user_id_by_app"] = state["user_id_by_app"]
        if phone:
            update["phone"] = phone
        data: dict[str, Any] = {settings.user_id_property: uid}
        if event.event_name in ("follow", "unfollow"):
            data["zalo_follower"] = event.event_name == "follow"
            update["follower"] = data["zalo_follower"]
        if event.opens_window and ts_s:
            data["zalo_last_interaction"] = date_value(ts_s)
            update["last_interaction"] = ts_s
        if state["user_id_by_app"]:
            data["zalo_user_id_by_app"] = state["user_id_by_app"]
        if info.get("name"):
            data["Name"] = info["name"]
        if phone:
            data["Phone"] = phone
        if ref is None:
            notes.append(f"user {uid} has no CleverTap identity yet ({settings.strategy} unknown)")
            updates.append(update)
            continue
        # What CleverTap holds after this profile update; skip the update if nothing changed.
        uploaded = dict(stored.get("uploaded_state") or {})
        new_state = {**uploaded, **{k: v for k, v in data.items() if k != "zalo_last_interaction"}}
        last_up = uploaded.get("last_interaction") or 0
        if ts_s and event.opens_window:
            new_state["last_interaction"] = max(ts_s, last_up)
        changed = {k: v for k, v in new_state.items() if k != "last_interaction" and uploaded.get(k) != v}
        moved = bool(ts_s and event.opens_window and ts_s - last_up >= settings.profile_refresh_s)
        pkey = f"profile:{uid}"
        if changed or moved or not stored.get("uploaded_at"):
            records.append((pkey, profile_record(ref, data)))
            update["uploaded_state"] = new_state
            update["mark_uploaded"] = True
        else:
            skipped.append(pkey)
        updates.append(update)
        name = MESSAGE_RECEIVED if event.event_name.startswith("user_send_") else EVENT_NAMES.get(event.event_name)
        if name:
            evt: dict[str, Any] = {
                "zalo_user_id": uid,
                "zalo_event": event.event_name,
                "zalo_msg_id": event.msg_id,
                "oa_id": settings.oa_id or None,
            }
            if name == MESSAGE_RECEIVED:
                evt["message_type"] = message_type(event.event_name)
                text = (event.raw.get("message") or {}).get("text") if isinstance(event.raw.get("message"), dict) else None
                if isinstance(text, str):
                    evt["text_length"] = len(text)
            if event.event_name == "follow" and isinstance(event.raw.get("source"), str):
                evt["source"] = event.raw["source"]
            records.append((f"event:{uid}", event_record(ref, name, evt, ts_s)))
    return records, skipped, updates, "; ".join(notes) or None


class IdentityBuilder:
    """Turns claimed ``zalo_event`` jobs into uploader work."""

    def __init__(self, store: Store, settings: IdentitySettings) -> None:
        self.store = store
        self.settings = settings

    async def __call__(self, jobs: Sequence[Job]) -> list[Prepared]:
        events = [parse_event(j.payload["event"], self.settings.oa_id) for j in jobs]
        uids = sorted({u for e in events for u in e.user_ids})
        users = await self.store.get_users(uids) if uids else {}
        echo_ids = [e.msg_id for e in events if e.oa_echo and e.msg_id]
        ours = await self.store.sent_messages(echo_ids) if echo_ids else set()
        out: list[Prepared] = []
        for job, event in zip(jobs, events):
            if event.oa_echo and event.msg_id in ours:
                out.append(Prepared(job, [], final=Outcome.done(error="echo of a message sent by zalo-bridge")))
                continue
            done = set((job.progress or {}).get("done", []))
            records, skipped, updates, note = event_records(event, users, self.settings)
            for u in updates:
                # Later events in the same batch see what earlier ones will have uploaded.
                cur = users.setdefault(u["user_id"], {})
                if u.get("uploaded_state"):
                    cur["uploaded_state"] = u["uploaded_state"]
                    cur["uploaded_at"] = cur.get("uploaded_at") or -1
                for k in ("phone", "user_id_by_app"):
                    if u.get(k):
                        cur[k] = u[k]
            todo = [(k, r) for k, r in records if k not in done]
            out.append(Prepared(job, todo, sorted(done | set(skipped)), updates, note))
        return out
