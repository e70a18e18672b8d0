"""reply.build: pure, so tested without I/O."""

from __future__ import annotations

import email
import email.policy
from datetime import datetime, timezone

import pytest

from torokiki_pipe.stages.s3_guard import Sender
from torokiki_pipe.stages.s7_reply import Reply, ReplyContext, build

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


# --------------------------------------------------------------------------- no amplification

from string import Template  # noqa: E402

from torokiki_pipe.stages.s5_understand.command import Problem  # noqa: E402
from torokiki_pipe.stages.s7_reply import TEMPLATES, WHOLE_VALUES, problems_text  # noqa: E402

MEGABYTE = "ab " * 350_000          # what a sender can put in a subject or a display name
HOSTILE = ReplyContext(to=Sender("Kiri " + "x" * 100_000, "kiri@example.net"), gateway_address="gateway@torokiki.net",
                       site_url="http://torokiki.net", message_id="<" + "m" * 400 + "@example.net>",
                       references=" ".join(["<" + "r" * 1000 + "@x>", "x" * 100_000] + ["<a@b>"] * 5000),
                       original_subject=MEGABYTE, now=datetime(2026, 11, 25, tzinfo=timezone.utc))
OURS = {"site": "http://torokiki.net", "gateway": "gateway@torokiki.net", "limit": "25 MB", "waited": "2 days",
        "window": "an hour", "url": "http://torokiki.net/image/1/response", "inspired_by": "http://torokiki.net/image/1",
        "text": "", "attachment_note": "", "unsaved_note": "", "short_help": "the commands",
        "retry_subject": "get: 'http://torokiki.net/image/1/response'"}


def placeholders(name: str) -> set[str]:
    text = (TEMPLATES / name).read_text(encoding="utf-8")
    return {m.group("named") or m.group("braced") for m in Template.pattern.finditer(text)
            if m.group("named") or m.group("braced")}


# The replies: each text has its HTML beside it (the other .txt files are notes and mailto: mails).
REPLIES = sorted(p.name for p in TEMPLATES.glob("*.txt") if p.with_suffix(".html").is_file())


@pytest.mark.parametrize("name", REPLIES)
def test_no_reply_carries_more_than_an_excerpt_of_what_the_sender_wrote(name):
    # Every value not ours is the sender's (a 1 MB subject came back twice in a 2.1 MB reply).
    problems = [Problem("the subject " + MEGABYTE + " is not a command", 3)] * 50
    values = {key: OURS[key] if key in OURS else MEGABYTE for key in placeholders(name)}
    values["problems"] = problems_text(problems)
    raw = build(Reply(name, values, html_template="help.html" if name == "help.txt" else None), HOSTILE,
                last_before_limit="an hour")
    assert len(raw) < 40_000, len(raw)      # the problems, 10 KB at most, in the text and the HTML
    assert b"ab ab ab " * 100 not in raw and b"x" * 200 not in raw and b"r" * 600 not in raw
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert message["To"].addresses[0].addr_spec == "kiri@example.net"
    assert len(message["References"].split()) <= 10


def test_the_values_reaching_the_sender_whole_are_the_gateways_own():
    # A value added to WHOLE_VALUES must be added here too, with the reason it cannot be the sender's.
    assert WHOLE_VALUES == set(OURS) | {"problems"}
