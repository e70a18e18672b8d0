"""Stage 3: what must not be answered, and who may be answered.

Pure functions of the headers and the envelope.  RFC 3834 and common practice:
never answer bounces, auto-replies, list mail or our own mail, or a loop starts.
``X-Auto-Response-Suppress`` alone is deliberately not a reason: Exchange puts
it on ordinary mail, and gateways that honoured it dropped people's real mail.
"""

from __future__ import annotations

import re
from email.utils import getaddresses
from typing import NamedTuple

from torokiki_pipe.stages.s2_headers import Head
from torokiki_pipe.stages.s8_record import one_line

# Local parts that belong to mail systems, not people.
SYSTEM_SENDERS = frozenset({"mailer-daemon", "postmaster", "noreply", "no-reply",
                            "do-not-reply", "donotreply", "bounce", "bounces"})
REPORT_TYPES = ("multipart/report", "message/delivery-status",
                "message/disposition-notification", "message/feedback-report")
LOOP_MARKER_PREFIX = "torokiki-pipe"


def loop_marker(gateway_address: str) -> str:
    """The X-Loop value every reply carries; mail bearing it is ours come back."""
    return f"{LOOP_MARKER_PREFIX} {gateway_address.lower()}"


class Sender(NamedTuple):
    """The one address a reply may go to, with the name written beside it."""
    display_name: str
    address: str

    def __str__(self) -> str:
        return f"{self.display_name} <{self.address}>" if self.display_name else self.address


# Subjects of out-of-office and other automatic answers that carry none of the
# RFC 3834 headers (Apple's "Auto reply:", older Exchange, many webmails).
# Patterns here are strings that `re` compiles (and caches) on first use:
# most mail never needs them, and each run is a fresh process.
_AUTO_REPLY_SUBJECT = (
    r"^\s*(auto(matic|matische|matyczna)?[ -]?(reply|antwort|odpowied\w*|svar)|out of (the )?office|"
    r"abwesen\w*|r[ée]ponse automatique|respuesta autom[áa]tica|risposta automatica|"
    r"automatisch antwoord|fuera de la oficina|absence)")


def our_message_id_suffix(gateway_address: str) -> str:
    """Every reply's Message-ID ends so (see reply.build): how we recognise our own replies."""
    return f".torokiki@{gateway_address.rpartition('@')[2].lower()}>"


def reason_to_ignore(head: Head, envelope_sender: str | None, gateway_address: str,
                     raw: bytes = b"") -> str | None:
    """Why this mail must not be answered, or None when it may be.

    `raw` lets us see an automatic answer that quotes one of our replies whole,
    headers included: our X-Loop marker then stands in its body.
    """
    if envelope_sender is not None and envelope_sender.strip() in ("", "<>"):
        return "null envelope sender (a bounce or notification)"
    if envelope_sender is None and head.return_path is not None and head.return_path.strip() in ("<>", ""):
        return "null Return-Path (a bounce or notification)"
    for who in filter(None, (envelope_sender, _address_of(head.from_))):
        local = who.strip("<>").rpartition("@")[0] or who.strip("<>")
        if local.lower() in SYSTEM_SENDERS:
            return f"sent by a mail system ({who})"
        if who.strip("<>").lower() == gateway_address.lower():
            return "sent from the gateway's own address"
    auto = head.auto_submitted.split(";")[0].strip()
    if auto and auto != "no":
        return f"Auto-Submitted: {auto}"
    if head.precedence in ("bulk", "junk", "list"):
        return f"Precedence: {head.precedence}"
    if head.list_headers:
        return f"mailing-list mail ({', '.join(head.list_headers)})"
    if head.content_type in REPORT_TYPES:
        return f"a delivery or disposition report ({head.content_type})"
    if loop_marker(gateway_address) in head.x_loop:
        return "carries our own X-Loop marker"
    answers_us = our_message_id_suffix(gateway_address) in f"{head.in_reply_to} {head.references}".lower()
    if answers_us and re.match(_AUTO_REPLY_SUBJECT, head.subject, re.I):
        return f"an automatic answer to one of our replies ({head.subject[:60]})"
    if answers_us and loop_marker(gateway_address).encode() in raw.lower():
        return "quotes one of our replies whole (an automatic answer)"
    return None


# An addr-spec we are willing to hand to sendmail: no white space, no
# characters that could end the address or start another, one @.
_ADDR = r"^[^\s@<>(),;:\"\\\[\]]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$"


# One address and a display name fit many times over; the RFC 5322 parser takes
# seconds on a long quoted display name (300 KB: 5 s), so longer is not read.
MAX_FROM_CHARS = 2048


def reply_sender(from_header: str) -> Sender | str:
    """The one address a reply may go to, or a reason why there is none.

    `from_header` is the raw header.  RFC 3834 section 4 leaves the choice to
    the service: ours is the From address only, never Reply-To, Sender or
    Resent-*, and only when From holds exactly one well-formed address.  The
    standard library's RFC 5322 parser reads it, encoded-words included; any
    defect it reports means we do not guess.
    """
    from email.errors import InvalidHeaderDefect
    from email.policy import default

    if not from_header.strip():
        return "the mail has no From address"
    if any(c in from_header for c in "\r\n\0"):
        return "the From header contains control characters"
    if len(from_header) > MAX_FROM_CHARS:
        return f"the From header is longer than {MAX_FROM_CHARS} characters"
    try:
        parsed = default.header_factory("from", from_header)
        defects, addresses = parsed.defects, parsed.addresses
    except Exception:
        # An encoded-word that decodes to a line break (a header injection
        # attempt), or input CPython's RFC 5322 parser fails on (AttributeError
        # on some broken forms, RecursionError on deeply nested comments).
        return "the From header cannot be read safely"
    if any(isinstance(d, InvalidHeaderDefect) for d in defects):
        return f"the From header {from_header[:100]!r} is not well-formed"
    if len(addresses) != 1:
        return f"the From header must hold exactly one address, it holds {len(addresses)}"
    address = addresses[0].addr_spec
    # ASCII and printable only: that is what reply.build and sendmail can write (no SMTPUTF8).
    if (not re.match(_ADDR, address) or ".." in address or address.startswith("-")
            or not address.isascii() or not address.isprintable()):
        return f"the From address {address!r} is not a well-formed address"
    name = one_line(addresses[0].display_name)
    return Sender(display_name=name, address=address)


def _address_of(from_header: str) -> str:
    try:
        pairs = getaddresses([from_header]) if from_header else []
    except RecursionError:  # thousands of nested comments
        return ""
    return pairs[0][1] if pairs else ""
