"""reply.build: pure, so tested without I/O."""

from __future__ import annotations

import email
import email.policy
from datetime import datetime, timezone

import pytest

from torokiki_pipe.guard import Sender
from torokiki_pipe.reply import Reply, ReplyContext, build

CONTEXT = ReplyContext(to=Sender("Kiri", "kiri@example.net"), gateway_address="gateway@torokiki.net",
                       site_url="http://torokiki.net", message_id="<1@example.net>", references="",
                       original_subject="get: 'http://torokiki.net/image/1'",
                       now=datetime(2026, 11, 25, tzinfo=timezone.utc))


@pytest.mark.parametrize("size", [0, 1, 57, 58, 300_000])
def test_a_file_comes_back_whole_in_76_character_base64_lines(size):
    data = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    raw = build(Reply("fetched.txt", {"url": "http://torokiki.net/image/1"}, attachment=("photo 1.jpg", data)),
                CONTEXT)
    [part] = email.message_from_bytes(raw, policy=email.policy.default).iter_attachments()
    assert part.get_content() == data
    assert part.get_filename() == "photo 1.jpg" and part.get_content_type() == "image/jpeg"
    body = raw.rsplit(b"Content-Disposition:", 1)[1].split(b"\n\n", 1)[1]
    assert all(len(line) <= 76 for line in body.split(b"\n"))   # RFC 2045, section 6.8


def test_the_stand_in_for_the_file_never_reaches_the_reply():
    raw = build(Reply("fetched.txt", {}, attachment=("a.png", b"\x89PNG")), CONTEXT)
    assert b"torokiki-attachment-" not in raw
