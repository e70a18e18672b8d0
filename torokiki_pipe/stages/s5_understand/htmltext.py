"""HTML-only mail to the plain text body.py understands.

Some clients send only HTML.  We render it roughly the way a browser shows
it: block elements on their own lines, white space collapsed (except in
``<pre>``), entities decoded, scripts/styles/head dropped.  The quoted
original of a reply is never the writer's, in the shapes the clients mark it:

- ``<blockquote>`` (Apple Mail and iPhone's ``type="cite"``, Thunderbird's)
  gets "> " in front of every line, so body.py ignores it like a plain-text
  quote, "On … wrote:" and any tag line in it included;
- Gmail's ``gmail_quote`` (with its ``gmail_attr``), Yahoo's ``yahoo_quoted``
  and Thunderbird's ``moz-cite-prefix`` are dropped with all they hold;
- from Outlook's ``divRplyFwdMsg``, ``appendonsend`` (or Outlook for Mac's and
  Zimbra's markers) on, nothing more is read;
- a marked signature (``gmail_signature``, ``moz-signature``, Outlook's) gets a
  "-- " line before it, so body.py ignores it like a plain-text signature.

Mail is untrusted input, so this must be linear and must never raise.
``html.parser.HTMLParser`` of the Pythons we support is neither: malformed
input such as ``<a b=`` repeated makes it quadratic, and ``<![`` can make it
raise AssertionError.  So a small linear tokenizer (:func:`_canonical`) first
rewrites the input into markup HTMLParser can only parse trivially: comments
and declarations removed, script/style content removed, every tag rebuilt
with just the attributes we look at, and every other ``<`` escaped.
HTMLParser then decodes entities and drives the converter.  The converter
keeps its own element stack (no recursion), so deep nesting is harmless.
"""

from __future__ import annotations

import re
import string
from html.parser import HTMLParser

__all__ = ["html_to_text"]

# --- the tokenizer that makes the input safe --------------------------------

_ASCII_LETTERS = frozenset(string.ascii_letters)
# A "<" that can start markup; any other "<" is just text.
_MARKUP_RE = re.compile(r"<(?=[A-Za-z!/?])")
# HTML's own white space; Python's \s would also eat no-break spaces.
_TAG_NAME_RE = re.compile(r"[^\t\n\f\r />]*")
_ATTR_SEP_RE = re.compile(r"[\t\n\f\r /]*")
_ATTR_NAME_RE = re.compile(r"[^\t\n\f\r />][^\t\n\f\r />=]*")
_HTML_WS_RE = re.compile(r"[\t\n\f\r ]*")
_BARE_VALUE_RE = re.compile(r"[^\t\n\f\r >]*")
_UNSAFE_NAME_RE = re.compile(r"[^a-z0-9:_.-]")
_KEPT_ATTRS = ("class", "id", "type")
# Raw-text elements: their content is never shown, and it may hold "<" that
# is not markup, so it's skipped up to the closing tag without tokenizing.
_RAW_DROPPED = frozenset({"script", "style", "title", "iframe", "noembed", "noframes"})
_raw_close_cache: dict[str, re.Pattern] = {}


def _raw_close(name: str) -> re.Pattern:
    pattern = _raw_close_cache.get(name)
    if pattern is None:
        pattern = re.compile(r"</" + re.escape(name) + r"(?=[\t\n\f\r />]|\Z)", re.IGNORECASE)
        _raw_close_cache[name] = pattern
    return pattern


def _scan_tag(s: str, pos: int):
    """Scan a tag whose name starts at ``pos`` the way HTML5 does.

    Returns ``(name, attrs, end)`` or None when the input ends inside the
    tag (HTML5 then drops the tag).  Every loop step consumes input, so the
    cost is linear in the length of the tag.
    """
    n = len(s)
    m = _TAG_NAME_RE.match(s, pos)
    # The first character is an ASCII letter, so the name is never empty.
    name = _UNSAFE_NAME_RE.sub("", m.group().lower())
    pos = m.end()
    attrs: dict[str, str] = {}
    while True:
        pos = _ATTR_SEP_RE.match(s, pos).end()
        if pos >= n:
            return None
        if s[pos] == ">":
            return name, attrs, pos + 1
        m = _ATTR_NAME_RE.match(s, pos)
        attr = m.group().lower()
        pos = m.end()
        value = ""
        q = _HTML_WS_RE.match(s, pos).end()
        if q < n and s[q] == "=":
            q = _HTML_WS_RE.match(s, q + 1).end()
            if q < n and s[q] in "\"'":
                close = s.find(s[q], q + 1)
                if close < 0:
                    return None
                value = s[q + 1 : close]
                pos = close + 1
            else:
                m = _BARE_VALUE_RE.match(s, q)
                value = m.group()
                pos = m.end()
        attrs.setdefault(attr, value)


def _skip_bogus(s: str, pos: int) -> int:
    # <!DOCTYPE>, <![CDATA[…]>, <![if …]>, <?xml …?>, </3>: up to the next ">".
    end = s.find(">", pos)
    return len(s) if end < 0 else end + 1


def _attr_text(value: str) -> str:
    return value.replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")


def _canonical(s: str) -> str:
    out = []
    n = len(s)
    i = 0
    while i < n:
        m = _MARKUP_RE.search(s, i)
        j = m.start() if m else n
        if j > i:
            out.append(s[i:j].replace("<", "&lt;"))
        if m is None:
            break
        c = s[j + 1]
        if c == "!":
            if s.startswith("<!--", j):
                if s.startswith(">", j + 4):  # <!--> is an empty comment
                    i = j + 5
                elif s.startswith("->", j + 4):  # so is <!--->
                    i = j + 6
                else:
                    end = s.find("-->", j + 4)
                    i = n if end < 0 else end + 3  # unclosed: comment to the end
            else:
                i = _skip_bogus(s, j + 2)
        elif c == "?":
            i = _skip_bogus(s, j + 2)
        elif c == "/":
            if j + 2 < n and s[j + 2] in _ASCII_LETTERS:
                tag = _scan_tag(s, j + 2)
                if tag is None:
                    break
                out.append(f"</{tag[0]}>")
                i = tag[2]
            elif s.startswith(">", j + 2):  # "</>" is ignored
                i = j + 3
            elif j + 2 >= n:
                out.append("&lt;/")
                break
            else:
                i = _skip_bogus(s, j + 2)
        else:
            tag = _scan_tag(s, j + 1)
            if tag is None:
                break
            name, attrs, end = tag
            if name in _RAW_DROPPED:
                close = _raw_close(name).search(s, end)
                if close is None:
                    break  # everything after is inside it
                i = _skip_bogus(s, close.end())
                continue
            kept = "".join(
                f' {a}="{_attr_text(attrs[a])}"' for a in _KEPT_ATTRS if a in attrs
            )
            out.append(f"<{name}{kept}>")
            i = end
    return "".join(out)


# --- the converter ---------------------------------------------------------

_VOID = frozenset(
    "area base br col embed hr img input keygen link meta param source track wbr".split()
)
# Elements on lines of their own.
_BLOCK = frozenset(
    """address article aside blockquote body caption center dd details dialog dir div dl
    dt fieldset figcaption figure footer form header hgroup html legend li main menu nav
    ol option section summary table tbody tfoot thead tr ul""".split()
)
# Blocks a browser shows with a blank line around them.
_PARAGRAPH = frozenset("p h1 h2 h3 h4 h5 h6 pre".split())
_CELL = frozenset({"td", "th"})
_PRE = frozenset({"pre", "listing", "textarea"})
_DROPPED = frozenset({"head", "template", "script", "style", "title"})
_HEAD_CONTENT = frozenset(
    {"base", "link", "meta", "noscript", "script", "style", "template", "title"}
)
# Word/Outlook paragraphs have zero margins: one line each, no blank lines,
# or a value typed over two lines would gain an empty line in between.
_ZERO_MARGIN_CLASSES = frozenset({"msonormal", "msoplaintext"})
# Quoted history we drop together with its attribution line:
# Gmail, Yahoo, Thunderbird's attribution and inline forward.
_DROPPED_CLASSES = frozenset(
    {"gmail_quote", "gmail_quote_container", "yahoo_quoted", "moz-cite-prefix",
     "moz-forward-container"}
)
# Yahoo prefixes its class when a quote is quoted again ("ydp3f0cyahoo_quoted").
_DROPPED_CLASS_SUFFIX = "yahoo_quoted"
# Everything after these markers is the quoted history: Outlook (web and Windows,
# Mac: OLK_SRC_BODY_SECTION) and Zimbra's rule above the quote.
_STOP_IDS = frozenset({"appendonsend", "divrplyfwdmsg", "mail-editor-reference-message-container",
                       "olk_src_body_section", "zwchr"})
# Signatures the clients mark: Gmail, Thunderbird, Outlook on the web and on phones.  A "-- "
# line before them makes body.py ignore them like a plain-text signature.
_SIGNATURE_CLASSES = frozenset({"gmail_signature", "moz-signature"})
_SIGNATURE_IDS = frozenset({"signature", "ms-outlook-mobile-signature"})

_DROP, _QUOTE, _PREFORMATTED, _HEAD = 1, 2, 4, 8
_KIND_BLOCK, _KIND_PARAGRAPH = 1, 2

_COLLAPSE_RE = re.compile(r"[ \t\n\r\f]+")  # what a browser collapses (not nbsp)
_MAX_QUOTE_PREFIX = 10  # body.py needs only the first ">"; caps output on absurd nesting


class _Converter(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, int, int]] = []  # (tag, flags, kind)
        self.open_count: dict[str, int] = {}  # so an unmatched end tag costs O(1)
        self.drop = 0
        self.quote = 0
        self.pre = 0
        self.head = 0
        self.stopped = False
        self.lines: list[tuple[int, str]] = []  # (quote depth, text)
        self.cur: list[str] = []
        self.cur_depth = 0
        self.pending_space = False
        self.pre_newline = False  # a newline right after <pre> is not shown

    # -- output ------------------------------------------------------------

    def _append(self, text: str) -> None:
        if not self.cur:
            self.cur_depth = self.quote
        elif self.pending_space:
            self.cur.append(" ")
        self.cur.append(text)
        self.pending_space = False

    def _end_line(self) -> None:
        depth = self.cur_depth if self.cur else self.quote
        self.lines.append((depth, "".join(self.cur)))
        self.cur = []
        self.pending_space = False

    def _block(self) -> None:
        if self.cur:
            self._end_line()
        self.pending_space = False

    def _paragraph(self) -> None:
        self._block()
        if self.lines and self.lines[-1][1]:
            self.lines.append((self.quote, ""))

    def _visible(self) -> bool:
        return not self.stopped and not self.drop

    # -- element stack -----------------------------------------------------

    def _push(self, tag: str, flags: int, kind: int) -> None:
        self.stack.append((tag, flags, kind))
        self.open_count[tag] = self.open_count.get(tag, 0) + 1
        self.drop += bool(flags & _DROP)
        self.quote += bool(flags & _QUOTE)
        self.pre += bool(flags & _PREFORMATTED)
        self.head += bool(flags & _HEAD)

    def _close(self, tag: str) -> None:
        """Close ``tag`` and everything opened inside it (if it is open)."""
        if not self.open_count.get(tag):
            return
        while self.stack:
            name, flags, kind = self.stack.pop()
            self.open_count[name] -= 1
            self.drop -= bool(flags & _DROP)
            self.quote -= bool(flags & _QUOTE)
            self.pre -= bool(flags & _PREFORMATTED)
            self.head -= bool(flags & _HEAD)
            if self._visible():
                if kind == _KIND_PARAGRAPH:
                    self._paragraph()
                elif kind == _KIND_BLOCK:
                    self._block()
            if name == tag:
                return

    # -- HTMLParser callbacks ----------------------------------------------

    def handle_starttag(self, tag, attrs):
        self.pre_newline = False
        if self.stopped:
            return
        values = {name: value or "" for name, value in attrs}
        classes = frozenset(values.get("class", "").lower().split())
        ident = values.get("id", "").strip().lower()
        if self.head and tag not in _HEAD_CONTENT:
            self._close("head")  # body content implies </head>, as in HTML5
        if ident in _STOP_IDS and self._visible() and not self.quote:
            self._block()
            self.stopped = True
            return
        if tag in _VOID:
            if self._visible():
                if tag == "br":
                    self._end_line()
                elif tag == "hr":
                    self._block()
            return

        flags = 0
        if tag in _DROPPED or (tag != "blockquote" and (
                classes & _DROPPED_CLASSES or any(c.endswith(_DROPPED_CLASS_SUFFIX) for c in classes))):
            flags |= _DROP
        if tag == "head":
            flags |= _HEAD
        if tag == "blockquote":
            flags |= _QUOTE
        if tag in _PRE:
            flags |= _PREFORMATTED
        kind = 0
        if tag in _PARAGRAPH and not (classes & _ZERO_MARGIN_CLASSES):
            kind = _KIND_PARAGRAPH
        elif tag in _BLOCK or tag in _PARAGRAPH:
            kind = _KIND_BLOCK

        if self._visible() and not flags & _DROP:
            if (classes & _SIGNATURE_CLASSES or ident in _SIGNATURE_IDS) and not self.quote:
                self._block()
                self.lines.append((0, "-- "))
            if kind == _KIND_PARAGRAPH:
                self._paragraph()
            elif kind == _KIND_BLOCK:
                self._block()
            elif tag in _CELL and self.cur:
                self.pending_space = True
        self._push(tag, flags, kind)
        self.pre_newline = tag in _PRE

    def handle_endtag(self, tag):
        self.pre_newline = False
        if self.stopped:
            return
        if tag == "br":  # browsers read </br> as <br>
            if self._visible():
                self._end_line()
            return
        if tag == "p" and not self.open_count.get("p"):
            if self._visible():  # a stray </p> is an empty paragraph
                self._paragraph()
            return
        self._close(tag)

    def handle_startendtag(self, tag, attrs):
        # The canonical markup has no "/>", but be complete.
        self.handle_starttag(tag, attrs)
        if tag not in _VOID:
            self.handle_endtag(tag)

    def handle_data(self, data):
        if self.stopped:
            return
        if self.head and data.strip(" \t\n\r\f"):
            self._close("head")  # text implies </head>, as in HTML5
        if self.drop:
            return
        if self.pre:
            data = data.replace("\r\n", "\n").replace("\r", "\n")
            if self.pre_newline and data.startswith("\n"):
                data = data[1:]
            self.pre_newline = False
            for k, part in enumerate(data.split("\n")):
                if k:
                    self._end_line()
                if part:
                    self._append(part)
            return
        data = _COLLAPSE_RE.sub(" ", data)
        if not data:
            return
        if data[0] == " ":
            self.pending_space = True
        text = data.strip(" ")
        if text:
            self._append(text)
            self.pending_space = data[-1] == " "

    # -- result ------------------------------------------------------------

    def text(self) -> str:
        if self.cur:
            self._end_line()
        out: list[str] = []
        for depth, text in self.lines:
            line = ("> " * min(depth, _MAX_QUOTE_PREFIX) + text).replace("\xa0", " ").rstrip()
            # Collapse runs of blank lines (and of empty quote lines) to one.
            if out and line == out[-1] and not line.strip("> "):
                continue
            out.append(line)
        while out and not out[-1]:
            out.pop()
        while out and not out[0]:
            out.pop(0)
        return "\n".join(out)


def html_to_text(html: str) -> str:
    """Plain text of an HTML mail body, quoted replies prefixed with "> "."""
    if not isinstance(html, str):
        return ""
    converter = _Converter()
    try:
        converter.feed(_canonical(html))
        converter.close()
    except Exception:  # pragma: no cover - the canonical markup should never fail;
        pass  # if it does, the text so far is still the best answer we have.
    return converter.text()
