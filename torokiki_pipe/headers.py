"""Stage 2a: read the header block only.

Most decisions (ignore a bounce, answer ``help``, refuse an over-size mail)
need nothing but the headers, so this stage parses them alone, with the light
``compat32`` parser, and leaves the body untouched for `mime`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from email.errors import MessageError
from email.header import decode_header, make_header
from email.parser import BytesHeaderParser

# The first empty line ends the header block, whatever the line endings.
_HEADER_END = re.compile(rb"\r\n\r\n|\n\n|\r\r|\n\r\n")
MAX_HEADER_BYTES = 1 << 20   # a megabyte of headers is already hostile


@dataclass(frozen=True)
class Head:
    """What the headers say, read before (and often instead of) the body."""
    message_id: str
    from_: str                 # decoded, for logs
    from_raw: str              # as written: addresses are parsed before words are decoded
    subject: str
    return_path: str | None
    auto_submitted: str
    precedence: str
    list_headers: tuple[str, ...]
    content_type: str          # lower-cased type/subtype of the top part
    x_loop: tuple[str, ...]
    references: str
    in_reply_to: str
    body_start: int            # offset of the body in the raw bytes
    # The parsed header items and the raw mail, from which `digest` is computed.
    source: tuple = field(repr=False, compare=False)

    # The digests are computed on first use, by mail that gets past the guard:
    # ignored mail then never loads hashlib (OpenSSL) nor reads its body again.
    @cached_property
    def digest(self) -> str:
        """sha256 of what the sender wrote (see content_digest)."""
        items, data = self.source
        return content_digest(items, memoryview(data)[self.body_start:])   # no copy of the body

    @cached_property
    def key(self) -> str:
        """Stable identity of this message, for journals and Idempotency-Key."""
        import hashlib

        source = self.message_id.strip().encode("utf-8", "replace") if self.message_id.strip() else None
        return hashlib.sha256(source).hexdigest()[:32] if source else self.digest[:32]


def read_head(data: bytes) -> Head:
    found = _HEADER_END.search(data, 0, MAX_HEADER_BYTES)
    if found:
        head_bytes, body_start = data[:found.start()], found.end()
    elif b"\n" not in data[:MAX_HEADER_BYTES] or b":" not in data.split(b"\n", 1)[0]:
        head_bytes, body_start = b"", 0          # no header block at all
    else:
        head_bytes, body_start = data[:MAX_HEADER_BYTES], len(data)
    head_bytes = head_bytes.lstrip(b"\xef\xbb\xbf")  # a BOM before the first header
    message = BytesHeaderParser().parsebytes(head_bytes)   # compat32: the light, lenient policy
    items = tuple(message.raw_items())
    raw: dict[str, list[str]] = {}
    for name, value in items:
        raw.setdefault(name.lower(), []).append(_unfold(value))

    def text(name: str) -> str:
        values = raw.get(name.lower())
        return decode_words(values[0]) if values else ""

    def all_of(name: str) -> tuple[str, ...]:
        return tuple(decode_words(v) for v in raw.get(name.lower(), []))

    return Head(
        message_id=_one_line(text("Message-ID")),
        from_=_one_line(text("From")),
        from_raw=raw["from"][0] if "from" in raw else "",
        subject=_one_line(text("Subject")),
        return_path=_one_line(text("Return-Path")) if "return-path" in raw else None,
        auto_submitted=_one_line(text("Auto-Submitted")).lower(),
        precedence=_one_line(text("Precedence")).lower(),
        list_headers=tuple(sorted(k for k in raw if k.startswith("list-"))),
        content_type=_content_type(message),
        x_loop=tuple(_one_line(v).lower() for v in all_of("X-Loop")),
        references=_one_line(text("References")),
        in_reply_to=_one_line(text("In-Reply-To")),
        body_start=body_start,
        source=(items, data),
    )


def eight_bit_as_utf8(value: str) -> str:
    """The parser smuggles raw 8-bit header bytes as surrogates (RFC 6532 mail): read them as UTF-8."""
    if any("\udc80" <= c <= "\udcff" for c in value):
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return value


def _unfold(value: str) -> str:
    return eight_bit_as_utf8(value).replace("\r", "").replace("\n", "")


# Headers added on the way in, which differ between two deliveries of the very
# same mail (each SMTP transaction gets its own Received: line, queue id, time).
_TRACE = frozenset({"received", "return-path", "delivered-to", "x-original-to", "received-spf",
                    "authentication-results", "x-envelope-from", "x-envelope-to"})
_TRACE_PREFIXES = ("x-spam", "x-virus", "arc-", "x-ms-exchange-organization")


def content_digest(items, body) -> str:
    """sha256 of the sender's headers and the body: the same mail delivered twice digests alike."""
    import hashlib

    digest = hashlib.sha256()
    for name, value in items:
        lower = name.lower()
        if lower not in _TRACE and not lower.startswith(_TRACE_PREFIXES):
            digest.update(f"{lower}:{value}\n".encode("utf-8", "surrogateescape"))
    digest.update(b"\n")
    digest.update(body)
    return digest.hexdigest()


def decode_words(value) -> str:
    """Decode RFC 2047 encoded-words."""
    raw = str(value)
    if "=?" not in raw:
        return raw
    try:
        return str(make_header(decode_header(raw)))
    # MessageError: bad base64 (HeaderParseError) or a charset name Python refuses (CharsetError)
    except (LookupError, UnicodeError, ValueError, AssertionError, MessageError):
        return raw


# C0, DEL and C1 controls: a NUL or ESC in a Message-ID or Subject reached the log line and the reply.
_CONTROLS = {c: " " for c in (*range(0x20), *range(0x7F, 0xA0))}


def _one_line(value: str) -> str:
    return " ".join(value.translate(_CONTROLS).split())


def _content_type(message) -> str:
    try:
        return message.get_content_type()
    except Exception:  # a malformed Content-Type is text/plain, as RFC 2045 says
        return "text/plain"
