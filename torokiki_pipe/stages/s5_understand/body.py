"""The grammar of the mail body people write.

People send commands from phones, so the body is forgiving prose with
``tag: 'value'`` pairs in it::

    Hi there,
    text: 'These routes are now plied by a
    petrol based bus service.'
    tags: "lambtonquay, transport bus"   # a comment
    location: “123 Lambton Quay”
    Sent from my iPhone

Everything that is not a tag line is ignored, so greetings and signatures
need no special care.  Quoted replies, attributions, signatures and
forwarded/original messages are cut away before they can produce tags or
errors.  The parser is a single forward pass (linear time) and never raises:
whatever it cannot understand becomes a :class:`BodyError` written for the
person who sent the mail, because the reply is the only help they get.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = ["Tag", "BodyError", "ParsedBody", "parse_body", "unquote", "QUOTE_PAIRS"]


@dataclass(frozen=True)
class Tag:
    """One `name: 'value'` tag of the body."""
    name: str  # lower-cased tag name
    value: str  # the value, unescaped, line breaks inside kept as "\n"
    line: int  # 1-based line of the body where the tag starts


@dataclass(frozen=True)
class BodyError:
    """A body line the grammar could not read, in plain words."""
    line: int
    message: str  # plain words: what was wrong and what was expected


@dataclass(frozen=True)
class ParsedBody:
    """Every tag of a body, every problem found while reading it, and the writer's own words."""
    tags: tuple[Tag, ...]
    errors: tuple[BodyError, ...]
    words: str = field(default="", compare=False)   # see own_words


# Opening quote -> its one closing quote.  Besides ASCII and English smart
# quotes we accept the German („“ ‚‘) and French («») styles, because phone
# keyboards silently turn a typed " or ' into them for those languages.
QUOTE_PAIRS = MappingProxyType(
    {
        "'": "'",
        '"': '"',
        "\u2018": "\u2019",  # ‘ ’
        "\u201c": "\u201d",  # “ ”
        "\u201e": "\u201c",  # „ “
        "\u201a": "\u2018",  # ‚ ‘
        "\u00ab": "\u00bb",  # « »
    }
)

# One search per closing quote finds, left to right, "\\" (a backslash),
# "\<closer>" (an escaped closer) or the closer itself; any other backslash
# is not matched and so stays in the value as it is.
_CLOSE_RE = {
    c: re.compile(r"\\\\|\\" + re.escape(c) + "|" + re.escape(c))
    for c in set(QUOTE_PAIRS.values())
}

# White space around tags: \s already covers the no-break spaces phones and
# HTML mail put there; zero-width characters and stray BOMs are invisible to
# the writer, so they count as white space too.
_SP = r"[\s\u200b\u200e\u200f\u2060\ufeff]"
# "name:" at a position; French typists put a space before the colon and
# CJK keyboards produce a full-width colon.  The name starts with a letter so
# that times such as "10:02" never look like tags.
_PAIR_RE = re.compile(rf"{_SP}*([^\W\d_][\w-]*){_SP}*[:\uff1a]{_SP}*")
_SPACES_RE = re.compile(rf"{_SP}*")
_BLANK_RE = re.compile(rf"{_SP}*\Z")
_REPLY_RE = re.compile(rf"{_SP}*>")

# Lines after which nothing belongs to the writer any more: a signature
# separator, Outlook's separators, and forwarded-message headers (the common
# translations included, since the clients localise them).
_STOP_RE = re.compile(
    r"""
    [\s\u200b\ufeff]*
    (?:
        --[ \t\u00a0]*                                  # signature separator
      | _{30,}[ \t\u00a0]*                              # Outlook: 32 underscores
      | -{2,}\s*(?:
            original\ message | forwarded\ message
          | ursprüngliche\ nachricht | weitergeleitete\ nachricht
          | message\ d['’]origine | message\ transféré
          | mensaje\ original | mensaje\ reenviado
          | messaggio\ originale | messaggio\ inoltrato
          | oorspronkelijk\ bericht | doorgestuurd\ bericht
          | mensagem\ original | mensagem\ encaminhada
          | originalmeddelande | vidarebefordrat\ meddelande
          | ursprungligt\ meddelande | oprindelig\ meddelelse
          | opprinnelig\ melding | alkuperäinen\ viesti
          | reply\ message | original\ message\ follows
        )\s*-{2,}\s*
      | (?:
            begin\ forwarded\ message | anfang\ der\ weitergeleiteten\ nachricht
          | début\ du\ message\ réexpédié | inicio\ del\ mensaje\ reenviado
          | inizio\ messaggio\ inoltrato | doorgestuurd\ bericht\ begint
        )\s*[:\uff1a]\s*
    )\Z
    """,
    re.IGNORECASE | re.VERBOSE,
)

# "On Tue, 3 Mar 2026 at 10:02, Kiri <k@x> wrote:" and its translations:
# a line ending in a colon whose text has a "wrote" verb, right before a
# ">" block.  The German/Dutch/Nordic forms put the verb before the name.
_ATTR_VERB_RE = re.compile(
    r"""\b(?:wrote|writes|schrieb|geschrieben|a\s+écrit|escribió|escribio|ha\s+scritto
         |schreef|geschreven|escreveu|skrev|kirjoitti|napisał|napisal|napsal|írta
         |написал|написала|пише|yazdı|έγραψε)\b|写道|寫道""",
    re.IGNORECASE | re.VERBOSE,
)
_ATTR_END_RE = re.compile(r"[:\uff1a]\s*\Z")
# How a client's attribution starts: its word for "On" ("Am", "Le", "El", "Op", "Den", "Em",
# "Il", ...), a date ("02.04.2012 14:20 ...", "2014-10-17 ..."), or a weekday first, as the
# Finnish, Norwegian and Russian clients write it ("ti 3. maalisk. 2026 klo 10.02 ...").
# An attribution wrapped over lines must start so: the writer's own line just above
# ("Lovely photo!") is never taken for its beginning.  Such an attribution ends the
# writer's words even when no ">" follows: the quote is then unmarked, not theirs.
_ATTR_START_RE = re.compile(
    r"""[\s\u200b\ufeff]*[-*>]*[ \t]*(?:
        (?:on|at|am|le|el|op|den|em|il|på|w\s+dniu|dnia|dňa|dne)\s
      | \d{1,4}[./-]\d{1,2}[./-]\d{1,4}\b
      | (?:ma|ti|ke|to|pe|la|su|man|tir|ons|tor|fre|lør|søn|mån|tis|lör|sön
          |пн|вт|ср|чт|пт|сб|вс)\.?,?\s+\d
    )""",
    re.IGNORECASE | re.VERBOSE,
)
# A client's attribution names the time or the sender's address; a writer's own
# "On 3 May 1952 my grandad wrote:" above the letter they copy names neither.
_TIME_OR_ADDRESS_RE = re.compile(r"\d{1,2}[:.]\d{2}(?![.\d])|@")
# Some put no verb, only the address and a colon ("2014-10-17 11:28 GMT+03:00 Bob <b@x>:",
# "вт, 5 янв. 2016 г. в 23:39, Erlend <e@x>:"): an attribution when it starts as one.
_ATTR_ADDRESS_END_RE = re.compile(r"@[^\s@<>()]+[>)]?[:\uff1a]\s*\Z")
# Outlook quotes the original under its header block ("From: …" then "Sent: …" or
# "Date: …", in the client's language) and no ">" marks: from there on nothing is the writer's.
# Between them may stand To: and Cc: (Yahoo, Zimbra); Gmail's text of an HTML quote stars them.
_HEADER_FROM_RE = re.compile(r"[\s\u200b\ufeff]*\*?(?:from|von|de|da|van|fra|från|od|от|lähettäjä)\*?[ \t]*"
                             r"[:\uff1a]\*?\s*\S", re.I)
_HEADER_NEXT_RE = re.compile(r"[\s\u200b\ufeff]*\*?(?:sent|date|gesendet|datum|envoyé|enviado(?:\s+el)?|inviato"
                             r"|verzonden|sendt|skickat|lähetetty|päivämäärä|data|fecha|wysłano|отправлено)\*?"
                             r"[ \t]*[:\uff1a]", re.I)
_HEADER_LOOKAHEAD = 4  # From:, then To:, Cc:, Subject: in any order before Sent:/Date:
# What a phone or a mail service adds below the writer's words.
_DEVICE_LINE_RE = re.compile(
    r"[\s\u200b\ufeff]*(?:sent\s+(?:from|with|via)\s+\S.*|get\s+outlook\s+for\s+\S.*"
    r"|von\s+meinem\s+\S.*\s+gesendet|gesendet\s+von\s+\S.*|envoyé\s+(?:de|depuis)\s+\S.*"
    r"|enviado\s+desde\s+mi\s+\S.*|enviado\s+do\s+meu\s+\S.*|inviato\s+da\s+\S.*"
    r"|verzonden\s+(?:vanaf|met)\s+\S.*|verstuurd\s+vanaf\s+mijn\s+\S.*|skickat\s+från\s+min\s+\S.*"
    r"|sendt\s+fra\s+min\s+\S.*|lähetetty\s+\S.*"
    r"|(?:\S+\s+){0,2}outlook\s+(?:for|für|pour|para|per|voor|för|til|na)\s+(?:ios|android)\b.*)\Z", re.I)
# Those lines are short; a longer line is never one (and the patterns stay linear).
_DEVICE_LINE_MAX = 120
# A greeting on the first line of the writer's words, alone: a greeting word, at most three
# words of a name, a comma or "!" ("Hi there,", "Kia ora Torokiki team!"); a line that goes
# on ("Hey, this is my grandad's tram.") is what they say.
_GREETING_RE = re.compile(r"[\s\u200b\ufeff]*(?:hi|hello|hey|dear|kia\s+ora|tēnā\s+koe|morena|hallo|hola|bonjour"
                          r"|ciao|hej|salut|olá|ola)(?:\s+[\w'’.-]+){0,3}\s*[,!.:]?\s*\Z", re.I)
_GREETING_MAX = 80
_ATTR_MAX_LINES = 3  # Gmail wraps long attributions; three lines is plenty

_SNIPPET_MAX = 40


def _alternative_quotes(closer: str) -> str:
    # Suggest the other family of quotes: the one the writer's text can't clash with.
    return '"…"' if closer in ("'", "\u2019", "\u2018") else "'…'"


def _snippet(text: str) -> str:
    text = text.strip()
    return text if len(text) <= _SNIPPET_MAX else text[: _SNIPPET_MAX - 1] + "…"


def _read_quoted(s: str, start: int, closer: str) -> tuple[str, int]:
    """Read a value whose opening quote is just before ``start``.

    Returns the unescaped value and the offset of its closing quote, or
    ("", -1) when the value never ends.  One forward scan, so linear.
    """
    parts = []
    pos = start
    for m in _CLOSE_RE[closer].finditer(s, start):
        parts.append(s[pos : m.start()])
        token = m.group()
        if token == closer:
            return "".join(parts), m.start()
        parts.append(token[1:])  # "\\" -> "\", "\<closer>" -> closer
        pos = m.end()
    return "", -1


def unquote(text: str) -> str:
    """Return the inner value if ``text`` is exactly one quoted value.

    Used for subject lines like ``get: 'http://…'``.  Anything else comes
    back stripped but otherwise unchanged.
    """
    if not isinstance(text, str):
        return ""
    stripped = text.strip()
    if len(stripped) >= 2 and stripped[0] in QUOTE_PAIRS:
        value, end = _read_quoted(stripped, 1, QUOTE_PAIRS[stripped[0]])
        if end == len(stripped) - 1:
            return value
    return stripped


class _Parser:
    """One pass over the lines; values may span lines, so it works on
    offsets into the whole text and maps them back to line numbers."""

    def __init__(self, text: str, known: frozenset[str]) -> None:
        self.s = text
        self.lines = text.split("\n")
        self.starts = []
        offset = 0
        for line in self.lines:
            self.starts.append(offset)
            offset += len(line) + 1
        self.known = known
        self.tags: list[Tag] = []
        self.prose: list[int] = []          # 0-based indexes of the writer's own lines of words
        self.first_line: dict[str, int] = {}
        self.errors: list[BodyError] = []

    # -- helpers -----------------------------------------------------------

    def _line_of(self, offset: int) -> int:
        """0-based index of the line holding ``offset``."""
        return bisect.bisect_right(self.starts, offset) - 1

    def _end_of(self, index: int) -> int:
        return self.starts[index] + len(self.lines[index])

    def _error(self, line: int, message: str) -> None:
        self.errors.append(BodyError(line, message))

    def _pair_at(self, pos: int, end: int):
        """``(name, value_offset, opener)`` if a tag starts at ``pos``.

        A word and a colon make a tag when the word is a known tag or the
        colon is followed by a quoted value; otherwise it's prose such as
        "Note: see below" and None is returned.
        """
        m = _PAIR_RE.match(self.s, pos, end)
        if m is None:
            return None
        name = m.group(1).lower()
        vpos = m.end()
        opener = self.s[vpos] if vpos < end and self.s[vpos] in QUOTE_PAIRS else None
        if opener is None and name not in self.known:
            return None
        return name, vpos, opener

    def _add(self, tag: Tag) -> None:
        first = self.first_line.get(tag.name)
        if first is not None:
            # Keep the first: which one was meant is a guess either way,
            # and the error makes the writer choose.
            self._error(
                tag.line,
                f"'{tag.name}' is given twice (first on line {first}); "
                f"keep only one of them",
            )
            return
        self.first_line[tag.name] = tag.line
        self.tags.append(tag)

    def _unknown(self, name: str, line: int) -> None:
        names = ", ".join(sorted(self.known))
        hint = f"the tags are: {names}" if names else "no tags are expected here"
        self._error(line, f"unknown tag '{_snippet(name)}'; {hint}")

    def _reply_follows(self, index: int) -> bool:
        """Does a ">" block start at ``index`` (after blank lines)?"""
        index = self._next_nonblank(index)
        return index < len(self.lines) and _REPLY_RE.match(self.lines[index]) is not None

    def _attribution(self, index: int) -> tuple[int, bool]:
        """``(lines, quoted)`` of an "On … wrote:" attribution starting at ``index``, (0, False) if none.

        Any line ending in a colon with a "wrote" verb is one right before a ">" block
        (``quoted``).  In a client's own shape (:data:`_ATTR_START_RE`, a time or an address in it)
        it is one without such a block too: the quote that follows is unmarked, and the
        caller stops there.  Over several lines it must have that shape (or start with the
        sender's address), so the writer's line above it is never taken for its start; and
        it never swallows a line that holds a known tag."""
        lines = self.lines
        for k in range(_ATTR_MAX_LINES):
            j = index + k
            if j >= len(lines):
                return 0, False
            line = lines[j]
            if _BLANK_RE.match(line) or _REPLY_RE.match(line) or _STOP_RE.match(line):
                return 0, False
            if not _ATTR_END_RE.search(line):
                continue
            text = " ".join(lines[index : j + 1])
            shaped = _ATTR_START_RE.match(lines[index]) is not None and _TIME_OR_ADDRESS_RE.search(text) is not None
            if not (_ATTR_VERB_RE.search(text) or (shaped and _ATTR_ADDRESS_END_RE.search(line))):
                continue
            quoted = self._reply_follows(j + 1)
            if not (shaped or (quoted and (k == 0 or "@" in lines[index]))):
                continue
            for t in range(index + 1, j + 1):
                pair = self._pair_at(self.starts[t], self._end_of(t))
                if pair is not None and pair[0] in self.known:
                    return 0, False
            return k + 1, quoted
        return 0, False

    def _header_block(self, index: int) -> bool:
        """Does Outlook's quoted header block ("From: …", then "Sent:" or "Date:") start here?"""
        if not _HEADER_FROM_RE.match(self.lines[index]):
            return False
        following = self.lines[index + 1:index + 1 + _HEADER_LOOKAHEAD]
        return any(_HEADER_NEXT_RE.match(line) for line in following)

    def _next_nonblank(self, index: int) -> int:
        lines = self.lines
        while index < len(lines) and _BLANK_RE.match(lines[index]):
            index += 1
        return index

    # -- the grammar -------------------------------------------------------

    def run(self) -> None:
        lines = self.lines
        i = 0
        while i < len(lines):
            line = lines[i]
            # Separators, quotes and attributions are only recognised here,
            # between values: inside an open value they are part of it.
            if _STOP_RE.match(line) or self._header_block(i):
                return
            if _REPLY_RE.match(line):
                i += 1
                continue
            pair = self._pair_at(self.starts[i], self._end_of(i))
            if pair is None or pair[0] not in self.known:
                skip, quoted = self._attribution(i)
                if skip and not quoted:
                    return              # an unmarked quote follows: nothing more is the writer's
                if skip:
                    i += skip
                    continue
            if pair is None:
                self.prose.append(i)   # prose: the writer's words, greetings, "Sent from my iPhone", …
                i += 1
                continue
            i = self._pairs(self.starts[i], i)

    def _pairs(self, pos: int, i: int) -> int:
        """Parse the tag(s) starting at ``pos`` on line index ``i``.

        Returns the index of the next line to look at.
        """
        s = self.s
        while True:
            end = self._end_of(i)
            pair = self._pair_at(pos, end)
            if pair is None:  # callers check first; be safe anyway
                return i + 1
            name, vpos, opener = pair
            tag_line = i + 1
            known = name in self.known

            if opener is None:
                # A known tag with an unquoted value: the rest of the line.
                rest = s[vpos:end]
                value = rest.split("#", 1)[0].strip()
                if value:
                    self._add(Tag(name, value, tag_line))
                    return i + 1
                # "text:" alone: the quoted value may start on the next line.
                j = self._next_nonblank(i + 1)
                if j < len(self.lines):
                    k = _SPACES_RE.match(s, self.starts[j], self._end_of(j)).end()
                    if k < self._end_of(j) and s[k] in QUOTE_PAIRS:
                        vpos, opener, i = k, s[k], j
                if opener is None:
                    hint = ""
                    if rest.strip().startswith("#"):
                        hint = (
                            f" (a # starts a comment; for a value with # in it use quotes, "
                            f"e.g. {name}: '#bus')"
                        )
                    self._error(
                        tag_line,
                        f"'{name}:' is a tag without a value; write the value "
                        f"after the colon, e.g. {name}: 'your words'{hint}",
                    )
                    return i + 1

            closer = QUOTE_PAIRS[opener]
            value_line = i + 1
            value, close = _read_quoted(s, vpos + 1, closer)
            if not known:
                self._unknown(name, tag_line)
            if close < 0:
                # The rest of the mail is inside the open value: nothing
                # after it can be read as tags.
                self._error(
                    value_line,
                    f"the value of '{_snippet(name)}' starts with {opener} but never "
                    f"ends; close it with {closer} (write \\{closer} for a {closer} inside it)",
                )
                return len(self.lines)

            i = self._line_of(close)
            end = self._end_of(i)
            tag = Tag(name, value, tag_line) if known else None
            after = _SPACES_RE.match(s, close + 1, end).end()
            if after >= end or s[after] == "#":
                if tag:
                    self._add(tag)
                return i + 1
            if self._pair_at(after, end) is not None:
                if tag:
                    self._add(tag)
                pos = after
                continue

            # Left-over text after the closing quote.  The value is most
            # likely cut short (an apostrophe taken for the closing quote),
            # so it is not kept.  After an unknown tag one error is enough.
            if not known:
                return i + 1
            line_no = i + 1
            left = _snippet(s[after:end])
            if after == close + 1:
                fix = (
                    f"the value of '{name}' ends at the {closer} just before "
                    f"\"{left}\", so \"{left}\" is left over. If that {closer} belongs to the value, "
                    f"write \\{closer} instead, or put the whole value in "
                    f"{_alternative_quotes(closer)} quotes"
                )
            else:
                fix = (
                    f"there is \"{left}\" after the value of '{name}'; only a "
                    f"comment (starting with #) or another tag may follow a value on the same "
                    f"line. Put that text inside the quotes, or write \\{closer} for a {closer} "
                    f"that belongs to the value"
                )
            self._error(line_no, fix)
            return i + 1


def parse_body(text: str, known_tags: frozenset[str]) -> ParsedBody:
    """Find the ``tag: 'value'`` pairs in a mail body.

    ``known_tags`` are the tag names the command understands (any case).
    Never raises; problems come back as :class:`BodyError`\\ s, ordered by line.
    """
    known = frozenset(str(name).lower() for name in (known_tags or ()))
    parser = _Parser(_normalised(text), known)
    parser.run()
    errors = sorted(parser.errors, key=lambda e: e.line)  # stable: same-line order kept
    return ParsedBody(tuple(parser.tags), tuple(errors), _words(parser))


def _normalised(text: str) -> str:
    # Mail arrives with any line ending; line numbers count lines as the
    # writer sees them, which all three conventions agree on.
    return text.replace("\r\n", "\n").replace("\r", "\n").lstrip("\ufeff") if isinstance(text, str) else ""


def own_words(text: str, known_tags: frozenset[str]) -> str:
    """The writer's own words in a mail body: what is neither a tag nor quoted.

    Left out: ``tag: 'value'`` lines, ">" quotes and their "On … wrote:"
    attribution, everything from a signature separator, Outlook's separators,
    its quoted header block or an attribution above an unmarked quote on, the lines a phone adds ("Sent from my iPhone",
    "Get Outlook for iOS") and a greeting on the first line.  Paragraphs stay.
    (`parse_body` gives them too, as ``.words``, from the same one pass.)
    """
    return parse_body(text, known_tags).words


def _words(parser: _Parser) -> str:
    kept: list[str] = []
    previous = None
    for index in parser.prose:
        line = parser.lines[index].rstrip()
        if _BLANK_RE.match(line) or (len(line) <= _DEVICE_LINE_MAX and _DEVICE_LINE_RE.match(line)):
            continue
        if not kept and _greeting(line):
            continue
        if kept and previous is not None and index > previous + 1:
            kept.append("")          # a blank line or a left-out line between: a new paragraph
        kept.append(line)
        previous = index
    return "\n".join(kept).strip()


def _greeting(line: str) -> bool:
    # A greeting is a few words; bounding the line keeps the pattern linear.
    return len(line) <= _GREETING_MAX and _GREETING_RE.match(line) is not None


def first_line(text: str) -> tuple[str, str] | None:
    """The first line of the writer's own words (after a greeting) and the text without it, or None.

    Where a mail's subject names no command, this line may (`help`, `get: URL`, …).
    """
    lines = _normalised(text).split("\n")
    greeted = False
    for index, line in enumerate(lines):
        if _BLANK_RE.match(line):
            continue
        if _STOP_RE.match(line) or _REPLY_RE.match(line):
            return None
        if not greeted and _greeting(line):
            greeted = True
            continue
        return line.strip(), "\n".join(lines[:index] + lines[index + 1:])
    return None
