"""The full parse of a mail, for the commands that need its body (cost tier 4).

Gives the text a person wrote and the files they attached:

- text: the text/plain leaves (several on iPhone, which splits the text around
  a photo), else the HTML converted to text.  In a multipart/alternative only
  the preferred branch gives text, but every branch can give attachments, so
  the inline images of an HTML-only or multipart/related branch count.
- attachments: the other leaves, including inline images in multipart/related.
  Signature parts (PGP, S/MIME) are not content.  A forwarded mail
  (message/rfc822) is one attachment; we never look inside it, so its text and
  pictures are not mistaken for the sender's.

Bounded before the tree is built: the email package is fed the mail a chunk
at a time and stopped (`TooComplex`, returned as `Mail.too_complex`) as soon
as it passes MAX_PARTS parts, MAX_DEPTH levels of nesting, MAX_HEADERS_PER_PART
header fields or MAX_HEADER_BLOCK of header in a part, or MAX_HELD of lines in
all.  Runs of ordinary lines reach it joined (`headers.JoinedLines`), long runs
and big base64 bodies only as a stand-in line (`_Runs`, `_Cuts`).
Of the text, at most MAX_TEXT_CHARS is read (`Mail.text_cut` says when there
was more); parameters of a header longer than MAX_PARAMETERS_BYTES are not
read (the email package splits them in quadratic time).  So whatever arrives
within the size limit, the memory and the time it costs stay proportional to
its size, and the stack stays shallow.
"""

from __future__ import annotations

import binascii
import logging
import mimetypes
import os
import re
from dataclasses import dataclass
from email.errors import MessageError
from email.message import Message
from email.policy import Compat32

from torokiki_pipe.stages.s2_headers import MAX_HEADER_BYTES, TooComplex, feed_parser


# mail-parser logs undecodable names at ERROR; with no handler Python prints that on stderr.
logging.getLogger("mailparser").addHandler(logging.NullHandler())

MAX_PARTS = 2000
MAX_DEPTH = 64
MAX_HEADERS_PER_PART = 1000
# A header block read_head cut at MAX_HEADER_BYTES is still read whole here, up to this.
MAX_HEADER_BLOCK = 2 * MAX_HEADER_BYTES
MAX_PARAMETERS_BYTES = 16 * 1024
# A response's text is a few KB; 256 KB leaves room for the quoted mails people
# leave below it.  Beyond that the text is not read (the rest could hide tags).
MAX_TEXT_CHARS = 256 * 1024
MAX_HTML_CHARS = 1024 * 1024  # HTML is bulkier than the text it gives
FEED_CHUNK = 1 << 16
SIGNATURE_TYPES = frozenset({
    "application/pgp-signature", "application/pkcs7-signature",
    "application/x-pkcs7-signature", "application/pgp-keys",
})
# Names Python does not know under the spelling mail clients use.
CHARSET_ALIASES = {
    "unicode-1-1-utf-7": "utf-7", "x-mac-cyrillic": "mac-cyrillic", "ks_c_5601-1987": "cp949",
    "x-unknown": "latin-1", "unknown-8bit": "latin-1", "x-user-defined": "latin-1",
}


@dataclass(frozen=True)
class Attachment:
    """One file the sender attached."""
    filename: str
    content_type: str
    body: "bytes | Base64Text"   # the file, or its base64 as it stands in the mail

    @property
    def data(self) -> bytes:
        """The file's bytes (decoded on demand when the mail's base64 is kept)."""
        return self.body.decode() if isinstance(self.body, Base64Text) else self.body


_BASE64_LETTERS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


class Base64Text:
    """A big base64 body as it stands in the raw mail, line breaks included, never copied.

    The website wants the file as base64: streaming the mail's own text (less
    its line breaks) saves decoding it and encoding it again, two copies of a
    25 MB photo.  Only text that is valid base64 as it stands is kept so.
    """

    CHUNK = 1 << 20

    def __init__(self, raw: bytes, start: int, end: int, length: int):
        self._raw, self._start, self._end = raw, start, end
        self._length = length          # without the line breaks

    @classmethod
    def if_canonical(cls, raw: bytes, start: int, end: int) -> "Base64Text | None":
        """The text, if the website takes it as it stands; else None (decode and re-encode)."""
        padding = raw.find(b"=", start, end)
        letters_end = padding if padding >= 0 else end
        # One pass, a megabyte at a time: once the letters are taken out, only line
        # breaks may be left, and their number gives the length.  Five times faster
        # than decoding 5 MB only to drop the bytes.
        breaks = 0
        view = memoryview(raw)[start:letters_end]
        for offset in range(0, len(view), cls.CHUNK):
            rest = bytes(view[offset:offset + cls.CHUNK]).translate(None, _BASE64_LETTERS)
            if rest.strip(b"\r\n"):
                return None
            breaks += len(rest)
        if end - letters_end > 64:     # "=" inside the text, not padding at its end
            return None
        tail = raw[letters_end:end]    # "=" or "==", then line breaks
        pads = tail.count(b"=")
        length = letters_end - start - breaks + pads
        if tail.strip(b"=\r\n") or pads > 2 or length % 4:
            return None
        return cls(raw, start, end, length)

    def __len__(self) -> int:
        return self._length

    def chunks(self, size: int = CHUNK):
        view = memoryview(self._raw)[self._start:self._end]
        for offset in range(0, len(view), size):
            yield bytes(view[offset:offset + size]).translate(None, b"\r\n")

    def decode(self) -> bytes:
        return binascii.a2b_base64(memoryview(self._raw)[self._start:self._end])


@dataclass(frozen=True)
class Mail:
    """The text a person wrote, and the files they attached.

    `too_complex` is why the mail was not read at all ("it has more than 2000
    parts"), for the reply; then text and attachments are empty.
    """
    text: str
    attachments: tuple[Attachment, ...]
    too_complex: str = ""
    text_cut: bool = False      # there was more text than MAX_TEXT_CHARS: `text` is its start


class _Part(Message):
    """A compat32 part whose parameter look-ups never raise nor take quadratic time,
    and which refuses more than MAX_HEADERS_PER_PART header fields.

    CPython's decode_params raises TypeError when a parameter comes both as
    ``name*`` and ``name*0`` (``filename*0=a; filename*=''``); the parser asks
    for the boundary that way, so one such header failed the whole mail.
    """

    def get_param(self, param, failobj=None, header="content-type", unquote=True):
        if self._too_long(header):
            return failobj
        try:
            return super().get_param(param, failobj, header, unquote)
        except TypeError:  # the parameters cannot be read: as if they were absent
            return failobj

    def get_params(self, failobj=None, header="content-type", unquote=True):
        if self._too_long(header):
            return failobj
        try:
            return super().get_params(failobj, header, unquote)
        except TypeError:  # as above
            return failobj

    def as_parsed(self):
        """The body as the parser left it: get_payload() decodes 8-bit bodies with their charset."""
        return self._payload

    def _too_long(self, header: str) -> bool:
        # The email package splits parameters by copying the rest of the value at each
        # ";": 1 MB of "; a=b" took 8 s, 25 MB would take hours.  No real Content-Type
        # or Content-Disposition comes near this; past it the parameters are absent.
        header = header.lower()
        for name, value in self._headers:
            if name.lower() == header:
                return len(value) > MAX_PARAMETERS_BYTES
        return False

    def set_raw(self, name, value):
        # The parser's only way of adding a header: a part with thousands is hostile.
        if len(self._headers) >= MAX_HEADERS_PER_PART:
            raise TooComplex(f"a part of it has more than {MAX_HEADERS_PER_PART} header fields")
        super().set_raw(name, value)


# A run of base64 lines this long is cut out of the mail before the email
# package sees it: its feed parser keeps one str per line and then joins them
# (2.6 times the part in memory, and a Python loop over every line).  The run
# is decoded straight from the raw bytes instead (see _Cuts).
CUT_AT_LEAST = 65536
# 0 for what base64 text is made of (its letters, "=" and line breaks), 1 for any other byte.
_NOT_BASE64 = bytes(0 if chr(i) in _BASE64_LETTERS.decode() + "=\r\n" else 1 for i in range(256))


def base64_runs(data: bytes, least: int = CUT_AT_LEAST, window: int = 1 << 20) -> list[tuple[int, int]]:
    """Start and end of every longest run of base64 text at least `least` bytes long.

    A window of the mail at a time is mapped to 0 (base64 text) and 1 (any other
    byte); a long run is found by searching for `least` zeros, and its ends by
    searching for the ones around it: a few C-speed searches per run, where a
    regular expression steps through every byte (bench/README.md has the numbers).
    """
    needle = bytes(least)
    runs: list[tuple[int, int]] = []
    start = None                      # where a run still open at the window's start began
    for offset in range(0, len(data), window):
        marks = data[offset:offset + window].translate(_NOT_BASE64)
        pos = 0
        if start is not None:
            pos = marks.find(1)
            if pos < 0:
                continue              # the whole window is inside the run
            if offset + pos - start >= least:
                runs.append((start, offset + pos))
            start = None
        # From here marks[pos] is a 1, or pos is 0 and no run is open.
        while (found := marks.find(needle, pos)) >= 0:
            begin = marks.rfind(1, pos, found) + 1
            end = marks.find(1, found)
            if end < 0:
                start = offset + begin    # it goes on into the next window
                break
            runs.append((offset + begin, offset + end))
            pos = end
        else:
            tail = marks.rfind(1, pos) + 1
            if tail < len(marks):         # a run starts near the end and may go on
                start = offset + tail
    if start is not None and len(data) - start >= least:
        runs.append((start, len(data)))
    return runs


class _Cuts:
    """The mail with its big base64 bodies replaced by token lines, and the way back."""

    def __init__(self, data: bytes):
        self.data = data
        self.token = f"torokiki-cut-{os.urandom(6).hex()}-"
        self.runs: list[tuple[int, int]] = []
        pieces, last = [], 0
        for run_start, run_end in base64_runs(data):
            start = _next_full_line(data, run_start, run_end)
            end = data.rfind(b"\n", run_start, run_end) + 1
            if end - start < CUT_AT_LEAST:
                continue
            pieces += [data[last:start], f"{self.token}{len(self.runs)}\n".encode()]
            self.runs.append((start, end))
            last = end
        self.skeleton = b"".join(pieces) + data[last:] if self.runs else data

    def run_of(self, part: Message) -> tuple[int, int] | None:
        """Where the raw base64 of a base64 part whose whole body was cut out stands, else None."""
        payload = part.get_payload()
        if not self.runs or not isinstance(payload, str) or not payload.startswith(self.token):
            return None
        if str(part.get("Content-Transfer-Encoding", "")).strip().lower() != "base64":
            return None
        index = payload.strip()[len(self.token):]
        if not index.isdigit() or int(index) >= len(self.runs):
            return None
        return self.runs[int(index)]

    def in_delivery_report(self, message: Message) -> bool:
        """Whether a cut stands in a delivery report, whose blocks a blank line in a run would separate."""
        for part in message.walk():
            if self.runs and _content_type(part) == "message/delivery-status":
                if any(isinstance(block.as_parsed(), str) and self.token in block.as_parsed()
                       for block in part.walk()):
                    return True
        return False

    def restore(self, raw: bytes, limit: int | None = None) -> tuple[bytes, bool]:
        """`raw` with its cut runs put back, and whether that is all of it (see _put_back)."""
        if not self.runs or self.token.encode() not in raw:
            return raw, True
        found = re.finditer(re.escape(self.token.encode()) + rb"(\d+)(\n?)", raw)
        return _put_back(raw, found, self.runs, lambda start, end: _lf(self.data[start:end]), limit)


def _next_full_line(data: bytes, start: int, end: int) -> int:
    """The first non-empty line that starts at or after `start` (a run may begin mid-line)."""
    if start > 0 and data[start - 1:start] != b"\n":
        start = data.find(b"\n", start, end) + 1 or end
    while start < end and data[start] in b"\r\n":
        start += 1
    return start


# Runs of plain or folded lines (see headers._RUNS) this long are kept out of the
# email package as well (it gets a stand-in line, see _Runs): it would build a
# str of a part's whole body, two bytes a byte once one is 8-bit and once more
# while joining, where the gateway reads only the first MAX_TEXT_CHARS of a text.
CUT_RUNS_OF = 1024
# What the email package may be handed in all (headers.JoinedLines.max_held): lines,
# headers and runs shorter than CUT_RUNS_OF.  The corpus hands it 650 KB at most, a
# 5 MB HTML newsletter 21 MB; the parser holds about that, and as much again
# while it joins a body.
MAX_HELD = 24 * 1024 * 1024


class _Runs:
    """The runs JoinedLines kept out of the email package: where they stand, and the way back.

    A plain run becomes a plain line, a folded run a folded line, so the
    parser reads the mail's structure as before; header blocks get their runs
    back before the parser reads them, bodies when they are read.
    """

    def __init__(self, fed: bytes, keep_whole: str = ""):
        self.fed = fed                  # the bytes the parser was fed; spans index them
        self.keep_whole = keep_whole    # a run holding this (a _Cuts token) is handed over as it is
        self.token = f"torokiki-run-{os.urandom(6).hex()}-"
        self.spans: list[tuple[int, int]] = []
        self._stand_in = re.compile(rb"(?m)^ ?" + re.escape(self.token.encode()) + rb"(\d+)\.(\n?)")

    def cut(self, text: str, start: int, end: int, folded: bool) -> str | None:
        if end - start < CUT_RUNS_OF or (self.keep_whole and self.keep_whole in text):
            return None
        self.spans.append((start, end))
        return f"{' ' if folded else ''}{self.token}{len(self.spans) - 1}.\n"

    def run(self, index: int) -> bytes:
        """A run as the parser would have read it: line ends made "\n"."""
        return self._normalized(*self.spans[index])

    def _normalized(self, start: int, end: int) -> bytes:
        return _lf(self.fed[start:end])

    def length(self, line: str) -> int:
        """How long a line the parser holds really is."""
        if self.spans and line.startswith((self.token, " " + self.token)):
            start, end = self.spans[int(line.lstrip()[len(self.token):].split(".", 1)[0])]
            return end - start
        return len(line)

    def header_lines(self, lines: list[str]) -> list[str]:
        """A header block's lines with its folded runs back (they fold a long header)."""
        if not self.spans:
            return lines
        return [self.run(int(line[1 + len(self.token):].split(".", 1)[0])).decode("ascii", "surrogateescape")
                if line.startswith(" " + self.token) else line for line in lines]

    def restore(self, raw: bytes, limit: int | None = None) -> tuple[bytes, bool]:
        """`raw` with its runs put back, and whether that is all of it (see _put_back)."""
        if not self.spans or self.token.encode() not in raw:
            return raw, True
        return _put_back(raw, self._stand_in.finditer(raw), self.spans, self._normalized, limit)


def _lf(run: bytes) -> bytes:
    """Line ends made "\n", as the parser made them everywhere else."""
    return run.replace(b"\r\n", b"\n").replace(b"\r", b"\n") if b"\r" in run else run


def _put_back(raw: bytes, found, runs: list, run_of, limit: int | None) -> tuple[bytes, bool]:
    """`raw` with each stand-in `found` replaced by run_of(start, end) of its run, and whether that is all.

    With a limit, stops once at least `limit` bytes are back (the caller cuts).
    A stand-in's line end may be gone: the line end before a boundary belongs
    to the boundary, and the parser took it away; so then is the run's.
    """
    pieces, size, last = [], 0, 0
    for stand_in in found:
        index = int(stand_in.group(1))
        if index >= len(runs):
            continue
        start, end = runs[index]
        size += stand_in.start() - last
        short = limit is not None and end - start > limit - size   # copy no more of a big run than asked
        run = run_of(start, start + max(0, limit - size) + 2 if short else end)
        if not stand_in.group(2) and not short:
            run = run[:-1]
        pieces += [raw[last:stand_in.start()], run]
        size += len(run)
        last = stand_in.end()
        if short or (limit is not None and size >= limit and last < len(raw)):
            return b"".join(pieces), False
    pieces.append(raw[last:])
    return b"".join(pieces), True


def _restored(text, cuts: _Cuts, runs: _Runs, limit: int | None = None) -> tuple[bytes, bool]:
    """A body as the parser read it (str) or as written back (bytes), everything kept out put back."""
    raw = text.encode("ascii", "surrogateescape") if isinstance(text, str) else text
    raw, whole = runs.restore(raw, limit)     # runs never hold a cut (keep_whole)
    raw, rest = cuts.restore(raw, limit)
    return raw, whole and rest


def _kept_out(payload, cuts: _Cuts, runs: _Runs) -> bool:
    return isinstance(payload, str) and bool((runs.spans and runs.token in payload)
                                             or (cuts.runs and cuts.token in payload))


def _parse(fed: bytes, runs: _Runs) -> Message:
    """The MIME tree, built by the email package within our bounds, else TooComplex.

    Fed a chunk at a time, so that the bounds stop it early (decoding the whole
    mail into one str first would also cost four bytes a character once any
    byte is 8-bit); line ends become "\n" as in the email package's parse(file).
    """
    parser = feed_parser(_Part, normalize=True, cut=runs.cut, max_held=MAX_HELD)
    count = 0

    def new_message():
        # The parser makes every part, at every depth, here; its stack is the depth.
        nonlocal count
        count += 1
        if count > MAX_PARTS:
            raise TooComplex(f"it has more than {MAX_PARTS} parts")
        if len(parser._msgstack) > MAX_DEPTH:
            raise TooComplex(f"its parts are nested more than {MAX_DEPTH} deep")
        make_message()

    def parse_headers(lines):
        # A part's whole header block, before the parser joins folded lines (twice over).
        if sum(map(runs.length, lines)) > MAX_HEADER_BLOCK:
            raise TooComplex(f"a header of it is larger than {MAX_HEADER_BLOCK // (1024 * 1024)} MB")
        parse_headers_now(runs.header_lines(lines))

    make_message, parser._new_message = parser._new_message, new_message
    parse_headers_now, parser._parse_headers = parser._parse_headers, parse_headers
    view = memoryview(fed)
    for offset in range(0, len(fed), FEED_CHUNK):
        parser.feed(str(view[offset:offset + FEED_CHUNK], "ascii", "surrogateescape"))
    return parser.close()


def parse_mail(data: bytes) -> Mail:
    """The sender's text and files; `Mail.too_complex` says why when the mail is past our bounds."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return _read(data)
    except TooComplex as error:
        return Mail(text="", attachments=(), too_complex=str(error))
    except RecursionError:   # should the bounds above ever let one through: an answer, not a crash
        return Mail(text="", attachments=(), too_complex="its parts are nested too deeply")


def _read(data: bytes) -> Mail:
    cuts = _Cuts(data)
    runs = _Runs(cuts.skeleton, keep_whole=cuts.token)
    message = _parse(cuts.skeleton, runs)
    if cuts.in_delivery_report(message):      # rare: read it again without the base64 cuts
        cuts = _Cuts(b"")
        runs = _Runs(data)
        message = _parse(data, runs)
    plain: list[str] = []
    html: list[str] = []
    room = {"text/plain": MAX_TEXT_CHARS, "text/html": MAX_HTML_CHARS}   # what is left to read
    cut = False
    attachments: list[Attachment] = []
    # (part, depth, gives_text): gives_text is False in a non-preferred alternative.
    stack = [(message, 0, True)]
    seen = 0
    while stack:
        part, depth, gives_text = stack.pop()
        seen += 1
        if seen > MAX_PARTS or depth > MAX_DEPTH:   # the parser stops first; kept in case it changes
            raise TooComplex(f"it has more than {MAX_PARTS} parts or is nested more than {MAX_DEPTH} deep")
        ctype = _content_type(part)
        children = part.get_payload() if part.is_multipart() else None
        if isinstance(children, list) and not ctype.startswith("message/"):
            preferred = _preferred_alternative(children) if ctype == "multipart/alternative" else None
            for child in reversed(children):
                stack.append((child, depth + 1,
                              gives_text and (preferred is None or child is preferred)))
            continue
        disposition = (part.get_content_disposition() or "").lower()
        if ctype.startswith("multipart/"):
            ctype = "text/plain"  # declared multipart but no parts found: read it as text
        if ctype in ("text/plain", "text/html") and disposition != "attachment":
            if gives_text:
                text, more = _text_of(part, room[ctype], cuts, runs)
                room[ctype] -= len(text)
                cut = cut or more
                (plain if ctype == "text/plain" else html).append(text)
            continue
        if ctype in SIGNATURE_TYPES:
            continue
        attachments.append(_attachment_of(part, ctype, cuts, runs))
    if plain:
        text = "\n".join(plain)
    else:
        from torokiki_pipe.stages.s5_understand.htmltext import html_to_text   # only HTML-only mail needs it

        text = "\n".join(html_to_text(h) for h in html)
    if len(text) > MAX_TEXT_CHARS:
        text, cut = text[:MAX_TEXT_CHARS], True
    return Mail(text=text, attachments=tuple(attachments), text_cut=cut)


def _content_type(part: Message) -> str:
    try:
        return part.get_content_type()
    except Exception:
        return "application/octet-stream"


def _contains_plain(part: Message, budget: int = 200) -> bool:
    todo = [part]
    while todo and budget > 0:
        budget -= 1
        current = todo.pop()
        if _content_type(current) == "text/plain":
            return True
        payload = current.get_payload() if current.is_multipart() else None
        if isinstance(payload, list):
            todo.extend(payload)
    return False


def _preferred_alternative(children: list) -> Message | None:
    """We read plain text best: the first alternative holding text/plain, else the last."""
    for child in children:
        if _contains_plain(child):
            return child
    return children[-1] if children else None


def _text_of(part: Message, room: int, cuts: _Cuts, runs: _Runs) -> tuple[str, bool]:
    """At most `room` characters of the part's text, and whether it had more."""
    if room <= 0:
        return "", bool(part.get_payload())
    # Enough of the encoded text for `room` characters: UTF-8 takes up to 4 bytes a
    # character, base64 4 characters for 3 bytes, quoted-printable 3 for 1 (and "=" line ends).
    encoding = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
    enough = {"quoted-printable": 13, "base64": 6}.get(encoding, 4) * room + 4096
    payload, more = part.as_parsed(), False
    if isinstance(payload, str) and (len(payload) > enough or _kept_out(payload, cuts, runs)):
        encoded, whole = _restored(payload, cuts, runs, enough)
        if len(encoded) > enough:
            # Cut at a line end, so that base64 and quoted-printable lines stay whole.
            end = max(encoded.rfind(b"\n", 0, enough), encoded.rfind(b"\r", 0, enough)) + 1 or enough
            encoded, whole = encoded[:end], False
        payload, more = _transfer_decoded(part, encoded), not whole
    else:
        payload = part.get_payload(decode=True) or b""
    charset = (part.get_content_charset() or "utf-8").lower()
    charset = CHARSET_ALIASES.get(charset, charset)
    # mail-parser's ported_string rule (the declared charset, else UTF-8 when the
    # name is unknown or the bytes lie), written out: importing mail-parser would
    # cost every plain text mail more than the rest of its parse (bench/README.md).
    try:
        text = _decode_start(payload, charset) if more else payload.decode(charset)
    except (LookupError, UnicodeError, ValueError):   # ValueError: a NUL in the charset name
        text = payload.decode("utf-8", "replace")
    text = text.replace("\x00", "")
    if len(text) > room:
        text, more = text[:room], True
    return text, more


def _decode_start(payload: bytes, charset: str) -> str:
    """The start of a text that was cut: a character the cut split is left out."""
    try:
        return payload.decode(charset)
    except UnicodeDecodeError as error:
        if error.start < len(payload) - 8:   # not the cut: the bytes lie
            raise
        return payload[:error.start].decode(charset)


def _transfer_decoded(part: Message, encoded: bytes) -> bytes:
    """What get_payload(decode=True) gives for these bytes as the part's body."""
    encoding = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
    if encoding in ("", "7bit", "8bit", "binary"):
        return encoded
    if encoding == "quoted-printable":
        return binascii.a2b_qp(encoded)
    if encoding == "base64":
        try:
            return binascii.a2b_base64(encoded)
        except (binascii.Error, ValueError):
            pass   # broken base64: let the email package salvage what it can
    stand_in = Message()
    stand_in["Content-Transfer-Encoding"] = encoding
    stand_in.set_payload(encoded.decode("ascii", "surrogateescape"))
    return stand_in.get_payload(decode=True) or b""


def _attachment_of(part: Message, ctype: str, cuts: _Cuts, runs: _Runs) -> Attachment:
    if ctype.startswith("message/"):
        payload = part.get_payload()
        inner = payload[0] if isinstance(payload, list) and payload else payload
        data = (_restored(_message_bytes(inner), cuts, runs)[0] if isinstance(inner, Message)
                else _decoded(part, cuts, runs))
    else:
        run = cuts.run_of(part)
        data = _decoded(part, cuts, runs) if run is None else (Base64Text.if_canonical(cuts.data, *run)
                                                   or _a2b(memoryview(cuts.data)[run[0]:run[1]]))
    return Attachment(filename=safe_filename(_raw_filename(part), ctype), content_type=ctype, body=data)


class _AsReceived(Compat32):
    """Writes headers back as they were read: the stock folding raises on broken ones."""

    def fold_binary(self, name, value):
        return f"{name}: {value}{self.linesep}".encode("utf-8", "surrogateescape")


# 8bit: raw bytes go back out as they came (the 7bit default re-encodes them and can raise).
_AS_RECEIVED = _AsReceived(cte_type="8bit", linesep="\n")


def _message_bytes(inner: Message) -> bytes:
    # A forwarded mail is kept as received; the default as_bytes() raised HeaderParseError or
    # UnicodeEncodeError on broken ones (found by tests/test_fuzz.py).
    try:
        return inner.as_bytes(policy=_AS_RECEIVED)
    except (MessageError, ValueError, LookupError, TypeError, AttributeError, IndexError):
        return b""


def _decoded(part: Message, cuts: _Cuts, runs: _Runs) -> bytes:
    """The part's bytes; base64 straight through binascii, which is what a big photo needs."""
    if _kept_out(part.as_parsed(), cuts, runs):
        return _transfer_decoded(part, _restored(part.as_parsed(), cuts, runs)[0])
    payload = part.get_payload()
    if (isinstance(payload, str) and payload.isascii()
            and str(part.get("Content-Transfer-Encoding", "")).strip().lower() == "base64"):
        try:
            return binascii.a2b_base64(payload)
        except (binascii.Error, ValueError):
            pass   # broken base64: let the email package salvage what it can
    return part.get_payload(decode=True) or b""


def _a2b(run: memoryview) -> bytes:
    try:
        return binascii.a2b_base64(run)
    except (binascii.Error, ValueError):   # broken base64: the email package salvages what it can
        salvage = Message()
        salvage["Content-Transfer-Encoding"] = "base64"
        salvage.set_payload(bytes(run).decode("ascii"))
        return salvage.get_payload(decode=True) or b""


def _raw_filename(part: Message) -> str:
    # mail-parser (the floor of the benchmark) is loaded only for names that need it.  Its
    # view re-reads raw 8-bit parameters as UTF-8, which compat32 would turn into
    # replacement characters (Yahoo sends Cyrillic names that way); ASCII headers
    # read the same without it, and most phones name files so.
    view = part
    values = [str(value) for key, value in part.raw_items() if key.lower() in ("content-type", "content-disposition")]
    if any(len(value) > MAX_PARAMETERS_BYTES for value in values):
        return ""     # its parameters are not read (see _Part._too_long); the view is a plain Message
    if not all(value.isascii() for value in values):
        from mailparser.utils import mime_header_view

        view, _ = mime_header_view(part)
    try:
        name = view.get_filename() or view.get_param("name") or ""
    except Exception:
        return ""
    if isinstance(name, tuple):  # an RFC 2231 value the parser left undecoded
        name = name[2]
    name = str(name)
    if "=?" not in name:
        return name.strip()
    # RFC 2047 inside parameters is not standard, yet Yahoo and Apple send it.
    from mailparser.utils import decode_header_part

    try:
        return decode_header_part(name)
    except ValueError:  # a NUL in the encoded-word's charset ("=?\0?Q?x?="): keep the name as written
        return name


def safe_filename(name: str, content_type: str) -> str:
    """A file name without any path, control character or hidden-file dot."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if c.isprintable()).strip().lstrip(".")
    if not name:
        extension = mimetypes.guess_extension(content_type) or (".eml" if content_type.startswith("message/") else ".bin")
        name = "attachment" + extension
    stem, extension = os.path.splitext(name)
    return stem[:120] + extension[:20]
