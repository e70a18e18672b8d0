"""Stage 2b: the full parse, for the commands that need the body.

Gives the text a person wrote and the files they attached:

- text: the text/plain leaves (several on iPhone, which splits the text around
  a photo), else the HTML converted to text.  In a multipart/alternative only
  the preferred branch gives text, but every branch can give attachments, so
  the inline images of an HTML-only or multipart/related branch count.
- attachments: the other leaves, including inline images in multipart/related.
  Signature parts (PGP, S/MIME) are not content.  A forwarded mail
  (message/rfc822) is one attachment; we never look inside it, so its text and
  pictures are not mistaken for the sender's.

The walk is iterative and bounded, so hostile nesting or thousands of parts
cannot exhaust the stack or the clock.
"""

from __future__ import annotations

import binascii
import io
import logging
import mimetypes
import os
from dataclasses import dataclass
from email.errors import MessageError
from email.message import Message
from email.parser import BytesParser
from email.policy import Compat32, compat32


# mail-parser logs undecodable names at ERROR; with no handler Python prints that on stderr.
logging.getLogger("mailparser").addHandler(logging.NullHandler())

MAX_PARTS = 2000
MAX_DEPTH = 64
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
    """The text a person wrote, and the files they attached."""
    text: str
    attachments: tuple[Attachment, ...]
    truncated: bool = False     # the MIME tree went past our bounds


class _Part(Message):
    """A compat32 part whose parameter look-ups never raise.

    CPython's decode_params raises TypeError when a parameter comes both as
    ``name*`` and ``name*0`` (``filename*0=a; filename*=''``); the parser asks
    for the boundary that way, so one such header failed the whole mail.
    """

    def get_param(self, param, failobj=None, header="content-type", unquote=True):
        try:
            return super().get_param(param, failobj, header, unquote)
        except TypeError:  # the parameters cannot be read: as if they were absent
            return failobj

    def get_params(self, failobj=None, header="content-type", unquote=True):
        try:
            return super().get_params(failobj, header, unquote)
        except TypeError:  # as above
            return failobj


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
    searching for the ones around it.  A regular expression stepped through every
    byte instead: 5 ms for a 5 MB photo, 48 ms for 5 MB of HTML, where this takes 2.
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
        """Where the raw base64 of a part whose whole body was cut out stands, else None."""
        payload = part.get_payload()
        if not self.runs or not isinstance(payload, str) or not payload.startswith(self.token):
            return None
        index = payload.strip()[len(self.token):]
        if not index.isdigit() or int(index) >= len(self.runs):
            return None
        return self.runs[int(index)]

    def all_whole_base64_bodies(self, message: Message) -> bool:
        """True when every cut is the whole body of a base64 part (then nothing else needs it back)."""
        for part in message.walk():
            payload = part.get_payload() if not part.is_multipart() else None
            if isinstance(payload, str) and self.token in payload:
                encoding = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
                if encoding != "base64" or self.run_of(part) is None:
                    return False
        return True

    def restore(self, raw: bytes) -> bytes:
        for index, (start, end) in enumerate(self.runs):
            raw = raw.replace(f"{self.token}{index}\n".encode(), self.data[start:end])
        return raw


def _next_full_line(data: bytes, start: int, end: int) -> int:
    """The first non-empty line that starts at or after `start` (a run may begin mid-line)."""
    if start > 0 and data[start - 1:start] != b"\n":
        start = data.find(b"\n", start, end) + 1 or end
    while start < end and data[start] in b"\r\n":
        start += 1
    return start


def _parse(data: bytes) -> Message:
    # parse(BytesIO) feeds the parser in chunks; parsebytes() would first decode
    # the whole mail into one str, four bytes a character once any byte is 8-bit.
    return BytesParser(_Part, policy=compat32).parse(io.BytesIO(data))


def parse_mail(data: bytes) -> Mail:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    cuts = _Cuts(data)
    message = _parse(cuts.skeleton)
    if cuts.runs and not cuts.all_whole_base64_bodies(message):
        cuts = _Cuts(b"")          # a cut landed inside something else: read the mail whole
        message = _parse(data)
    plain: list[str] = []
    html: list[str] = []
    attachments: list[Attachment] = []
    # (part, depth, gives_text): gives_text is False in a non-preferred alternative.
    stack = [(message, 0, True)]
    seen = 0
    truncated = False
    while stack:
        part, depth, gives_text = stack.pop()
        seen += 1
        if seen > MAX_PARTS or depth > MAX_DEPTH:
            truncated = True
            break
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
                (plain if ctype == "text/plain" else html).append(_text_of(part))
            continue
        if ctype in SIGNATURE_TYPES:
            continue
        attachments.append(_attachment_of(part, ctype, cuts))
    if plain:
        text = "\n".join(plain)
    else:
        from .htmltext import html_to_text   # only HTML-only mail needs it

        text = "\n".join(html_to_text(h) for h in html)
    return Mail(text=text, attachments=tuple(attachments), truncated=truncated)


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


def _text_of(part: Message) -> str:
    payload = part.get_payload(decode=True) or b""
    charset = (part.get_content_charset() or "utf-8").lower()
    charset = CHARSET_ALIASES.get(charset, charset)
    # mail-parser's ported_string rule (the declared charset, else UTF-8 when the
    # name is unknown or the bytes lie), written out: importing mail-parser costs
    # a plain text mail ~16 ms, which the benchmark's start-up targets cannot spare.
    try:
        text = payload.decode(charset)
    except (LookupError, UnicodeError, ValueError):   # ValueError: a NUL in the charset name
        text = payload.decode("utf-8", "replace")
    return text.replace("\x00", "")


def _attachment_of(part: Message, ctype: str, cuts: _Cuts) -> Attachment:
    if ctype.startswith("message/"):
        payload = part.get_payload()
        inner = payload[0] if isinstance(payload, list) and payload else payload
        data = (cuts.restore(_message_bytes(inner)) if isinstance(inner, Message)
                else (part.get_payload(decode=True) or b""))
    else:
        run = cuts.run_of(part)
        data = _decoded(part) if run is None else (Base64Text.if_canonical(cuts.data, *run)
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


def _decoded(part: Message) -> bytes:
    """The part's bytes; base64 straight through binascii, which is what a big photo needs."""
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
    # mail-parser (about 20 ms to import) is loaded only for names that need it.  Its
    # view re-reads raw 8-bit parameters as UTF-8, which compat32 would turn into
    # replacement characters (Yahoo sends Cyrillic names that way); ASCII headers
    # read the same without it, and most phones name files so.
    view = part
    if not all(str(value).isascii() for key, value in part.raw_items()
               if key.lower() in ("content-type", "content-disposition")):
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
