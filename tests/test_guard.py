import pytest

from torokiki_pipe.stages.s3_guard import Sender, loop_marker, reason_to_ignore, reply_sender
from torokiki_pipe.stages.s2_headers import read_head

GATEWAY = "gateway@torokiki.net"


def head(*lines, body="hello\n"):
    return read_head(("\n".join(lines) + "\n\n" + body).encode())


ORDINARY = ("From: Kiri Tane <kiri@example.net>", "Subject: help", "Message-ID: <1@example.net>")


def test_ordinary_mail_may_be_answered_even_with_x_auto_response_suppress():
    # Exchange puts X-Auto-Response-Suppress on ordinary mail: it is not a reason.
    assert reason_to_ignore(head(*ORDINARY, "X-Auto-Response-Suppress: All"), "kiri@example.net", GATEWAY) is None
    assert reason_to_ignore(head(*ORDINARY, "Auto-Submitted: no"), None, GATEWAY) is None


@pytest.mark.parametrize("extra, envelope", [
    ((), ""),
    ((), "<>"),
    (("Return-Path: <>",), None),
    ((), "MAILER-DAEMON@example.net"),
    ((), "postmaster@example.net"),
    ((), "noreply@example.net"),
    ((), "No-Reply@example.net"),
    (("Auto-Submitted: auto-replied",), None),
    (("Auto-Submitted: auto-generated; owner-email=x@y",), None),
    (("Precedence: bulk",), None),
    (("Precedence: JUNK",), None),
    (("Precedence: list",), None),
    (("List-Id: <news.example.net>",), None),
    (("List-Unsubscribe: <mailto:x@y>",), None),
    (("Content-Type: multipart/report; report-type=delivery-status; boundary=x",), None),
    (("Content-Type: multipart/report; report-type=disposition-notification; boundary=x",), None),
    (("X-Loop: " + loop_marker(GATEWAY),), None),
])
def test_mail_that_must_not_be_answered(extra, envelope):
    assert reason_to_ignore(head(*ORDINARY, *extra), envelope, GATEWAY)


def test_mail_from_the_gateway_itself_is_ignored():
    mail = head("From: Torokiki <Gateway@Torokiki.net>", "Subject: help")
    assert "own address" in reason_to_ignore(mail, None, GATEWAY)


def test_reply_goes_to_the_one_from_address():
    assert reply_sender("Kiri Tane <kiri@example.net>") == Sender("Kiri Tane", "kiri@example.net")
    assert reply_sender("kiri@example.net") == Sender("", "kiri@example.net")
    assert reply_sender('"Tane, Kiri" <kiri@example.net>') == Sender("Tane, Kiri", "kiri@example.net")


@pytest.mark.parametrize("from_header", [
    "",
    "Kiri Tane",
    "a@example.net, b@example.net",
    "<a@example.net> <b@example.net>",
    "kiri@example.net\nBcc: victim@example.org",
    "kiri@@example.net",
    "kiri@example..net",
    "-oQ/tmp/x@example.net extra",
    "kiri@exa mple.net",
    "undisclosed-recipients:;",
])
def test_no_reply_without_exactly_one_well_formed_address(from_header):
    assert isinstance(reply_sender(from_header), str)


def test_display_name_cannot_inject_headers():
    # A name that decodes to a line break is an attack on the name: the address alone is answered.
    sender = reply_sender("=?utf-8?q?Kiri=0ABcc:_victim@example.org?= <kiri@example.net>")
    assert sender == Sender("", "kiri@example.net", "display name dropped (an encoded line break in it)")
    # Unquoted, the same words are group syntax: which address is meant is a guess, so nobody.
    assert isinstance(reply_sender("Kiri Bcc: victim@example.org <kiri@example.net>"), str)


def test_encoded_display_names_are_decoded():
    assert reply_sender("=?utf-8?b?S2lyaSBUxIFuZQ==?= <k@x.net>") == Sender("Kiri Tāne", "k@x.net")


def test_a_from_header_too_long_to_read_quickly_is_not_answered():
    from torokiki_pipe.stages.s3_guard import MAX_FROM_CHARS, reply_sender

    huge = '"' + "a" * 300_000 + '" <kiri@example.net>'
    assert "longer than" in reply_sender(huge)
    assert reply_sender('"' + "a" * (MAX_FROM_CHARS - 40) + '" <kiri@example.net>').address == "kiri@example.net"
