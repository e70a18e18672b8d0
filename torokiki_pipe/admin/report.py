"""``torokiki-pipe report [--config FILE] [--since 7d] [--json]``: what logs/ says.

Reads ``torokiki-pipe.log`` and its rotations (``.1``, ``.N.gz``, dated
``-YYYYMMDD[.gz]`` names, and the ``-YYYYMMDDHH.backup`` files logrotate makes
when it finds the log re-created under it) and counts messages per outcome,
per command and per exit code; names the senders with the most errors; lists
the last errors with their reasons; and counts what waits in each stash folder
(``done/`` not included).  Lines that are not log lines (crash tracebacks,
anything torn or foreign) are counted as unparsed, never fatal.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from torokiki_pipe.cli import UsageParser
from torokiki_pipe.adapters.records import LOG_FILE, STASH_KINDS

# Outcomes that say something went wrong with a sender's mail ("poisoned": crashed for good).
SENDER_ERRORS = ("invalid", "refused", "unanswerable", "reply-failed", "crashed", "poisoned")
# An error is one of those, "gave-up" (answered that it was not saved), or any exit but 0.
OTHER_ERRORS = ("gave-up",)
LAST_ERRORS = 10
TOP_SENDERS = 10

_STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ) (.*)$")
_FIELD = re.compile(r'([a-z][a-z-]*)=("[^"]*"|\S*)')
_ROTATED = re.compile(re.escape(LOG_FILE) + r"(?:\.(\d+)|-(\d{8,10})(?:\.backup)?)?(\.gz)?$")
_SINCE = re.compile(r"^(\d+)\s*([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_args(argv):
    parser = UsageParser(prog="torokiki-pipe report",
                     description="Summarise logs/: messages per outcome, command and exit code, the senders "
                                 "with most errors, the last errors, and what waits in each stash folder.")
    parser.add_argument("--log-dir", metavar="DIR",
                        help="read this logs/ folder instead of the configured one (no config needed)")
    parser.add_argument("--since", metavar="WHEN",
                        help="only lines from this time on: 30m, 12h, 7d, 2w, or an ISO date/time (UTC)")
    parser.add_argument("--json", action="store_true", help="print JSON, for scripts")
    return parser.parse_args(argv)


# --------------------------------------------------------------------------- log lines

@dataclass(frozen=True)
class Entry:
    """One line of the gateway's log, read back."""
    time: datetime
    fields: dict

    def get(self, key: str) -> str:
        value = self.fields.get(key, "-")
        return value if value != "" else "-"


def parse_line(text: str) -> Entry | None:
    """One log line as written by cli.log_line, or None when it is not one."""
    match = _STAMP.match(text.rstrip("\r\n"))
    if not match:
        return None
    try:
        when = datetime.strptime(match[1], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return None
    fields: dict[str, str] = {}
    for key, value in _FIELD.findall(match[2]):
        if len(value) >= 2 and value.startswith('"') and value.endswith('"'):
            value = value[1:-1]
        fields.setdefault(key, value)
    if "outcome" not in fields:
        return None
    return Entry(when, fields)


def log_files(log_dir: Path) -> list[Path]:
    """The log file and its rotations, oldest first (by their numbering, then name)."""
    found = []
    try:
        names = os.listdir(log_dir)
    except OSError:
        return []
    for name in names:
        match = _ROTATED.fullmatch(name)
        if match and (log_dir / name).is_file():
            found.append((name, match))

    def age(item):
        name, match = item
        if name == LOG_FILE:
            return (2, 0, "")                 # the live file is the newest
        if match[1]:
            return (1, -int(match[1]), "")    # .5.gz is older than .1
        return (0, 0, match[2] or name)       # dated names sort by their date

    return [log_dir / name for name, _ in sorted(found, key=age)]


def read_lines(path: Path):
    """The lines of a log file, gzip or plain; a damaged file yields what can be read."""
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8", errors="replace") as stream:
            for line in stream:
                yield line
    except (OSError, EOFError):    # unreadable, or a truncated .gz: keep what was read
        return


# --------------------------------------------------------------------------- --since

def parse_since(value: str, now: datetime | None = None) -> datetime:
    """``30m``, ``12h``, ``7d``, ``2w`` (before now) or an ISO date/time (UTC unless it says)."""
    now = now or datetime.now(timezone.utc)
    text = value.strip()
    match = _SINCE.match(text.lower())
    if match:
        return now - timedelta(**{_UNITS[match[2]]: int(match[1])})
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"--since must look like 30m, 12h, 7d, 2w or 2026-11-01, not {value!r}") from None
    return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when.astimezone(timezone.utc)


# --------------------------------------------------------------------------- the summary

@dataclass
class Summary:
    """What the report tells, gathered over the log lines read."""
    log_dir: str
    since: datetime | None
    files: list = field(default_factory=list)
    messages: int = 0
    unparsed: int = 0
    first: datetime | None = None
    last: datetime | None = None
    outcomes: Counter = field(default_factory=Counter)
    commands: Counter = field(default_factory=Counter)
    exits: Counter = field(default_factory=Counter)
    error_senders: Counter = field(default_factory=Counter)
    errors: list = field(default_factory=list)
    stash: dict = field(default_factory=dict)

    def add(self, entry: Entry) -> None:
        self.messages += 1
        self.first = entry.time if self.first is None else min(self.first, entry.time)
        self.last = entry.time if self.last is None else max(self.last, entry.time)
        outcome, code = entry.get("outcome"), entry.get("exit")
        self.outcomes[outcome] += 1
        self.commands[entry.get("command")] += 1
        self.exits[code] += 1
        if outcome in SENDER_ERRORS:
            self.error_senders[entry.get("sender")] += 1
        if outcome in SENDER_ERRORS or outcome in OTHER_ERRORS or code not in ("0", "-"):
            self.errors.append(entry)

    def as_json(self) -> dict:
        def stamp(when):
            return when.strftime("%Y-%m-%dT%H:%M:%SZ") if when else None

        def ranked(counter):
            return dict(sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])))

        last = sorted(self.errors, key=lambda e: e.time)[-LAST_ERRORS:]
        return {
            "log_dir": self.log_dir,
            "log_files": [str(p) for p in self.files],
            "since": stamp(self.since),
            "first": stamp(self.first),
            "last": stamp(self.last),
            "messages": self.messages,
            "unparsed_lines": self.unparsed,
            "outcomes": ranked(self.outcomes),
            "commands": ranked(self.commands),
            "exit_codes": ranked(self.exits),
            "top_error_senders": [{"sender": s, "errors": n}
                                  for s, n in sorted(self.error_senders.items(),
                                                     key=lambda kv: (-kv[1], kv[0]))[:TOP_SENDERS]],
            "last_errors": [{"time": stamp(e.time), "sender": e.get("sender"), "outcome": e.get("outcome"),
                             "exit": e.get("exit"), "message_id": e.get("message-id"),
                             "detail": e.fields.get("detail", "")} for e in last],
            "stash": self.stash,
        }


def summarise(log_dir: Path, since: datetime | None = None) -> Summary:
    summary = Summary(str(log_dir), since)
    for path in log_files(log_dir):
        if since is not None and _older_than(path, since):
            continue                     # its last line was written before `since`
        summary.files.append(path)
        for line in read_lines(path):
            if not line.strip():
                continue
            entry = parse_line(line)
            if entry is None:
                summary.unparsed += 1
            elif since is None or entry.time >= since:
                summary.add(entry)
    summary.stash = stash_counts(log_dir)
    return summary


def _older_than(path: Path, since: datetime) -> bool:
    try:
        # a minute of slack: the line's stamp is taken just before it is written
        return path.stat().st_mtime + 60 < since.timestamp()
    except OSError:
        return False


def stash_counts(log_dir: Path) -> dict:
    """{kind: {"mails": .eml files, "files": all files}} for each stash folder, done/ not counted."""
    counts = {}
    for kind in STASH_KINDS:
        mails = files = 0
        try:
            entries = list(os.scandir(log_dir / kind))
        except OSError:
            entries = []
        for item in entries:
            if item.name.startswith(".") or not item.is_file(follow_symlinks=False):
                continue                  # temporary files being written, done/, anything else
            files += 1
            mails += item.name.endswith(".eml")
        counts[kind] = {"mails": mails, "files": files}
    return counts


# --------------------------------------------------------------------------- text

def render_text(summary: Summary) -> str:
    data = summary.as_json()
    out = [f"torokiki-pipe report for {data['log_dir']}"
           + (f" since {data['since']}" if data["since"] else "")]
    if data["log_files"]:
        out.append(f"read {len(data['log_files'])} log file(s): "
                   + ", ".join(Path(p).name for p in data["log_files"]))
    else:
        out.append("no log file found")
    span = f", {data['first']} to {data['last']}" if data["first"] else ""
    out.append(f"{data['messages']} message(s){span}"
               + (f"; {data['unparsed_lines']} other line(s) skipped (tracebacks, damaged lines)"
                  if data["unparsed_lines"] else ""))

    def table(title, counts):
        out.append("")
        out.append(title)
        if not counts:
            out.append("  (none)")
        width = max((len(str(k)) for k in counts), default=0)
        for key, count in counts.items():
            out.append(f"  {str(key):<{width}}  {count:>6}")

    table("By outcome:", data["outcomes"])
    table("By command:", data["commands"])
    table("By exit code:", data["exit_codes"])
    table("Senders with most errors (" + ", ".join(SENDER_ERRORS) + "):",
          {row["sender"]: row["errors"] for row in data["top_error_senders"]})
    out.append("")
    out.append(f"Last {LAST_ERRORS} errors (oldest first):")
    if not data["last_errors"]:
        out.append("  (none)")
    for row in data["last_errors"]:
        out.append(f"  {row['time']}  {row['sender']}  {row['outcome']} (exit {row['exit']})  "
                   f"{row['message_id']}")
        if row["detail"] and row["detail"] != "-":
            out.append(f"      {row['detail']}")
    out.append("")
    out.append("Stash folders (done/ not counted):")
    for kind, count in data["stash"].items():
        extra = f"  ({count['files']} files)" if count["files"] != count["mails"] else ""
        out.append(f"  {kind:<16}  {count['mails']:>6}{extra}")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- main

def main(argv) -> int:
    args = parse_args(argv)
    since = None
    if args.since:
        try:
            since = parse_since(args.since)
        except ValueError as error:
            print(f"torokiki-pipe report: {error}", file=sys.stderr)
            return os.EX_USAGE
    if args.log_dir:
        log_dir = Path(args.log_dir)
    else:
        from torokiki_pipe import config as configuration

        try:
            log_dir = configuration.load(args.config).log_dir
        except configuration.ConfigError as error:
            print(f"problem: configuration: {error}", file=sys.stderr)
            return os.EX_CONFIG
    if not log_dir.is_dir():
        print(f"problem: the log dir {log_dir} does not exist", file=sys.stderr)
        return os.EX_NOINPUT
    summary = summarise(log_dir, since)
    if args.json:
        json.dump(summary.as_json(), sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render_text(summary))
    return os.EX_OK
