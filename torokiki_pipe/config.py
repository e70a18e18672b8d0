"""The one place that reads configuration.

One env file (``--config FILE``, else ``$TOROKIKI_PIPE_CONFIG``, else
``./.env`` when present), read with python-dotenv; real environment variables
win over the file.  Every problem becomes a `ConfigError` whose message is one
clear line for the administrator; the caller defers the mail (exit 75) rather
than bounce it.  Nothing else is raised, whatever the file or the environment
holds.

Contract for values (README, Configuration):
- Surrounding white space is ignored; an empty value means the default.
- No value may hold a control or invisible character (line break, tab, NUL,
  zero-width or non-breaking space) nor be longer than `MAX_VALUE_CHARS`.
- Numbers are plain ASCII decimals: no sign, exponent, ``_``, ``0x``, ``nan``
  or ``inf``; each key has a lowest and a highest sane value (`RANGES`).
- A line python-dotenv cannot parse is an error naming its line number, never
  its text (it may hold the key).
- The API key is printable ASCII without spaces (it goes into an HTTP header)
  and is never part of a message.
- Unknown ``TOROKIKI_*`` keys are not an error (a typo in an optional key must
  not defer all mail); they are listed in `Config.unknown_keys` for `check`.
"""

from __future__ import annotations

import os
import re
import shlex
import stat
from pathlib import Path
from typing import Mapping, NamedTuple
from urllib.parse import urlsplit

DEFAULT_SITE_URL = "http://torokiki.net"
DEFAULT_SENDMAIL = "/usr/sbin/sendmail -i"
DEFAULT_LOG_DIR = "./logs"
DEFAULT_SYSLOG_SOCKET = "/dev/log"   # where glibc's syslog(3) writes too
DEFAULT_HTTP_TIMEOUT = 30.0          # far below Postfix's command_time_limit (1000 s)
DEFAULT_MAX_MESSAGE_BYTES = 25 * 1024 * 1024
# A hung website must never make Postfix kill the pipe (a killed pipe is
# bounced, not retried), so the timeout is capped whatever the file says.
MAX_HTTP_TIMEOUT = 120.0

DEFAULT_GIVE_UP_AFTER = "2d"       # well inside Postfix's 5-day maximal_queue_lifetime
DEFAULT_JOURNAL_EXPIRE = "10d"     # longer than any MTA keeps retrying one message
DEFAULT_REPLY_LIMIT = "20/hour"

MINUTE, HOUR, DAY = 60, 3600, 86400

# The settings the gateway reads; `check` warns about any other TOROKIKI_* key.
SETTING_NAMES = (
    "TOROKIKI_SITE_URL", "TOROKIKI_API_URL", "TOROKIKI_API_KEY",
    "TOROKIKI_GATEWAY_ADDRESS", "TOROKIKI_SENDMAIL", "TOROKIKI_LOG_DIR",
    "TOROKIKI_HTTP_TIMEOUT", "TOROKIKI_MAX_MESSAGE_BYTES", "TOROKIKI_API_CALLER_ID",
    "TOROKIKI_GIVE_UP_AFTER", "TOROKIKI_JOURNAL_EXPIRE", "TOROKIKI_REPLY_LIMIT",
    "TOROKIKI_NULL_SENDER", "TOROKIKI_SYSLOG", "TOROKIKI_SMTPUTF8", "TOROKIKI_REPLY_SUBADDRESS",
    "TOROKIKI_SYSLOG_SOCKET", "TOROKIKI_AUTHSERV_ID", "TOROKIKI_REQUIRE_AUTH",
)
# Not settings, yet not typos: where the config file is, and the variables of
# the reference website (devtools) and of contrib/imapfilter, which run the
# pipe with their own settings in the same environment.
OTHER_KEYS = ("TOROKIKI_PIPE_CONFIG",)
OTHER_PREFIXES = ("TOROKIKI_IMAP_", "TOROKIKI_REFERENCE_")

# Lowest and highest sane value of each number; seconds unless said otherwise.
RANGES = {
    # Less than a second is no timeout a website can meet.
    "TOROKIKI_HTTP_TIMEOUT": (1.0, MAX_HTTP_TIMEOUT),
    # 1 s is what the tests use to reach "gave up" quickly: the first failure
    # still defers, the next delivery answers.  Postfix caps its own queue
    # lifetime at 100 days; beyond it the MTA, not the gateway, gives up.
    "TOROKIKI_GIVE_UP_AFTER": (1.0, 100.0 * DAY),
    # The journal is what makes a redelivery a duplicate: under an hour it
    # would forget messages an MTA may still deliver again.
    "TOROKIKI_JOURNAL_EXPIRE": (1.0 * HOUR, 366.0 * DAY),
    # Bytes.  Under 1 KiB no real mail fits; over 1 GiB one mail could take
    # the machine's memory (the whole mail is read into it).
    "TOROKIKI_MAX_MESSAGE_BYTES": (1024, 1024 ** 3),
}
REPLY_WINDOW_RANGE = (1.0 * MINUTE, 30.0 * DAY)
MAX_REPLIES_PER_WINDOW = 1000      # each counter file keeps one time per reply
MAX_VALUE_CHARS = 4096             # PATH_MAX; more is a pasted file, not a setting
MAX_CONFIG_FILE_BYTES = 1024 * 1024

_SECRET_KEYS = ("TOROKIKI_API_KEY",)


class ReplyLimit(NamedTuple):
    """TOROKIKI_REPLY_LIMIT, read; adapters.reply_budget.ReplyBudget enforces it."""
    replies: int        # replies allowed per window; 0 means no limit
    window: float     # seconds


_DECIMAL = r"[0-9]{1,15}(?:\.[0-9]{1,9})?"   # bounded: 400 nines would make float() inf
_DURATION = re.compile(rf"({_DECIMAL})? *([a-z]*)", re.ASCII)
_LIMIT = re.compile(r"([0-9]{1,12}) */ *(.+)", re.ASCII)
_UNITS = {"": 1, "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
          "m": MINUTE, "min": MINUTE, "mins": MINUTE, "minute": MINUTE, "minutes": MINUTE,
          "h": HOUR, "hour": HOUR, "hours": HOUR, "d": DAY, "day": DAY, "days": DAY,
          "w": 7 * DAY, "week": 7 * DAY, "weeks": 7 * DAY}
_NO_LIMIT = ("off", "0", "none", "no")


def parse_duration(value: str, *, unit_alone: bool = False) -> float:
    """"90", "30m", "10min", "12h", "2d", "1w" -> seconds; ValueError otherwise.

    Only ASCII decimals: no sign, exponent, "_", "0x", "nan" or "inf", so the
    result is finite and not negative.  With `unit_alone`, a bare unit
    ("hour") means one of it, as in a reply limit.
    """
    found = _DURATION.fullmatch(value.strip().lower())
    if not found or found.group(2) not in _UNITS or not (found.group(1) or unit_alone and found.group(2)):
        raise ValueError(f"{value!r} is not a duration like 2d, 12h, 30m or 3600")
    return float(found.group(1) or 1) * _UNITS[found.group(2)]


def parse_limit(text: str) -> ReplyLimit:
    """"20/hour", "100/day", "5/10min", "off" -> ReplyLimit; ValueError otherwise.

    "0/hour" is refused rather than read as "no limit" (what it once meant) or
    "never answer" (what it seems to say): "off" says it without doubt.
    """
    text = text.strip().lower()
    if text in _NO_LIMIT or text == "":
        return ReplyLimit(0, HOUR)
    found = _LIMIT.fullmatch(text)
    if not found:
        raise ValueError("must look like 20/hour, 5/10min or off")
    count = int(found.group(1))
    try:
        window = parse_duration(found.group(2), unit_alone=True)
    except ValueError:
        raise ValueError("must look like 20/hour, 5/10min or off") from None
    if not 1 <= count <= MAX_REPLIES_PER_WINDOW:
        raise ValueError(f"the number of replies must be between 1 and {MAX_REPLIES_PER_WINDOW} (off: no limit)")
    low, high = REPLY_WINDOW_RANGE
    if not low <= window <= high:
        raise ValueError(f"the time must be between {_span(low)} and {_span(high)}")
    return ReplyLimit(count, window)


class ConfigError(Exception):
    """A missing or unusable setting; str() is one line for stderr."""


class Config(NamedTuple):
    """The gateway's settings, read and checked once."""
    site_url: str
    api_url: str
    api_key: str
    gateway_address: str
    sendmail: tuple[str, ...]
    log_dir: Path
    http_timeout: float
    max_message_bytes: int
    api_caller_id: str = "torokiki-pipe"
    give_up_after: float = 2 * 86400          # seconds of temporary failures before answering anyway
    journal_expire: float = 10 * 86400
    reply_limit: ReplyLimit = parse_limit(DEFAULT_REPLY_LIMIT)
    null_sender: bool = True                  # send replies with the envelope sender <>
    syslog: bool = False                      # also send the summary line to syslog (mail facility)
    syslog_socket: str = DEFAULT_SYSLOG_SOCKET  # the syslog daemon's local socket
    smtputf8: str = "auto"                    # "yes", "no", or "auto": ask the sendmail command (check says)
    reply_subaddress: str = ""                # the recipient delimiter of Reply-To: gateway+image.1.response@; "" off
    # The authserv-ids whose Authentication-Results are trusted (the host's own MTA or milters); () off.
    authserv_ids: tuple[str, ...] = ()
    require_auth: str = "off"                 # "create": hold a response from a sender who did not prove the From
    source: Path | None = None          # the env file read, if any
    unknown_keys: tuple[str, ...] = ()  # TOROKIKI_* names set but not read (typos?), for `check`

    def __repr__(self) -> str:  # never print the key, even by accident
        return f"Config(site_url={self.site_url!r}, api_url={self.api_url!r}, api_key=<redacted>, ...)"


def find_config_file(explicit: str | None, environ: Mapping[str, str]) -> Path | None:
    if explicit:
        return Path(explicit)
    if environ.get("TOROKIKI_PIPE_CONFIG"):
        return Path(environ["TOROKIKI_PIPE_CONFIG"])
    local = Path(".env")
    return local if local.is_file() else None


def load(explicit: str | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read the configuration, or raise ConfigError with one clear line."""
    environ = os.environ if environ is None else environ
    path = find_config_file(explicit, environ)
    values: dict[str, str] = {}
    if path is not None:
        values.update(_read_env_file(path))
    from_environment = {k: v for k, v in environ.items() if k.startswith("TOROKIKI_")}
    values.update(from_environment)
    return _build(values, path, frozenset(from_environment))


def known_key(key: str) -> bool:
    """True for a key the gateway reads, or one that is deliberately someone else's."""
    return key in SETTING_NAMES or key in OTHER_KEYS or key.startswith(OTHER_PREFIXES)


def suggest(key: str) -> str:
    """", did you mean TOROKIKI_API_KEY?" for a near miss of a known key, else ""."""
    from difflib import get_close_matches

    close = get_close_matches(key.upper(), SETTING_NAMES, n=1, cutoff=0.75)
    return f"; did you mean {close[0]}?" if close else ""


def _read_env_file(path: Path) -> dict[str, str]:
    try:
        with open(path, "rb") as stream:
            data = stream.read(MAX_CONFIG_FILE_BYTES + 1)
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror or error}") from None
    if len(data) > MAX_CONFIG_FILE_BYTES:
        raise ConfigError(f"config file {path} is larger than {MAX_CONFIG_FILE_BYTES // 1024} KB: "
                          f"is it the right file?")
    try:
        text = data.decode("utf-8-sig")      # an editor's byte order mark is no part of the first key
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        raise ConfigError(f"config file {path} is not UTF-8 text (line {line})") from None
    return parse_env_text(text, f"config file {path}")


def parse_env_text(text: str, name: str = "config file") -> dict[str, str]:
    """The file's KEY=value pairs, as python-dotenv reads them; ConfigError for a line it cannot parse.

    python-dotenv only logs such a line and skips it, and a quote left open
    can make it skip every line up to the next quote: keys that silently fall
    back to their defaults.  Its parser says where each statement starts, so the
    lines are named (never shown: one may hold the key).
    """
    import io

    from dotenv import dotenv_values
    from dotenv.parser import parse_stream

    bad, without_value = [], []
    for binding in parse_stream(io.StringIO(text)):
        if binding.error:
            # A quoted value may span lines: so may the statement it spoiled.
            first = binding.original.line
            last = first + binding.original.string.rstrip().count("\n")
            bad.append(str(first) if last == first else f"{first}-{last}")
        elif binding.key and binding.key.startswith("TOROKIKI_") and binding.value is None:
            without_value.append(f"{binding.key} (line {binding.original.line})")
    if bad:
        lines = "line" + ("s" if len(bad) > 1 or "-" in bad[0] else "")
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise ConfigError(f"{name}: {lines} {shown} cannot be parsed as KEY=value "
                          f"(an unclosed quote? no '=' after the key?)")
    if without_value:
        more = f" (and {len(without_value) - 1} more)" if len(without_value) > 1 else ""
        raise ConfigError(f"{name}: {without_value[0]}{more} has no '=' and so no value; "
                          f"write KEY=value, or KEY= for the default")
    # dotenv_values interpolates ${VAR} as it always did; the parse above only adds the checks.
    read = dotenv_values(stream=io.StringIO(text))
    return {k: v for k, v in read.items() if v is not None}


def world_readable(path: Path) -> bool:
    try:
        return bool(path.stat().st_mode & stat.S_IROTH)
    except OSError:
        return False


def _build(values: Mapping[str, str], path: Path | None, from_environment: frozenset = frozenset()) -> Config:
    unknown = tuple(sorted(k for k in values if k.startswith("TOROKIKI_") and not known_key(k)))

    def where(key: str) -> str:
        # Only worth saying when there is a file, which the environment overrides.
        return " (from the environment)" if key in from_environment and path is not None else ""

    def fail(key: str, why: str) -> ConfigError:
        return ConfigError(f"{key}{where(key)} {why}")

    def get(key: str, default: str = "") -> str:
        value = (values.get(key) or default).strip()
        if len(value) > MAX_VALUE_CHARS:
            raise fail(key, f"is longer than {MAX_VALUE_CHARS} characters")
        if not value.isprintable():
            raise fail(key, "holds a control or invisible character (a line break, tab, NUL, "
                            "zero-width or non-breaking space)" + ("" if key in _SECRET_KEYS else
                                                                   f": {_show(value)}"))
        return value

    def number(key: str, default: str, read):
        text = get(key, default)
        try:
            value = read(text)
        except ValueError:
            raise fail(key, f"must be {_WHAT[key]}, not {_show(text)}") from None
        low, high = RANGES[key]
        if not low <= value <= high:
            shown = _span if read is parse_duration else (lambda n: f"{n} bytes")
            raise fail(key, f"must be between {shown(low)} and {shown(high)}, not {_show(text)}")
        return value

    site_url = _url(get("TOROKIKI_SITE_URL", DEFAULT_SITE_URL), "TOROKIKI_SITE_URL", fail, site=True)
    api_url = _url(get("TOROKIKI_API_URL", site_url), "TOROKIKI_API_URL", fail, site=False)
    api_key = get("TOROKIKI_API_KEY")
    if not api_key:
        raise fail("TOROKIKI_API_KEY", "is not set: the website needs it for every submission"
                   + _typo_hint("TOROKIKI_API_KEY", unknown))
    if not all("!" <= c <= "~" for c in api_key):
        raise fail("TOROKIKI_API_KEY", "holds a space or a character outside printable ASCII; it is sent "
                                       "in an HTTP header (the key is not shown here)")
    gateway = get("TOROKIKI_GATEWAY_ADDRESS")
    if not gateway:
        raise fail("TOROKIKI_GATEWAY_ADDRESS", "is not set: replies need a From address"
                   + _typo_hint("TOROKIKI_GATEWAY_ADDRESS", unknown))
    if not _ADDRESS.fullmatch(gateway) or len(gateway) > 254:
        raise fail("TOROKIKI_GATEWAY_ADDRESS", f"{_show(gateway)} is not a plain address like gateway@torokiki.net")
    try:
        sendmail = tuple(shlex.split(get("TOROKIKI_SENDMAIL", DEFAULT_SENDMAIL)))
    except ValueError as error:
        raise fail("TOROKIKI_SENDMAIL", f"cannot be split into words: {error}") from None
    if not sendmail:
        raise fail("TOROKIKI_SENDMAIL", "is empty")
    if not os.path.isabs(sendmail[0]):
        # Postfix runs pipes with PATH=/usr/bin:/bin: a bare name would work by hand and fail there.
        raise fail("TOROKIKI_SENDMAIL", f"must start with a full path, not {_show(sendmail[0])}")
    timeout = number("TOROKIKI_HTTP_TIMEOUT", str(DEFAULT_HTTP_TIMEOUT), parse_duration)
    max_bytes = number("TOROKIKI_MAX_MESSAGE_BYTES", str(DEFAULT_MAX_MESSAGE_BYTES), _whole_number)
    give_up_after = number("TOROKIKI_GIVE_UP_AFTER", DEFAULT_GIVE_UP_AFTER, parse_duration)
    journal_expire = number("TOROKIKI_JOURNAL_EXPIRE", DEFAULT_JOURNAL_EXPIRE, parse_duration)
    if journal_expire < give_up_after:
        raise ConfigError("TOROKIKI_JOURNAL_EXPIRE must be longer than TOROKIKI_GIVE_UP_AFTER, "
                          "or a retried message would be posted again")
    limit_text = get("TOROKIKI_REPLY_LIMIT", DEFAULT_REPLY_LIMIT)
    try:
        reply_limit = parse_limit(limit_text)
    except ValueError as error:
        raise fail("TOROKIKI_REPLY_LIMIT", f"{_show(limit_text)}: {error}") from None
    log_dir = Path(get("TOROKIKI_LOG_DIR", DEFAULT_LOG_DIR))
    if not log_dir.is_absolute() and path is not None and get("TOROKIKI_LOG_DIR"):
        # A relative log dir in a config file means "next to that file", not
        # "wherever Postfix happens to start us".
        log_dir = path.parent / log_dir
    caller_id = get("TOROKIKI_API_CALLER_ID", "torokiki-pipe")
    if len(caller_id) > 100:
        raise fail("TOROKIKI_API_CALLER_ID", "is longer than 100 characters")
    authserv_ids = _authserv_ids(get("TOROKIKI_AUTHSERV_ID"), fail)
    require_auth = _require_auth(get("TOROKIKI_REQUIRE_AUTH", "off"), authserv_ids, fail)
    return Config(site_url=site_url, api_url=api_url, api_key=api_key, gateway_address=gateway,
                  sendmail=sendmail, log_dir=log_dir, http_timeout=timeout,
                  max_message_bytes=max_bytes, api_caller_id=caller_id,
                  give_up_after=give_up_after, journal_expire=journal_expire, reply_limit=reply_limit,
                  null_sender=_yes_no(get("TOROKIKI_NULL_SENDER", "yes"), "TOROKIKI_NULL_SENDER", fail),
                  syslog=_syslog(get("TOROKIKI_SYSLOG", "off"), fail),
                  syslog_socket=_syslog_socket(get("TOROKIKI_SYSLOG_SOCKET", DEFAULT_SYSLOG_SOCKET), fail),
                  smtputf8=_smtputf8(get("TOROKIKI_SMTPUTF8", "auto"), fail),
                  reply_subaddress=_subaddress(get("TOROKIKI_REPLY_SUBADDRESS", "off"), gateway, fail),
                  authserv_ids=authserv_ids, require_auth=require_auth,
                  source=path, unknown_keys=unknown)


_WHAT = {
    "TOROKIKI_HTTP_TIMEOUT": "a number of seconds like 30 (or 30s)",
    "TOROKIKI_MAX_MESSAGE_BYTES": "a positive whole number of bytes like 26214400",
    "TOROKIKI_GIVE_UP_AFTER": "a duration like 2d, 12h or 3600",
    "TOROKIKI_JOURNAL_EXPIRE": "a duration like 10d, 12h or 86400",
}

# RFC 5322 atext and dots, "@", a host name: what a From header takes without quoting.
_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?", re.ASCII)


def _whole_number(text: str) -> int:
    if not re.fullmatch(r"[0-9]{1,12}", text, re.ASCII):
        raise ValueError(text)
    return int(text)


def _url(value: str, key: str, fail, *, site: bool) -> str:
    if not value.isascii() or " " in value:
        raise fail(key, "must be an ASCII URL without spaces (an international domain in its xn-- form)")
    try:
        parts = urlsplit(value)
        port = parts.port            # raises for a port over 65535 or not a number
        host = parts.hostname
    except ValueError as error:
        raise fail(key, f"is not a usable URL ({error}): {_show(value)}") from None
    if parts.scheme not in ("http", "https") or not host:
        raise fail(key, f"must be an http:// or https:// URL, not {_show(value)}")
    if port == 0:
        raise fail(key, "names port 0, where nothing can answer")
    if "@" in parts.netloc:
        # Never shown: a user name or password in a URL is a secret.
        raise fail(key, "must not hold a user name or password (user@ in the URL); it is not shown here")
    if parts.query or parts.fragment or value.endswith(("?", "#")):
        raise fail(key, f"must not have a ?query or #fragment: {_show(value)}")
    if site and parts.path not in ("", "/"):
        # Content URLs in mail are /image/N/response right under the site's host.
        raise fail(key, f"must be the site's address without a path, like {DEFAULT_SITE_URL}, not {_show(value)}")
    return value.rstrip("/")


def _yes_no(value: str, key: str, fail) -> bool:
    if value.lower() in ("yes", "true", "on", "1"):
        return True
    if value.lower() in ("no", "false", "off", "0"):
        return False
    raise fail(key, f"must be yes or no, not {_show(value)}")


def _syslog(value: str, fail) -> bool:
    if value.lower() in ("mail", "yes", "on"):
        return True
    if value.lower() in ("off", "no", ""):
        return False
    raise fail("TOROKIKI_SYSLOG", f"must be mail or off, not {_show(value)}")


def _syslog_socket(value: str, fail) -> str:
    if not os.path.isabs(value):
        # Postfix starts the pipe in its own directory: a relative path would point nowhere useful.
        raise fail("TOROKIKI_SYSLOG_SOCKET", f"must be a full path like {DEFAULT_SYSLOG_SOCKET}, not {_show(value)}")
    return value


def _smtputf8(value: str, fail) -> str:
    if value.lower() in ("auto", "yes", "no"):
        return value.lower()
    raise fail("TOROKIKI_SMTPUTF8", f"must be auto, yes or no, not {_show(value)}")


# Characters an MTA may split a local part at (Postfix's recipient_delimiter) that are
# also atext, so gateway+image.1.response@ stays a dot-atom; "." would be read as the
# content path's own separator.
SUBADDRESS_DELIMITERS = "+-=_"


def _subaddress(value: str, gateway: str, fail) -> str:
    if value.lower() in ("off", "no", ""):
        return ""
    if len(value) != 1 or value not in SUBADDRESS_DELIMITERS:
        raise fail("TOROKIKI_REPLY_SUBADDRESS", f"must be off or one of the characters "
                                                f"{' '.join(SUBADDRESS_DELIMITERS)} (Postfix's recipient_delimiter), "
                                                f"not {_show(value)}")
    if value in gateway.rpartition("@")[0]:
        # The MTA splits at the first delimiter: gateway-name+x would be delivered to "gateway".
        raise fail("TOROKIKI_REPLY_SUBADDRESS", f"{_show(value)} is part of the gateway's own local part "
                                                f"({_show(gateway)}); choose another delimiter")
    return value


# RFC 8601's authserv-id is a token; in practice a host name.  "/" is not in it: OpenDKIM's
# and OpenDMARC's AuthservIDWithJobID write "id/queue-id", which still names the id.
_AUTHSERV_ID = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?", re.ASCII)


def _authserv_ids(value: str, fail) -> tuple[str, ...]:
    """TOROKIKI_AUTHSERV_ID: one id, or several separated by commas (two MX hosts of one domain)."""
    if value.lower() in ("", "off", "none"):
        return ()
    ids = tuple(part.strip().lower() for part in value.split(","))
    for one in ids:
        if not _AUTHSERV_ID.fullmatch(one) or len(one) > 253:
            raise fail("TOROKIKI_AUTHSERV_ID", f"must be the host name your MTA's milters write first in "
                                               f"Authentication-Results (like mx.torokiki.net), or off, "
                                               f"not {_show(value)}")
    return tuple(dict.fromkeys(ids))


def _require_auth(value: str, authserv_ids: tuple[str, ...], fail) -> str:
    value = value.lower()
    if value in ("off", "no", ""):
        return "off"
    if value != "create":
        raise fail("TOROKIKI_REQUIRE_AUTH", f"must be off or create, not {_show(value)}")
    if not authserv_ids:
        # Without a trusted verdict every sender is unknown: every response would be held.
        raise fail("TOROKIKI_REQUIRE_AUTH", "is create, but TOROKIKI_AUTHSERV_ID is not set: no sender could "
                                            "prove the From address, so every response would be held; set the "
                                            "authserv-id your MTA writes, or TOROKIKI_REQUIRE_AUTH=off")
    return value


def _typo_hint(key: str, unknown: tuple[str, ...]) -> str:
    from difflib import get_close_matches

    close = get_close_matches(key, unknown, n=1, cutoff=0.75)
    return f" (but {close[0]} is: a typo?)" if close else ""


def _span(seconds: float) -> str:
    for unit, size in (("d", DAY), ("h", HOUR), ("min", MINUTE)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _show(value: str) -> str:
    """A value quoted for a one-line message: escaped, and short."""
    return ascii(value if len(value) <= 60 else value[:57] + "...")
