"""Stage 2a: read the header block only.

Most decisions (ignore a bounce, answer ``help``, refuse an over-size mail)
need nothing but the headers, so this stage parses them alone, with the light
``compat32`` parser, and leaves the body untouched for `mime`.

Bounded: at most MAX_HEADER_BYTES of header block and its first
MAX_HEADER_FIELDS fields are read, and folded lines reach the parser joined
(`JoinedLines`), so a megabyte of hostile headers costs a few megabytes, not
forty, and milliseconds, not a second.
"""

from __future__ import annotations

import hashlib
import re
from email.errors import MessageError
from email.feedparser import BufferedSubFile, FeedParser
from email.header import decode_header, make_header
from typing import NamedTuple

# A NUL or ESC in a Message-ID or Subject once reached the log line and the reply.
from torokiki_pipe.stages.s8_record import one_line

# The first empty line ends the header block, whatever the line endings.
_HEADER_END = re.compile(rb"\r\n\r\n|\n\n|\r\r|\n\r\n")
MAX_HEADER_BYTES = 1 << 20   # a megabyte of headers is already hostile
MAX_HEADER_FIELDS = 1000     # real mail has tens; spam filters and relays add a few hundred at most
# A line that starts a new field (not a folded continuation), for counting fields.
_FIELD_START = rb"(?:\r\n|\r(?!\n)|\n)(?![ \t])"


class TooComplex(ValueError):
    """The mail is past a bound of what the gateway reads; str() says which, for the sender.

    Raised inside the bounded parses (here and in `mime`) to stop the email
    package at once; `mime.parse_mail` turns it into `Mail.too_complex`.
    """


_EOL = r"(?:\r\n|\r|\n)"
JOIN_AT_MOST = 4096     # lines per joined run: bounds the regex engine's own memory per match
LINE_COST = 64          # what the email package spends on a line besides its characters
# The email package's feed parser keeps one str per line (57 bytes for a line "x"),
# however long the part.  Runs of lines that no state of its parser tells apart
# are handed over as one "line" instead, which it treats exactly as it treated
# them one by one (see JoinedLines):
#  - plain lines: not a possible boundary ("--"), a header ("Name:", "From "), a
#    continuation (leading white space) or the blank line that ends a header
#    block.  In a header block the first of them ends it, elsewhere they are
#    body.  (_PLAINEST is a quicker test of most of them: no colon at all.)
#  - folded lines (leading white space): in a header block they fold the
#    header before them, elsewhere they are body.
# Any other line goes alone.  The classes are tested as feedparser's headerRE
# and NLCRE test them.
_PLAINEST = r"[^-\t \r\nF:][^\r\n:]*\r?\n"
_PLAIN = rf"(?!--|From |[\041-\071\073-\176]*:)[^\t \r\n][^\r\n]*{_EOL}"
_FOLDED = rf"[\t ][^\r\n]*{_EOL}"
_RUNS = (rf"(?P<plain>(?:{_PLAINEST}|{_PLAIN}){{1,{JOIN_AT_MOST}}})"
         rf"|(?P<folded>(?:{_FOLDED}){{1,{JOIN_AT_MOST}}})|[^\r\n]*{_EOL}")
# Header blocks up to this size are read line by line, as the email package reads them:
# compiling _RUNS would cost ignored mail more than it saves.
JOIN_HEADERS_OVER = 64 * 1024


class JoinedLines(BufferedSubFile):
    """The feed parser's input: runs of plain or folded lines handed over joined (see _RUNS).

    Lines end at CR LF, CR or LF, as in the email package's own input (a
    StringIO with newline="", Python 3.9 to 3.13).  Options:

    - normalize: line ends become "\n", as the email package's parse(file)
      reads them (its text wrapper's universal newlines);
    - cut(text, start, end, folded): may return a stand-in line for a run
      (start and end count characters of the input, which are its bytes, as
      the parser decodes them with surrogateescape); see mime._Runs;
    - max_held: past this many bytes handed over (a character of 8-bit text
      counting two, and each line LINE_COST more), TooComplex is raised: it
      bounds both the memory and the time the email package spends, whatever
      the mail is made of.
    """

    def __init__(self, *, normalize: bool = False, cut=None, max_held: int | None = None):
        super().__init__()
        self._pieces: list[str] = []     # the line still being received
        self._position = 0               # where _pieces start in the input
        self.normalize, self.cut, self.max_held = normalize, cut, max_held
        self.held = 0

    def push(self, data: str) -> None:
        # A CR at the very end may be the first half of a CR LF: keep it for the next push.
        end = max(data.rfind("\n"), data.rfind("\r", 0, len(data) - 1)) + 1
        if end == 0:
            self._pieces.append(data)
            return
        self._pieces.append(data[:end])
        text = "".join(self._pieces)
        self._pieces = [data[end:]] if end < len(data) else []
        self._hand_over(text, len(text))

    def close(self) -> None:
        text = "".join(self._pieces)
        self._pieces = []
        self._hand_over(text, max(text.rfind("\n"), text.rfind("\r")) + 1)
        super().close()

    def _hand_over(self, text: str, end: int) -> None:
        """The lines of text[:end] and then its unfinished rest, if any."""
        lines, held, start = [], 0, self._position
        for found in re.finditer(_RUNS, text[:end]):
            line = found.group()
            if found.lastgroup and self.cut is not None and (
                    stand_in := self.cut(line, start + found.start(), start + found.end(),
                                         found.lastgroup == "folded")) is not None:
                line = stand_in
            elif self.normalize and "\r" in line:
                line = line.replace("\r\n", "\n").replace("\r", "\n")
            # A str of 8-bit text (surrogates) takes two bytes a character.
            held += (len(line) if line.isascii() else 2 * len(line)) + LINE_COST
            lines.append(line)
        if end < len(text):
            lines.append(text[end:].replace("\r", "\n") if self.normalize else text[end:])
            held += len(text) - end + LINE_COST
        self._position = start + len(text)
        self.held += held
        if self.max_held is not None and self.held > self.max_held:
            raise TooComplex("it is made of too many short lines, parts or headers")
        self.pushlines(lines)


def feed_parser(factory=None, **options) -> FeedParser:
    """A feed parser (compat32, its default) that reads its input through JoinedLines(**options).

    (email.policy itself is not imported: it loads the header registry, which
    ignored mail never needs.)
    """
    parser = FeedParser(factory) if factory is not None else FeedParser()
    parser._input = JoinedLines(**options)     # the attribute the parser reads its lines from
    return parser


class Head(NamedTuple):
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
    digest: str                # sha256 of what the sender wrote (content_digest): names what is kept
    key: str                   # stable identity of the message, for the journal and Idempotency-Key
    # Where the MTA delivered it (newest first): the sub-address a reply was sent to.
    delivered_to: tuple[str, ...] = ()     # Delivered-To, then X-Original-To
    auth_results: tuple[str, ...] = ()     # Authentication-Results as written, newest first (stages/s3_auth)


def read_head(data: bytes) -> Head:
    found = _HEADER_END.search(data, 0, MAX_HEADER_BYTES)
    if found:
        head_bytes, body_start = data[:found.start()], found.end()
    elif (first_end := data.find(b"\n", 0, MAX_HEADER_BYTES)) < 0 or b":" not in data[:first_end]:
        head_bytes, body_start = b"", 0          # no header block at all
    else:
        head_bytes, body_start = data[:MAX_HEADER_BYTES], len(data)
    head_bytes = head_bytes.lstrip(b"\xef\xbb\xbf")  # a BOM before the first header
    message = _parse_head(head_bytes)
    items = tuple(message.raw_items())
    raw: dict[str, list[str]] = {}
    for name, value in items:
        raw.setdefault(name.lower(), []).append(_unfold(value))

    def text(name: str) -> str:
        values = raw.get(name.lower())
        return decode_words(values[0]) if values else ""

    def all_of(name: str) -> tuple[str, ...]:
        return tuple(decode_words(v) for v in raw.get(name.lower(), []))

    message_id = one_line(text("Message-ID"))
    digest = content_digest(items, memoryview(data)[body_start:])   # no copy of the body
    return Head(
        message_id=message_id,
        from_=one_line(text("From")),
        from_raw=raw["from"][0] if "from" in raw else "",
        subject=one_line(text("Subject")),
        return_path=one_line(text("Return-Path")) if "return-path" in raw else None,
        auto_submitted=one_line(text("Auto-Submitted")).lower(),
        precedence=one_line(text("Precedence")).lower(),
        list_headers=tuple(sorted(k for k in raw if k.startswith("list-"))),
        content_type=_content_type(message),
        x_loop=tuple(one_line(v).lower() for v in all_of("X-Loop")),
        references=one_line(text("References")),
        in_reply_to=one_line(text("In-Reply-To")),
        body_start=body_start,
        digest=digest,
        key=message_key(message_id, digest),
        delivered_to=tuple(one_line(v, 500) for v in (*all_of("Delivered-To"), *all_of("X-Original-To"))),
        auth_results=tuple(raw.get("authentication-results", ())),
    )


def _parse_head(head_bytes: bytes):
    """The header block with compat32 (the light, lenient policy), its first MAX_HEADER_FIELDS fields."""
    if head_bytes.count(b"\n") + head_bytes.count(b"\r") > MAX_HEADER_FIELDS:   # else too few lines
        for count, found in enumerate(re.finditer(_FIELD_START, head_bytes), 2):
            if count > MAX_HEADER_FIELDS:
                head_bytes = head_bytes[:found.start()]
                break
    parser = feed_parser() if len(head_bytes) > JOIN_HEADERS_OVER else FeedParser()
    parser._set_headersonly()   # what BytesHeaderParser does
    parser.feed(head_bytes.decode("ascii", "surrogateescape"))
    return parser.close()


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


def message_key(message_id: str, digest: str) -> str:
    """The message's identity: its Message-ID's hash, or its content's when it has none."""
    source = message_id.strip().encode("utf-8", "replace")
    return hashlib.sha256(source).hexdigest()[:32] if source else digest[:32]


def content_digest(items, body) -> str:
    """sha256 of the sender's headers and the body: the same mail delivered twice digests alike."""
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


def _content_type(message) -> str:
    try:
        return message.get_content_type()
    except Exception:  # a malformed Content-Type is text/plain, as RFC 2045 says
        return "text/plain"
