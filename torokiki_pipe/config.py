"""The one place that reads configuration.

One env file (``--config FILE``, else ``$TOROKIKI_PIPE_CONFIG``, else
``./.env`` when present), read with python-dotenv; real environment variables
win over the file.  Every problem becomes a `ConfigError` whose message is one
clear line for the administrator; the caller defers the mail (exit 75) rather
than bounce it.
"""

from __future__ import annotations

import os
import shlex
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping
from urllib.parse import urlsplit

DEFAULT_SITE_URL = "http://torokiki.net"
DEFAULT_SENDMAIL = "/usr/sbin/sendmail -i"
DEFAULT_LOG_DIR = "./logs"
DEFAULT_HTTP_TIMEOUT = 30.0          # far below Postfix's command_time_limit (1000 s)
DEFAULT_MAX_MESSAGE_BYTES = 25 * 1024 * 1024
# A hung website must never make Postfix kill the pipe (a killed pipe is
# bounced, not retried), so the timeout is capped whatever the file says.
MAX_HTTP_TIMEOUT = 120.0

DEFAULT_GIVE_UP_AFTER = "2d"       # well inside Postfix's 5-day maximal_queue_lifetime
DEFAULT_JOURNAL_EXPIRE = "10d"     # longer than any MTA keeps retrying one message
DEFAULT_REPLY_LIMIT = "20/hour"

KEYS = (
    "TOROKIKI_SITE_URL", "TOROKIKI_API_URL", "TOROKIKI_API_KEY",
    "TOROKIKI_GATEWAY_ADDRESS", "TOROKIKI_SENDMAIL", "TOROKIKI_LOG_DIR",
    "TOROKIKI_HTTP_TIMEOUT", "TOROKIKI_MAX_MESSAGE_BYTES", "TOROKIKI_API_CALLER_ID",
    "TOROKIKI_GIVE_UP_AFTER", "TOROKIKI_JOURNAL_EXPIRE", "TOROKIKI_REPLY_LIMIT",
    "TOROKIKI_NULL_SENDER", "TOROKIKI_SYSLOG",
)


@dataclass(frozen=True)
class ReplyLimit:
    """TOROKIKI_REPLY_LIMIT, read; ratelimit.ReplyBudget enforces it."""
    count: int        # replies allowed per window; 0 means no limit
    window: float     # seconds


def parse_limit(text: str) -> ReplyLimit:
    """"20/hour", "100/day", "5/10min", "off"/"0" -> ReplyLimit; ValueError otherwise."""
    text = text.strip().lower()
    if text in ("", "0", "off", "none", "no"):
        return ReplyLimit(0, 3600)
    count, _, per = text.partition("/")
    units = {"s": 1, "sec": 1, "second": 1, "min": 60, "minute": 60, "m": 60,
             "h": 3600, "hour": 3600, "d": 86400, "day": 86400}
    digits = "".join(c for c in per if c.isdigit()) or "1"
    unit = per[len(digits):] if per.startswith(digits) else per
    if not count.strip().isdigit() or unit.strip() not in units:
        raise ValueError(f"{text!r} is not like 20/hour")
    return ReplyLimit(int(count), int(digits) * units[unit.strip()])


class ConfigError(Exception):
    """A missing or unusable setting; str() is one line for stderr."""


@dataclass(frozen=True)
class Config:
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
    source: Path | None = None          # the env file read, if any

    @property
    def site_host(self) -> str:
        return urlsplit(self.site_url).hostname or ""

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
    values.update({k: v for k, v in environ.items() if k.startswith("TOROKIKI_")})
    return _build(values, path)


def _read_env_file(path: Path) -> dict[str, str]:
    from dotenv import dotenv_values

    try:
        with open(path, encoding="utf-8") as stream:
            read = dotenv_values(stream=stream)
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text") from None
    return {k: v for k, v in read.items() if v is not None}


def world_readable(path: Path) -> bool:
    try:
        return bool(path.stat().st_mode & stat.S_IROTH)
    except OSError:
        return False


def _build(values: Mapping[str, str], path: Path | None) -> Config:
    def get(key: str, default: str = "") -> str:
        return (values.get(key) or default).strip()

    site_url = _url(get("TOROKIKI_SITE_URL", DEFAULT_SITE_URL), "TOROKIKI_SITE_URL")
    api_url = _url(get("TOROKIKI_API_URL", site_url), "TOROKIKI_API_URL")
    api_key = get("TOROKIKI_API_KEY")
    if not api_key:
        raise ConfigError("TOROKIKI_API_KEY is not set: the website needs it for every submission")
    gateway = get("TOROKIKI_GATEWAY_ADDRESS")
    if not gateway:
        raise ConfigError("TOROKIKI_GATEWAY_ADDRESS is not set: replies need a From address")
    if not _plain_address(gateway):
        raise ConfigError(f"TOROKIKI_GATEWAY_ADDRESS {gateway!r} is not a plain address like gateway@torokiki.net")
    try:
        sendmail = tuple(shlex.split(get("TOROKIKI_SENDMAIL", DEFAULT_SENDMAIL)))
    except ValueError as error:
        raise ConfigError(f"TOROKIKI_SENDMAIL cannot be split into words: {error}") from None
    if not sendmail:
        raise ConfigError("TOROKIKI_SENDMAIL is empty")
    if not os.path.isabs(sendmail[0]):
        # Postfix runs pipes with PATH=/usr/bin:/bin: a bare name would work by hand and fail there.
        raise ConfigError(f"TOROKIKI_SENDMAIL must start with a full path, not {sendmail[0]!r}")
    timeout = _number(get("TOROKIKI_HTTP_TIMEOUT", str(DEFAULT_HTTP_TIMEOUT)), "TOROKIKI_HTTP_TIMEOUT", float)
    if not 0 < timeout <= MAX_HTTP_TIMEOUT:
        raise ConfigError(f"TOROKIKI_HTTP_TIMEOUT must be between 0 and {MAX_HTTP_TIMEOUT:g} seconds")
    max_bytes = _number(get("TOROKIKI_MAX_MESSAGE_BYTES", str(DEFAULT_MAX_MESSAGE_BYTES)),
                        "TOROKIKI_MAX_MESSAGE_BYTES", int)
    if max_bytes <= 0:
        raise ConfigError("TOROKIKI_MAX_MESSAGE_BYTES must be a positive number of bytes")
    give_up_after = _duration(get("TOROKIKI_GIVE_UP_AFTER", DEFAULT_GIVE_UP_AFTER), "TOROKIKI_GIVE_UP_AFTER")
    journal_expire = _duration(get("TOROKIKI_JOURNAL_EXPIRE", DEFAULT_JOURNAL_EXPIRE), "TOROKIKI_JOURNAL_EXPIRE")
    if journal_expire < give_up_after:
        raise ConfigError("TOROKIKI_JOURNAL_EXPIRE must be longer than TOROKIKI_GIVE_UP_AFTER, "
                          "or a retried message would be posted again")
    try:
        reply_limit = parse_limit(get("TOROKIKI_REPLY_LIMIT", DEFAULT_REPLY_LIMIT))
    except ValueError:
        raise ConfigError(f"TOROKIKI_REPLY_LIMIT must look like 20/hour or off, "
                          f"not {get('TOROKIKI_REPLY_LIMIT')!r}") from None
    log_dir = Path(get("TOROKIKI_LOG_DIR", DEFAULT_LOG_DIR))
    if not log_dir.is_absolute() and path is not None and get("TOROKIKI_LOG_DIR"):
        # A relative log dir in a config file means "next to that file", not
        # "wherever Postfix happens to start us".
        log_dir = path.parent / log_dir
    return Config(site_url=site_url, api_url=api_url, api_key=api_key, gateway_address=gateway,
                  sendmail=sendmail, log_dir=log_dir, http_timeout=timeout,
                  max_message_bytes=max_bytes, api_caller_id=get("TOROKIKI_API_CALLER_ID", "torokiki-pipe"),
                  give_up_after=give_up_after, journal_expire=journal_expire, reply_limit=reply_limit,
                  null_sender=_yes_no(get("TOROKIKI_NULL_SENDER", "yes"), "TOROKIKI_NULL_SENDER"),
                  syslog=_syslog(get("TOROKIKI_SYSLOG", "off")), source=path)


def _url(value: str, key: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{key} must be an http:// or https:// URL, not {value!r}")
    return value.rstrip("/")


def _number(value: str, key: str, kind):
    try:
        return kind(value)
    except ValueError:
        raise ConfigError(f"{key} must be a number, not {value!r}") from None


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(value: str) -> float:
    """"90", "30m", "12h", "2d", "1w" -> seconds; ValueError otherwise."""
    value = value.strip().lower()
    if value and value[-1] in _UNITS:
        return float(value[:-1]) * _UNITS[value[-1]]
    return float(value)


def _duration(value: str, key: str) -> float:
    try:
        seconds = parse_duration(value)
    except ValueError:
        raise ConfigError(f"{key} must be a duration like 2d, 12h or 3600, not {value!r}") from None
    if seconds <= 0:
        raise ConfigError(f"{key} must be longer than nothing")
    return seconds


def _yes_no(value: str, key: str) -> bool:
    if value.lower() in ("yes", "true", "on", "1"):
        return True
    if value.lower() in ("no", "false", "off", "0"):
        return False
    raise ConfigError(f"{key} must be yes or no, not {value!r}")


def _syslog(value: str) -> bool:
    if value.lower() in ("mail", "yes", "on"):
        return True
    if value.lower() in ("off", "no", ""):
        return False
    raise ConfigError(f"TOROKIKI_SYSLOG must be mail or off, not {value!r}")


def _plain_address(value: str) -> bool:
    local, at, domain = value.rpartition("@")
    return bool(at and local and domain) and not any(c.isspace() or c in '<>,;"' for c in value)
