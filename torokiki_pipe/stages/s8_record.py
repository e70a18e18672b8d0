"""Stage 8, record: the layout of ``logs/``, its one line per message, and the one sanitiser.

    logs/torokiki-pipe.log     one line per message (and tracebacks of crashes)
    logs/erroneous_emails/     mails refused or not understood, raw
    logs/failed_https/         raw mail + the HTTP exchange that failed (key redacted)
    logs/failed_sends/         replies sendmail would not take, ready to send
    logs/ignored/              mails rightly left unanswered (bounces, auto-replies, lists, loops)
    logs/held/                 mails held for a person to look at: forged (DMARC fail), or a response
                               whose sender was not verified (TOROKIKI_REQUIRE_AUTH); replay --force
    logs/crashed/              mails the gateway itself failed on, for replay
    logs/journal/              how far each message got (exactly once; adapters/journal.py)
    logs/replies/              reply counters per sender (adapters/reply_budget.py)

A log line is a UTC time stamp, then ``key=value`` fields in the order of
`LOG_FIELDS`; a value with a space, ``"`` or ``=`` is in double quotes (a
``"`` in it became ``'``), an empty one is ``-``.  `log_line` writes it,
`parse_line` reads it back (for ``report`` and ``replay``).

`one_line` is the one sanitiser for any text a mail, a website or an error
puts on one line (a header, a log field, a status line, a reply's subject):
printable characters only, white space runs made one space, cut to a length.
Pure: the writing is `adapters.records.Records`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Mapping

LOG_FILE = "torokiki-pipe.log"
ERRONEOUS = "erroneous_emails"
FAILED_HTTPS = "failed_https"
FAILED_SENDS = "failed_sends"
IGNORED = "ignored"
CRASHED = "crashed"
HELD = "held"
STASH_KINDS = (ERRONEOUS, FAILED_HTTPS, FAILED_SENDS, IGNORED, CRASHED, HELD)
JOURNAL = "journal"
REPLY_COUNTERS = "replies"
TEMPORARY_PREFIX = ".tmp-"

# target: the content the mail answered or fetched, whatever came of it; saved: the new
# response's URL, only when the website saved one.  Lines written before these two had one
# `url` field instead (the new response's URL on success, else the target); they still parse.
# auth: the verdict on the From (stages/s3_auth: authenticated, forged, unknown), "-" when not checked.
LOG_FIELDS = ("message-id", "sender", "auth", "command", "target", "saved", "outcome", "exit", "duration", "detail")
STAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
FIELD_CHARS = 500   # a log field's value at most


class _Printable(dict):
    """str.translate table: every character that is not printable becomes a space.

    Filled as characters are met, so a long value costs one C-speed pass,
    not a Python call per character.
    """

    def __missing__(self, code: int) -> int:
        self[code] = code if chr(code).isprintable() else 32
        return self[code]


_PRINTABLE = _Printable()


def one_line(text: object, limit: int | None = None) -> str:
    """`text` as one line of printable characters and single spaces, at most `limit` of them."""
    value = str(text)
    if not value.isprintable():
        value = value.translate(_PRINTABLE)
    value = " ".join(value.split())
    return value if limit is None else value[:limit]


def field_value(value: object) -> str:
    """One ``key=value`` field's value, as the log writes it."""
    text = one_line(value, FIELD_CHARS) or "-"
    return text if not any(c in text for c in ' "=') else '"' + text.replace('"', "'") + '"'


def as_logged(value: object) -> str:
    """What `parse_line` gives back for a field written from `value`."""
    return one_line(value, FIELD_CHARS).replace('"', "'") or "-"


def log_line(stamp: str, fields: Mapping[str, object]) -> str:
    """The line for one message: `stamp` (`STAMP_FORMAT`, UTC), then `fields` in `LOG_FIELDS` order."""
    return stamp + " " + " ".join(f"{key}={field_value(fields.get(key, ''))}" for key in LOG_FIELDS)


def parse_line(text: str) -> tuple[str, dict[str, str]] | None:
    """(stamp, fields) of a line `log_line` wrote, or None for any other line (a traceback, a warning)."""
    import re

    match = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ) (.*)$", text.rstrip("\r\n"))
    if not match:
        return None
    fields: dict[str, str] = {}
    for key, value in re.findall(r'([a-z][a-z-]*)=("[^"]*"|\S*)', match[2]):
        if len(value) >= 2 and value.startswith('"') and value.endswith('"'):
            value = value[1:-1]
        fields.setdefault(key, value)
    return (match[1], fields) if "outcome" in fields else None
