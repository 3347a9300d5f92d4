"""Pure Zalo protocol logic: signature, event parsing, error classification, messages."""

from __future__ import annotations

import hashlib
import unicodedata

import orjson
import pytest

from daemon.zalo import messages, signature
from daemon.zalo.errors import Action, classify_response
from daemon.zalo.events import EventError, normalize_phone, parse_body, parse_event, submitted_info
from daemon.zalo.messages import SpecError
from daemon.zalo.oauth import TokenEndpointError, code_challenge, make_verifier, parse_token_response, permission_url

APP, SECRET = "360846524940903967", "oa-secret"


def test_mac_is_plain_sha256_of_the_concatenation() -> None:
    body = b'{"app_id":"360846524940903967","timestamp":"1717061839659"}'
    want = hashlib.sha256(APP.encode() + body + b"1717061839659" + SECRET.encode()).hexdigest()
    assert signature.compute_mac(APP, body, "1717061839659", SECRET) == want
    header = "mac=" + want
    assert signature.verify(header, body, app_id=APP, timestamp="1717061839659", oa_secret_key=SECRET) == "standard"
    assert signature.verify(want.upper(), body, app_id=APP, timestamp="1717061839659", oa_secret_key=SECRET) == "standard"


@pytest.mark.parametrize("header", [None, "", "mac=", "mac=" + "0" * 64, "mac=zz", "sha256=abc"])
def test_bad_signatures_fail_closed(header: str | None) -> None:
    assert signature.verify(header, b"{}", app_id=APP, timestamp="1", oa_secret_key=SECRET) is None


def test_signature_over_raw_bytes_not_reserialised_json() -> None:
    raw = b'{"b": 1,  "a": "x"}'
    header = signature.signature_header(APP, raw, "5", SECRET)
    reserialised = orjson.dumps(orjson.loads(raw))
    assert signature.verify(header, reserialised, app_id=APP, timestamp="5", oa_secret_key=SECRET) is None


def test_variants_only_when_enabled() -> None:
    raw = b"{}"
    with_app_secret = signature.signature_header(APP, raw, "5", "app-secret")
    kw = dict(app_id=APP, timestamp="5", oa_secret_key=SECRET, app_secret="app-secret", oa_id="999")
    assert signature.verify(with_app_secret, raw, **kw) is None
    assert signature.verify(with_app_secret, raw, variants=["app_secret"], **kw) == "app_secret"
    with_oa_id = signature.signature_header("999", raw, "5", SECRET)
    assert signature.verify(with_oa_id, raw, variants=["oa_id"], **kw) == "oa_id"


def test_ids_stay_strings_even_when_sent_as_wide_numbers() -> None:
    raw = b'{"event_name":"user_send_text","sender":{"id":246845883529197922123},"message":{"msg_id":"m"}}'
    data = parse_body(raw)
    ev = parse_event(data)
    assert ev.user_id == "246845883529197922123"
    with pytest.raises(EventError):
        parse_body(b"[1,2]")
    with pytest.raises(EventError):
        parse_body(b"{not json")


OA = "2197174064623873199"
USER = "4339761418830368433"


@pytest.mark.parametrize(
    ("body", "user", "window"),
    [
        ({"event_name": "user_send_text", "sender": {"id": USER}, "recipient": {"id": OA}, "message": {"msg_id": "a"}}, USER, True),
        ({"event_name": "follow", "oa_id": OA, "follower": {"id": USER}}, USER, True),
        ({"event_name": "unfollow", "oa_id": OA, "follower": {"id": USER}}, USER, False),
        ({"event_name": "oa_send_text", "sender": {"id": OA}, "recipient": {"id": USER}, "message": {"msg_id": "b"}}, USER, False),
        ({"event_name": "user_received_message", "sender": {"id": OA}, "recipient": {"id": USER}, "message": {"msg_id": "c"}}, USER, False),
        ({"event_name": "user_seen_message", "sender": {"id": USER}, "recipient": {"id": OA}, "message": {"msg_ids": ["d"]}}, USER, False),
        ({"event_name": "user_seen_message", "sender": {"id": OA}, "recipient": {"id": USER}, "message": {"msg_ids": ["d"]}}, USER, False),
        ({"event_name": "user_submit_info", "sender": {"id": USER}, "recipient": {"id": OA}, "info": {}}, USER, True),
        ({"event_name": "user_reacted_message", "sender": {"id": USER}, "recipient": {"id": OA}, "message": {"msg_id": "e"}}, USER, False),
        ({"event_name": "oa_reacted_message", "sender": {"id": OA}, "recipient": {"id": USER}, "message": {"msg_id": "f"}}, USER, False),
        ({"event_name": "user_click_chatnow", "oa_id": OA, "user_id": USER}, USER, True),
    ],
)
def test_user_id_per_event(body: dict, user: str, window: bool) -> None:
    ev = parse_event(body, OA)
    assert ev.user_id == user and ev.known
    assert ev.opens_window is window


def test_tag_event_lists_users_and_anonymous_has_none() -> None:
    ev = parse_event({"event_name": "add_user_to_tag", "tag": {"user_ids": ["1", "2"], "name": "vip"}}, OA)
    assert ev.user_ids == ("1", "2")
    assert parse_event({"event_name": "anonymous_send_text", "sender": {"id": "x"}}, OA).user_ids == ()


def test_dedupe_keys() -> None:
    text = parse_event({"event_name": "user_send_text", "sender": {"id": USER}, "message": {"msg_id": "m1"}, "timestamp": "1"}, OA)
    receipt = parse_event({"event_name": "user_received_message", "sender": {"id": OA}, "recipient": {"id": USER},
                           "message": {"msg_id": "m1"}, "timestamp": "1"}, OA)
    assert text.dedupe_key() == "zalo:user_send_text:m1"
    assert receipt.dedupe_key() != text.dedupe_key()
    follow = parse_event({"event_name": "follow", "follower": {"id": USER}, "timestamp": "1609984527174"}, OA)
    assert follow.dedupe_key() == f"zalo:follow:{USER}:1609984527174"


def test_submitted_info_both_shapes_and_phone_normalisation() -> None:
    nested = {"info": {"name": "Name Example", "phone": "84912345678",
                       "full_address": {"user_city": "HCM", "user_address": "Đường số 13"}}}
    flat = {"info": {"name": "A", "phone": "0912345678", "address": "1 Street", "city": "Hà Nội"}}
    assert submitted_info(nested)["address"] == "Đường số 13, HCM"
    assert submitted_info(flat)["city"] == "Hà Nội"
    assert normalize_phone("84912345678") == "+84912345678"
    assert normalize_phone("0912 345 678") == "+84912345678"
    assert normalize_phone("+84 91 234 5678") == "+84912345678"
    assert normalize_phone("12") is None


@pytest.mark.parametrize(
    ("status", "body", "action"),
    [
        (200, {"error": 0, "message": "Success", "data": {}}, Action.OK),
        (200, {"error": -216, "message": "Access token is invalid"}, Action.REFRESH_TOKEN),
        (200, {"error": -220}, Action.REFRESH_TOKEN),
        (200, {"error": -124}, Action.REFRESH_TOKEN),
        (200, {"error": -32}, Action.RATE_LIMITED),
        (200, {"error": -100}, Action.REUPLOAD),
        (200, {"error": -213}, Action.USER),
        (200, {"error": -230}, Action.USER),
        (200, {"error": -232}, Action.USER),
        (200, {"error": -217}, Action.USER),
        (200, {"error": -227}, Action.USER),
        (200, {"error": -244}, Action.USER),
        (200, {"error": -201}, Action.PAYLOAD),
        (200, {"error": -210}, Action.PAYLOAD),
        (200, {"error": -233}, Action.PAYLOAD),
        (200, {"error": -223}, Action.ALERT),
        (502, None, Action.RETRY),
        (200, "not json", Action.RETRY),
    ],
)
def test_error_classes(status: int, body: object, action: Action) -> None:
    assert classify_response(status, body).action is action


def test_token_answers() -> None:
    pair = parse_token_response(200, {"access_token": "a", "refresh_token": "r", "expires_in": "90000"})
    assert pair.expires_in == 90000
    assert parse_token_response(200, {"access_token": "a", "refresh_token": "r", "expires_in": 3600}).expires_in == 3600
    with pytest.raises(TokenEndpointError, match="Invalid refresh token") as err:
        parse_token_response(200, {"error": -14014, "error_name": "Invalid refresh token"})
    assert not err.value.transient and err.value.code == -14014
    with pytest.raises(TokenEndpointError):
        parse_token_response(200, {"access_token": "a"})  # both tokens or nothing
    with pytest.raises(TokenEndpointError) as err:
        parse_token_response(503, None)
    assert err.value.transient


def test_pkce_and_permission_url() -> None:
    v = make_verifier()
    assert len(v) == 43
    url = permission_url("https://oauth.zaloapp.com", "1", "https://x/cb", code_challenge(v), "st")
    assert url.startswith("https://oauth.zaloapp.com/v4/oa/permission?app_id=1&redirect_uri=https%3A%2F%2Fx%2Fcb&code_challenge=")
    assert url.endswith("&state=st")


# ---------------------------------------------------------------------------- message specs


def built(spec: dict, **kw: object) -> dict:
    return messages.build(messages.validate(spec), **kw)


def test_text_nfc_and_limit() -> None:
    nfd = unicodedata.normalize("NFD", "Tiếng Việt")
    assert built({"type": "text", "text": nfd}) == {"text": "Tiếng Việt"}
    assert built({"type": "text", "text": "x" * 2000})["text"] == "x" * 2000
    with pytest.raises(SpecError) as err:
        messages.validate({"type": "text", "text": "x" * 2001})
    assert err.value.field == "message.text"
    # NFD text that is short enough once composed is accepted.
    assert len(built({"type": "text", "text": unicodedata.normalize("NFD", "ế" * 2000)})["text"]) == 2000


def test_image_file_buttons_quick_replies_list_raw() -> None:
    assert built({"type": "image", "url": "https://e.com/a.jpg"}) == {
        "attachment": {"type": "template", "payload": {"template_type": "media",
                                                        "elements": [{"media_type": "image", "url": "https://e.com/a.jpg"}]}}}
    assert built({"type": "image", "attachment_id": "abc", "text": "cap"})["attachment"]["payload"]["elements"] == [
        {"media_type": "image", "attachment_id": "abc"}]
    assert built({"type": "file", "token": "t"}) == {"attachment": {"type": "file", "payload": {"token": "t"}}}
    assert built({"type": "file", "url": "https://e.com/x.pdf"}, file_token="tok") == {
        "attachment": {"type": "file", "payload": {"token": "tok"}}}
    b = built({"type": "buttons", "text": "Hi", "buttons": [
        {"type": "url", "title": "Web", "url": "https://e.com"},
        {"type": "query_show", "title": "Ask", "payload": "#ask"},
        {"type": "query_hide", "title": "Order", "payload": "#order"},
        {"type": "phone", "title": "Call", "phone": "84123456789"},
        {"type": "sms", "title": "SMS", "phone": "84123456789", "content": "help"}]})
    assert b["attachment"]["payload"]["buttons"] == [
        {"type": "oa.open.url", "title": "Web", "payload": {"url": "https://e.com"}},
        {"type": "oa.query.show", "title": "Ask", "payload": "#ask"},
        {"type": "oa.query.hide", "title": "Order", "payload": "#order"},
        {"type": "oa.open.phone", "title": "Call", "payload": {"phone_code": "84123456789"}},
        {"type": "oa.open.sms", "title": "SMS", "payload": {"phone_code": "84123456789", "content": "help"}}]
    q = built({"type": "quick_replies", "text": "OK?", "replies": [{"title": "Yes"}, {"title": "No", "payload": "#no", "hidden": True}]})
    assert q["attachment"]["payload"]["buttons"] == [
        {"title": "Yes", "type": "oa.query.show", "payload": "Yes"},
        {"title": "No", "type": "oa.query.hide", "payload": "#no"}]
    lst = built({"type": "list", "elements": [
        {"title": "A", "subtitle": "s", "image_url": "https://e.com/i.png", "action": {"type": "url", "url": "https://e.com/a"}},
        {"title": "B", "action": {"type": "query_hide", "payload": "#b"}}],
        "buttons": [{"type": "url", "title": "More", "url": "https://e.com"}]})
    assert lst["attachment"]["payload"]["elements"][0]["default_action"] == {"type": "oa.open.url", "url": "https://e.com/a"}
    assert lst["attachment"]["payload"]["elements"][1]["default_action"] == {"type": "oa.query.hide", "payload": "#b"}
    assert lst["attachment"]["payload"]["template_type"] == "list"
    assert built({"type": "raw", "message": {"text": "x", "quote_message_id": "q"}}) == {"text": "x", "quote_message_id": "q"}


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({}, "message.type"),
        ({"type": "video"}, "message.type"),
        ({"type": "text"}, "message.text"),
        ({"type": "text", "text": 5}, "message.text"),
        ({"type": "text", "text": "a", "colour": "red"}, "message.colour"),
        ({"type": "image"}, "message.url"),
        ({"type": "image", "url": "https://a", "attachment_id": "b"}, "message.url"),
        ({"type": "image", "url": "ftp://a"}, "message.url"),
        ({"type": "file", "url": "javascript:alert(1)"}, "message.url"),
        ({"type": "buttons", "text": "t", "buttons": []}, "message.buttons"),
        ({"type": "buttons", "text": "t", "buttons": [{"type": "url", "title": "x", "url": "https://a"}] * 6}, "message.buttons"),
        ({"type": "buttons", "text": "t", "buttons": [{"type": "url", "title": "x" * 21, "url": "https://a"}]}, "message.buttons[0].title"),
        ({"type": "buttons", "text": "t", "buttons": [{"type": "teleport", "title": "x"}]}, "message.buttons[0].type"),
        ({"type": "buttons", "text": "t", "buttons": [{"type": "phone", "title": "x", "phone": "abc"}]}, "message.buttons[0].phone"),
        ({"type": "quick_replies", "text": "t", "replies": [{"title": "a"}] * 6}, "message.replies"),
        ({"type": "list", "elements": [{"title": "a"}] * 6}, "message.elements"),
        ({"type": "list", "elements": [{"subtitle": "a"}]}, "message.elements[0].title"),
        ({"type": "list", "elements": [{"title": "a", "image_url": "nope"}]}, "message.elements[0].image_url"),
        ({"type": "raw", "message": []}, "message.message"),
        ({"type": "raw", "message": {"text": "x" * 2001}}, "message.message.text"),
    ],
)
def test_invalid_specs_name_the_field(spec: dict, field: str) -> None:
    with pytest.raises(SpecError) as err:
        messages.validate(spec)
    assert err.value.field == field
