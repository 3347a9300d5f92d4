"""Pure CleverTap logic: reading /1/upload answers, records, webhook payloads, templating."""

from __future__ import annotations

import pytest

from daemon.clevertap.records import event_record, profile_record
from daemon.clevertap.upload import classify_upload
from daemon.clevertap.webhook import PayloadError, parse_campaign
from daemon.retry import backoff_delay
from daemon.templating import render_text

RECS = [{"type": "event", "identity": str(i), "evtName": "E", "evtData": {}} for i in range(3)]


def test_success() -> None:
    out = classify_upload(200, {"status": "success", "processed": 3, "unprocessed": []}, RECS)
    assert out.call == "ok" and [s for s, _ in out.records] == ["processed"] * 3


def test_partial_maps_records_by_their_one_based_number() -> None:
    body = {"status": "partial", "processed": 1, "unprocessed": [
        {"status": "fail", "code": 555, "error": "Miscellaneous server error. Skipped record number : 1", "record": RECS[0]},
        {"status": "fail", "code": 509, "error": "Event Name is incorrect. ErrorCode: 509 - Event name is mandatory. Skipped record number : 3"}]}
    out = classify_upload(200, body, RECS)
    assert out.call == "partial"
    assert [s for s, _ in out.records] == ["retry", "processed", "dead"]
    assert out.records[2][1].startswith("509")


def test_partial_maps_by_echoed_record_when_no_number() -> None:
    import orjson

    body = {"status": "partial", "processed": 2, "unprocessed": [{"code": 512, "error": "bad", "record": orjson.dumps(RECS[1]).decode()}]}
    out = classify_upload(200, body, RECS)
    assert [s for s, _ in out.records] == ["processed", "dead", "processed"]


@pytest.mark.parametrize(
    ("status", "body", "call", "each"),
    [
        (None, None, "retry", "retry"),
        (500, None, "retry", "retry"),
        (503, {"status": "fail"}, "retry", "retry"),
        (429, {"status": "fail", "error": "Too many concurrent requests"}, "throttled", "retry"),
        (401, {"status": "fail", "error": "Invalid Credentials", "code": 401}, "auth", "retry"),
        (403, None, "auth", "retry"),
        (400, {"status": "fail", "error": "Malformed request", "code": 400}, "rejected", "dead"),
        (200, {"status": "fail", "processed": 0, "unprocessed": []}, "rejected", "dead"),
        (200, {"weird": True}, "retry", "retry"),
    ],
)
def test_whole_call_outcomes(status: int | None, body: object, call: str, each: str) -> None:
    out = classify_upload(status, body, RECS)
    assert out.call == call and {s for s, _ in out.records} == {each}


def test_records() -> None:
    assert profile_record({"identity": "1"}, {"zalo_user_id": "1"}) == {
        "type": "profile", "identity": "1", "profileData": {"zalo_user_id": "1"}}
    rec = event_record({"objectId": "__g1", "identity": ""}, "Zalo Message Sent", {"a": 1, "nested": {"x": 1}, "none": None}, 17)
    assert rec == {"type": "event", "objectId": "__g1", "evtName": "Zalo Message Sent", "evtData": {"a": 1}, "ts": 17}
    with pytest.raises(ValueError, match="reserved"):
        event_record({"identity": "1"}, "Notification Sent", {})


def test_default_payload_any_case_list_or_single() -> None:
    body = {"TargetId": 9, "Key_Values": {"zalo_template": "welcome"},
            "Profiles": {"Identity": "u1", "ProfileData": {"ZALO_USER_ID": "123", "Name": "A"}}}
    c = parse_campaign(body, user_id_property="zalo_user_id", template_key="zalo_template")
    assert c.campaign_id == "9" and c.template == "welcome"
    (r,) = c.recipients
    assert r.user_id == "123" and r.ref == {"identity": "u1"} and r.profile["Name"] == "A"
    lst = parse_campaign({"targetId": 1, "profiles": [{"identity": "a", "profileData": {"zalo_user_id": 55}},
                                                     {"identity": "b", "profileData": {}}]},
                         user_id_property="zalo_user_id", template_key="t")
    assert [r.user_id for r in lst.recipients] == ["55", None]


def test_custom_body_and_unrendered_liquid() -> None:
    c = parse_campaign({"campaign": "c1", "zalo_user_id": "{{Profile.zalo_user_id}}", "message": {"type": "text", "text": "x"}},
                       user_id_property="zalo_user_id", template_key="t")
    assert c.custom and c.recipients[0].user_id is None
    with pytest.raises(PayloadError):
        parse_campaign({"hello": 1}, user_id_property="zalo_user_id", template_key="t")
    with pytest.raises(PayloadError):
        parse_campaign({"profiles": "x"}, user_id_property="zalo_user_id", template_key="t")
    with pytest.raises(PayloadError):
        parse_campaign([1], user_id_property="zalo_user_id", template_key="t")


def test_templating() -> None:
    ctx = {"Profile": {"Name": "Lan"}, "Event": {}, "Campaign": {"discount": "20%"}}
    assert render_text("Chào {{Profile.name}}, giảm {{ Campaign.discount }}", ctx) == "Chào Lan, giảm 20%"
    assert render_text('Chào {{Profile.City | default: "bạn"}}!', ctx) == "Chào bạn!"
    assert render_text("{{Event.missing}}|", ctx) == "|"


def test_backoff_doubles_caps_and_jitters() -> None:
    import random

    rng = random.Random(1)
    d = [backoff_delay(n, 1.0, 30.0, jitter=0.0, rng=rng) for n in range(1, 8)]
    assert d == [1, 2, 4, 8, 16, 30, 30]
    spread = {round(backoff_delay(3, 1.0, 30.0, rng=rng), 3) for _ in range(20)}
    assert len(spread) > 10 and all(3.2 <= x <= 4.8 for x in spread)
