"""Webhook bodies from shared/zalo-api.md §4.4-4.6 (doc samples and real captures), verbatim.

Tests substitute ``app_id`` and a fresh ``timestamp`` (the samples are years old and some have
11-12 digit timestamps), keeping every other field as published.
"""

from __future__ import annotations

import time
from typing import Any

SAMPLES: dict[str, dict[str, Any]] = {
    "user_send_text": {"app_id": "360846524940903967", "sender": {"id": "246845883529197922"}, "user_id_by_app": "552177279717587730",
                       "recipient": {"id": "388613280878808645"}, "event_name": "user_send_text",
                       "message": {"text": "message", "msg_id": "96d3cdf3af150460909"}, "timestamp": "154390853474"},
    "user_send_text_capture": {"event_name": "user_send_text", "app_id": "50554360515256678", "sender": {"id": "5510185758261927916"},
                               "recipient": {"id": "1646843870823903717"}, "message": {"text": "Helo", "msg_id": "e2a641af6661713b2874"},
                               "timestamp": "1717061839659", "user_id_by_app": "3611371994410983884"},
    "user_send_image": {"app_id": "1163843031413526746", "user_id_by_app": "2372735685249892743", "event_name": "user_send_image",
                        "timestamp": "1609984527174", "sender": {"id": "4339761418830368433"}, "recipient": {"id": "2197174064623873199"},
                        "message": {"msg_id": "This is message id", "text": "This is testing message",
                                    "attachments": [{"payload": {"thumbnail": "url_to_thumbnail", "url": "url_to_thumbnail"}, "type": "image"}]}},
    "user_send_file": {"app_id": "1163843031413526746", "user_id_by_app": "2372735685249892743", "event_name": "user_send_file",
                       "timestamp": "1609984527185", "sender": {"id": "4339761418830368433"}, "recipient": {"id": "2197174064623873199"},
                       "message": {"msg_id": "This is message id 2", "attachments": [{"payload": {"url": "link_to_download_file", "size": "9999",
                                   "name": "file_name", "checksum": "checksum", "type": "file_type"}, "type": "file"}]}},
    "user_send_sticker": {"app_id": "1163843031413526746", "user_id_by_app": "2372735685249892743", "event_name": "user_send_sticker",
                          "timestamp": "1609984527176", "sender": {"id": "4339761418830368433"}, "recipient": {"id": "2197174064623873199"},
                          "message": {"msg_id": "This is message id 3", "text": "This is testing message",
                                      "attachments": [{"payload": {"id": "sticker_id", "url": "link"}, "type": "sticker"}]}},
    "oa_send_text": {"app_id": "1163843031413526746", "user_id_by_app": "2372735685249892743", "event_name": "oa_send_text",
                     "timestamp": "1609984527180", "sender": {"id": "2197174064623873199"}, "recipient": {"id": "4339761418830368433"},
                     "message": {"msg_id": "This is message id 4", "text": "This is testing message"}},
    "user_send_location": {"event_name": "user_send_location", "app_id": "102719276611582260", "sender": {"id": "8309393969855402319"},
                           "recipient": {"id": "1423847451268726170"},
                           "message": {"attachments": [{"payload": {"coordinates": {"latitude": "10.7923119", "longitude": "106.7820651"}},
                                                        "type": "location"}], "text": "Cơm Coffee New Sky", "msg_id": "b8de7d84fa1b3043690c"},
                           "timestamp": "1751100041636", "user_id_by_app": "7300442764876318465"},
    "user_seen_message": {"sender": {"id": "2687558107438251665"}, "recipient": {"id": "7605173638941758527"}, "event_name": "user_seen_message",
                          "message": {"msg_ids": ["e72c0a55e95fcb00924f"]}, "app_id": "2002784327294716319", "timestamp": "1594636778967"},
    "follow": {"oa_id": "388613280879808645", "follower": {"id": "24684588352919792"}, "user_id_by_app": "552172779717587730",
               "event_name": "follow", "source": "oa_profile", "app_id": "36084652489903967", "timestamp": "154397978274"},
    "unfollow": {"oa_id": "388613280879808645", "follower": {"id": "24684588352919792"}, "user_id_by_app": "552172779717587730",
                 "event_name": "unfollow", "source": "oa_profile", "app_id": "36084652489903967", "timestamp": "154397978275"},
    "user_submit_info": {"sender": {"id": "246845883529697922"}, "recipient": {"id": "388613280879880645"}, "event_name": "user_submit_info",
                         "app_id": "3608465248940903967", "timestamp": "1540368141908",
                         "info": {"name": "Name Example", "phone": "84912345678", "user_dob": "30/10/1999", "gender": "Nam",
                                  "full_address": {"user_city": "Thành phố Hồ Chí Minh", "user_ward": "Phường Tân Thuận",
                                                   "user_address": "Đường số 13, KCX Tân Thuận Đông"}}},
    "add_user_to_tag": {"app_id": "360846524840903967", "oa_id": "388613280879880645", "user_id_by_app": "112380535248657707",
                        "event_name": "add_user_to_tag", "tag": {"user_ids": ["246845883296197922"], "name": "example"}, "timestamp": "15503500848"},
}


def fresh(name: str, app_id: str, *, oa_id: str | None = None, offset_ms: int = 0) -> dict[str, Any]:
    """A sample with our app id and a current timestamp (and our OA id where the sample names one)."""
    body = {**SAMPLES[name]}
    body["app_id"] = app_id
    body["timestamp"] = str(int(time.time() * 1000) + offset_ms)
    if oa_id:
        if "oa_id" in body:
            body["oa_id"] = oa_id
        for side in ("sender", "recipient"):
            if name.startswith("oa_send") and side == "sender":
                body[side] = {"id": oa_id}
    return body
