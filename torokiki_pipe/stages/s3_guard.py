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
    note: str = ""      # for the log: what of the From header was left out (a display name dropped)

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


def our_address(address: str, gateway_address: str, subaddress: str = "") -> bool:
    """The gateway's address, or (with TOROKIKI_REPLY_SUBADDRESS) one of its sub-addresses."""
    address, gateway = address.strip("<> ").lower(), gateway_address.lower()
    if address == gateway:
        return True
    local, _, domain = gateway.rpartition("@")
    return bool(subaddress) and address.startswith(f"{local}{subaddress}") and address.endswith(f"@{domain}")


def _our_subaddress(address: str, gateway_address: str, subaddress: str) -> bool:
    return our_address(address, gateway_address, subaddress) and address.strip("<> ").lower() != gateway_address.lower()


def reason_to_ignore(head: Head, envelope_sender: str | None, gateway_address: str,
                     raw: bytes = b"", subaddress: str = "", recipient: str | None = None) -> str | None:
    """Why this mail must not be answered, or None when it may be.

    `raw` lets us see an automatic answer that quotes one of our replies whole,
    headers included: our X-Loop marker then stands in its body.  `subaddress`
    is TOROKIKI_REPLY_SUBADDRESS: mail from gateway+...@ is ours too, and mail
    to one (`recipient`, Delivered-To, X-Original-To) answers one of our
    replies, as an In-Reply-To naming it does.
    """
    if envelope_sender is not None and envelope_sender.strip() in ("", "<>"):
        return "null envelope sender (a bounce or notification)"
    if envelope_sender is None and head.return_path is not None and head.return_path.strip() in ("<>", ""):
        return "null Return-Path (a bounce or notification)"
    # The From address as the parser reads it, and as reply_sender may read it
    # when it drops an unsafe display name: neither may be ours or a mail system's.
    angle = re.match(_ANGLE, head.from_raw)
    for who in filter(None, (envelope_sender, _address_of(head.from_), angle and angle["address"].strip())):
        local = who.strip("<>").rpartition("@")[0] or who.strip("<>")
        if local.lower() in SYSTEM_SENDERS:
            return f"sent by a mail system ({who})"
        if our_address(who, gateway_address, subaddress):
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
    answers_us = (our_message_id_suffix(gateway_address) in f"{head.in_reply_to} {head.references}".lower()
                  or bool(subaddress) and any(_our_subaddress(a, gateway_address, subaddress)
                                              for a in filter(None, (recipient, *head.delivered_to))))
    if answers_us and re.match(_AUTO_REPLY_SUBJECT, head.subject, re.I):
        return f"an automatic answer to one of our replies ({head.subject[:60]})"
    if answers_us and loop_marker(gateway_address).encode() in raw.lower():
        return "quotes one of our replies whole (an automatic answer)"
    return None


# An addr-spec we are willing to hand to sendmail: no white space, no
# characters that could end the address or start another, one @.
_ADDR = r"^[^\s@<>(),;:\"\\\[\]]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$"
# The same for an internationalised address (RFC 6531): letters and digits of any script.
_ADDR_UTF8 = r"^[^\s@<>(),;:\"\\\[\]]+@[^\W_](?:[\w.-]*[^\W_])?$"

# One address and a display name fit many times over; the RFC 5322 parser takes
# seconds on a long quoted display name (300 KB: 5 s), so longer is not read.
MAX_FROM_CHARS = 2048

# "Name <address>" read by hand when the RFC 5322 parser finds the name unsafe:
# one angle-addr at the very end, and a name with none of the characters that
# could start a second address or a group once its encoded-words and quoted
# strings are set aside.
_ANGLE = r"^(?P<name>[^<>]*)<(?P<address>[^<>]*)>\s*$"
_ENCODED_WORD = r"=\?[^?\s]*\?[bBqQ]\?[^?\s]*\?="
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_NAME_SPECIALS = set(',;:<>"()\\')


class _Read(NamedTuple):
    """What the RFC 5322 parser made of a From header (or why it could not)."""
    addresses: tuple[tuple[str, str], ...] = ()    # (display name, addr-spec)
    group: bool = False
    defects: tuple[str, ...] = ()                  # other than the harmless ones
    failed: str = ""                               # the parser raised: a name that decodes to a line break


def reply_sender(from_header: str, smtputf8: bool = False) -> Sender | str:
    """The one address a reply may go to, or a reason why there is none.

    `from_header` is the raw header.  RFC 3834 section 4 leaves the choice to
    the service: ours is the From address only, never Reply-To, Sender or
    Resent-*, and only when From holds exactly one well-formed address.  The
    standard library's RFC 5322 parser reads it, encoded-words included.

    Nobody is left unanswered for the name alone: when the display name is
    what the parser finds wrong (an encoded line break, an unquoted @, a
    control character), the header is read again as ``name <address>``, and
    the address alone is answered when nothing in the name could start a
    second address or a group; `Sender.note` says the name was dropped.  An
    absent, ambiguous (several addresses, group syntax) or malformed address
    stays unanswered.  An internationalised address (non-ASCII, RFC 6531) is
    answered only when the mailer can carry it (`smtputf8`), or, with an
    ASCII local part, at its domain's A-label form (kiri@xn--mchine-bua.example),
    when that names the very same domain.
    """
    if not from_header.strip():
        return "the mail has no From address"
    if "\r" in from_header or "\n" in from_header:     # read_head unfolds: only a direct caller's text
        return "the From header contains control characters"
    if len(from_header) > MAX_FROM_CHARS:
        return f"the From header is longer than {MAX_FROM_CHARS} characters"
    read = _read_from(from_header)
    note = ""
    if read.group:
        return "the From header is a group (name: addresses;), not one address"
    if not read.failed and not read.defects and len(read.addresses) > 1:
        return f"the From header must hold exactly one address, it holds {len(read.addresses)}"
    if read.failed or read.defects or len(read.addresses) != 1:
        found = _name_and_angle_addr(from_header)
        if found is None:
            if read.failed:
                return "the From header cannot be read safely"
            if read.defects:
                return f"the From header {from_header[:100]!r} is not well-formed"
            return f"the From header must hold exactly one address, it holds {len(read.addresses)}"
        name, address, why = found
        note = f"display name dropped ({why})"
    else:
        [(name, address)] = read.addresses
    international = not address.isascii()
    if (not re.match(_ADDR_UTF8 if international else _ADDR, address) or ".." in address
            or address.startswith("-") or not address.isprintable()):
        return f"the From address {address!r} is not a well-formed address"
    if international and not smtputf8:
        ascii_form = _a_label_address(address)
        if ascii_form is None:
            return (f"the From address {address!r} is internationalised (SMTPUTF8), "
                    "which the sendmail command cannot carry")
        address = ascii_form
    if name and not note:
        why = _unsafe_name(name)
        if why:
            name, note = "", f"display name dropped ({why})"
    return Sender(display_name=one_line(name) if not note else "", address=address, note=note)


def _a_label_address(address: str) -> str | None:
    """local@xn--...: an ASCII local part at an internationalised domain, written in ASCII (RFC 5890), or None.

    Python's codec is IDNA 2003, which maps some names to others (faß.de to
    fass.de); only a domain that decodes back to itself is written so, lest
    the reply go to another domain.
    """
    local, _, domain = address.rpartition("@")
    if not local.isascii():
        return None
    try:
        labels = domain.encode("idna")
        same = labels.decode("idna") == domain.lower()
    except UnicodeError:
        return None
    text = labels.decode("ascii")
    return f"{local}@{text}" if same and re.match(_ADDR, f"{local}@{text}") else None


def _read_from(header: str) -> _Read:
    from email.errors import NonASCIILocalPartDefect, ObsoleteHeaderDefect
    from email.policy import default

    try:
        parsed = default.header_factory("from", header)
        addresses = tuple((a.display_name, a.addr_spec) for a in parsed.addresses)
        group = any(g.display_name is not None for g in parsed.groups)
        # Obsolete forms ("Kiri. Tane") are read alike everywhere; a non-ASCII
        # local part is the SMTPUTF8 question, decided on its own.
        defects = tuple(str(d) for d in parsed.defects
                        if not isinstance(d, (ObsoleteHeaderDefect, NonASCIILocalPartDefect)))
    except Exception as error:
        # An encoded-word that decodes to a line break (a header injection
        # attempt), or input CPython's RFC 5322 parser fails on (AttributeError
        # on some broken forms, RecursionError on deeply nested comments).
        return _Read(failed=type(error).__name__)
    return _Read(addresses, group, defects)


def _name_and_angle_addr(header: str) -> tuple[str, str, str] | None:
    """(name, address, why the name is dropped) of ``name <address>``, or None when that is not all it is."""
    found = re.match(_ANGLE, header)
    if found is None:
        return None
    name = found["name"]
    bare = re.sub(_QUOTED, "q", re.sub(_ENCODED_WORD, "w", name))
    if _NAME_SPECIALS & set(bare):
        return None
    read = _read_from(f"<{found['address'].strip()}>")
    if read.failed or read.defects or read.group or len(read.addresses) != 1:
        return None
    from torokiki_pipe.stages.s2_headers import decode_words

    if "@" in bare:
        why = "an unquoted @ in it"
    elif not name.replace("\t", " ").isprintable():
        why = "control characters in it"
    elif "\r" in decode_words(name) or "\n" in decode_words(name):
        why = "an encoded line break in it"
    else:
        why = "it cannot be read safely"
    return name, read.addresses[0][1], why


def _unsafe_name(name: str) -> str:
    """Why a decoded display name is not written into the reply, or ""."""
    if not name.replace("\t", " ").isprintable():
        return "control characters in it"
    if "@" in name:
        # Shown as "Kia ora evil@attacker.example," it would speak for another address.
        return "an @ in it"
    return ""


def _address_of(from_header: str) -> str:
    try:
        pairs = getaddresses([from_header]) if from_header else []
    except RecursionError:  # thousands of nested comments
        return ""
    return pairs[0][1] if pairs else ""
