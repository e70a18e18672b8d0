"""``torokiki-pipe report [--config FILE] [--since 7d] [--json]``: what logs/ says.

Reads ``torokiki-pipe.log`` and its rotations (``.1``, ``.N.gz``, dated
``-YYYYMMDD[.gz]`` names, and the ``-YYYYMMDDHH.backup`` files logrotate makes
when it finds the log re-created under it) and counts messages per outcome,
per command, per exit code and per verdict on the From (``auth=``); names the
senders with the most errors; lists the last errors with their reasons (mail
held for a person among them); and counts what waits in each stash folder
(``done/`` not included).  Lines that are not log lines (crash tracebacks,
anything torn or foreign) are counted as unparsed, never fatal.

Messages, not runs: the lines of one Message-ID (MTA retries, replays) are one
message, which counts under how it ended: its last line's outcome, or for a
``duplicate`` line the outcome it names (``already handled (saved: ...)``).  A
line without a Message-ID is a message of its own.  A kept mail whose message a
later delivery saved or answered (an earlier line of it failed, its last one
succeeded) is *resolved*: counted apart from the mails that wait for a person.
That is read from the whole log, whatever ``--since`` says.  Lines written
before the log had ``target=``/``saved=`` (one ``url=`` instead) read as well.
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

from torokiki_pipe.arguments import UsageParser
from torokiki_pipe.stages import s8_record as record
from torokiki_pipe.stages.s8_record import LOG_FILE, STASH_KINDS

# Outcomes that say something went wrong with a sender's mail ("poisoned": crashed for good).
SENDER_ERRORS = ("invalid", "refused", "unanswerable", "reply-failed", "crashed", "poisoned")
# An error is one of those, "gave-up" (answered that it was not saved), a mail held for a
# person to look at (its reason is what they need), or any exit but 0.
OTHER_ERRORS = ("gave-up", "forged", "unverified")
NOT_CHECKED = "not checked"       # auth=- : TOROKIKI_AUTHSERV_ID was off, or the mail was not answerable
# How a message ends well: a kept mail of one that ended so, after a failure, is resolved.
SUCCESSES = ("saved", "answered")
DUPLICATE = "duplicate"
_ALREADY = re.compile(r"^already handled \(([a-z][a-z-]*):")
LAST_ERRORS = 10
TOP_SENDERS = 10

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

    @property
    def target(self) -> str:
        """The content answered or fetched; a line from before `target=` has only `url=`."""
        if "target" in self.fields or "url" not in self.fields:
            return self.get("target")
        return self.get("url") if self.get("outcome") != "saved" else "-"

    @property
    def settled(self) -> str:
        """How the message ended, as this line tells: a duplicate names the earlier outcome."""
        outcome = self.get("outcome")
        if outcome == DUPLICATE:
            match = _ALREADY.match(self.fields.get("detail", ""))
            return match[1] if match else outcome
        return outcome


def parse_line(text: str) -> Entry | None:
    """One log line as `stages.s8_record.log_line` wrote it, or None when it is not one."""
    parsed = record.parse_line(text)
    if parsed is None:
        return None
    try:
        when = datetime.strptime(parsed[0], record.STAMP_FORMAT).replace(tzinfo=timezone.utc)
    except ValueError:
        return None
    return Entry(when, parsed[1])


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
class Message:
    """The lines of one message: its last one, how many, and whether one failed before it ended well."""
    last: Entry
    runs: int = 1
    failed: bool = False

    def add(self, entry: Entry) -> None:
        self.failed = self.failed or self.last.settled not in (*SUCCESSES, DUPLICATE)
        if not (entry.get("outcome") == DUPLICATE and entry.settled == DUPLICATE):
            self.last = entry         # a bare duplicate says nothing new of how it ended
        self.runs += 1

    @property
    def resolved(self) -> bool:
        return self.failed and self.last.settled in SUCCESSES

    @property
    def is_error(self) -> bool:
        outcome = self.last.settled
        return outcome in SENDER_ERRORS or outcome in OTHER_ERRORS or self.last.get("exit") not in ("0", "-")


@dataclass
class Summary:
    """What the report tells, gathered over the log lines read."""
    log_dir: str
    since: datetime | None
    files: list = field(default_factory=list)
    runs: int = 0
    unparsed: int = 0
    first: datetime | None = None
    last: datetime | None = None
    messages: dict = field(default_factory=dict)     # message key -> Message
    stash: dict = field(default_factory=dict)

    def add(self, entry: Entry) -> None:
        self.runs += 1
        self.first = entry.time if self.first is None else min(self.first, entry.time)
        self.last = entry.time if self.last is None else max(self.last, entry.time)
        _add(self.messages, entry, self.runs)

    def as_json(self) -> dict:
        def stamp(when):
            return when.strftime("%Y-%m-%dT%H:%M:%SZ") if when else None

        def ranked(counter):
            return dict(sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])))

        messages = list(self.messages.values())
        outcomes = Counter(m.last.settled for m in messages)
        commands = Counter(m.last.get("command") for m in messages)
        exits = Counter(m.last.get("exit") for m in messages)
        verdicts = Counter(NOT_CHECKED if m.last.get("auth") == "-" else m.last.get("auth") for m in messages)
        error_senders = Counter(m.last.get("sender") for m in messages if m.last.settled in SENDER_ERRORS)
        errors = sorted((m.last for m in messages if m.is_error), key=lambda e: e.time)
        return {
            "log_dir": self.log_dir,
            "log_files": [str(p) for p in self.files],
            "since": stamp(self.since),
            "first": stamp(self.first),
            "last": stamp(self.last),
            "messages": len(messages),
            "runs": self.runs,
            "messages_run_more_than_once": sum(m.runs > 1 for m in messages),
            "unparsed_lines": self.unparsed,
            "outcomes": ranked(outcomes),
            "commands": ranked(commands),
            "exit_codes": ranked(exits),
            "verdicts": ranked(verdicts),
            "top_error_senders": [{"sender": s, "errors": n}
                                  for s, n in sorted(error_senders.items(),
                                                     key=lambda kv: (-kv[1], kv[0]))[:TOP_SENDERS]],
            "last_errors": [{"time": stamp(e.time), "sender": e.get("sender"), "auth": e.get("auth"),
                             "outcome": e.settled,
                             "exit": e.get("exit"), "message_id": e.get("message-id"), "target": e.target,
                             "detail": e.fields.get("detail", "")} for e in errors[-LAST_ERRORS:]],
            "stash": self.stash,
        }


def _add(messages: dict, entry: Entry, number: int) -> None:
    """Count `entry` under its message (its Message-ID; a line without one is a message alone)."""
    key = entry.get("message-id")
    key = key if key != "-" else f"-{number}"
    if key in messages:
        messages[key].add(entry)
    else:
        messages[key] = Message(entry)


def summarise(log_dir: Path, since: datetime | None = None) -> Summary:
    summary = Summary(str(log_dir), since)
    kept = kept_mails(log_dir)
    wanted = {message_id for mails in kept.values() for message_id in mails.values() if message_id != "-"}
    history: dict = {}                   # every line of the kept mails' messages, --since or not
    for path in log_files(log_dir):
        skipped = since is not None and _older_than(path, since)    # its last line was before `since`
        if skipped and not wanted:
            continue
        if not skipped:
            summary.files.append(path)
        for number, line in enumerate(read_lines(path)):
            if not line.strip():
                continue
            entry = parse_line(line)
            if entry is None:
                summary.unparsed += not skipped
                continue
            if entry.get("message-id") in wanted:
                _add(history, entry, number)
            if not skipped and (since is None or entry.time >= since):
                summary.add(entry)
    summary.stash = stash_counts(log_dir, kept, history)
    return summary


def _older_than(path: Path, since: datetime) -> bool:
    try:
        # a minute of slack: the line's stamp is taken just before it is written
        return path.stat().st_mtime + 60 < since.timestamp()
    except OSError:
        return False


def kept_mails(log_dir: Path) -> dict:
    """{kind: {file name: its Message-ID as the log writes it}} of the .eml files in each stash folder."""
    kept: dict = {}
    for kind in STASH_KINDS:
        kept[kind] = {}
        try:
            entries = list(os.scandir(log_dir / kind))
        except OSError:
            continue
        for item in entries:
            if item.name.startswith(".") or not item.name.endswith(".eml") or not item.is_file(follow_symlinks=False):
                continue
            # The pipe's own header reader, so the Message-ID reads as the log wrote it; loaded
            # only when a mail is kept (a report of a quiet logs/ loads nothing of the pipe).
            from torokiki_pipe.stages.s2_headers import MAX_HEADER_BYTES, read_head

            try:
                with open(item.path, "rb") as stream:
                    head = stream.read(MAX_HEADER_BYTES + 4)
                message_id = read_head(head).message_id
            except Exception:    # unreadable, or headers the pipe itself coped with: not tied to a message
                message_id = ""
            kept[kind][item.name] = record.as_logged(message_id)
    return kept


def stash_counts(log_dir: Path, kept: dict | None = None, history: dict | None = None) -> dict:
    """{kind: {"mails", "files", "resolved", "waiting"}} for each stash folder, done/ not counted.

    "resolved": kept mails whose message a later delivery saved or answered
    (`history`: the log's messages of the kept mails); "waiting": the others.
    """
    kept = kept_mails(log_dir) if kept is None else kept
    history = history or {}
    counts = {}
    for kind in STASH_KINDS:
        files = 0
        try:
            entries = list(os.scandir(log_dir / kind))
        except OSError:
            entries = []
        for item in entries:
            if item.name.startswith(".") or not item.is_file(follow_symlinks=False):
                continue                  # temporary files being written, done/, anything else
            files += 1
        mails = kept.get(kind, {})
        resolved = sum(message_id in history and history[message_id].resolved for message_id in mails.values())
        counts[kind] = {"mails": len(mails), "files": files, "resolved": resolved, "waiting": len(mails) - resolved}
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
    runs = f" in {data['runs']} run(s)" if data["runs"] != data["messages"] else ""
    out.append(f"{data['messages']} message(s){runs}{span}"
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
    table("By verdict on the From (Authentication-Results):", data["verdicts"])
    table("Senders with most errors (" + ", ".join(SENDER_ERRORS) + "):",
          {row["sender"]: row["errors"] for row in data["top_error_senders"]})
    out.append("")
    out.append(f"Last {LAST_ERRORS} errors (oldest first):")
    if not data["last_errors"]:
        out.append("  (none)")
    for row in data["last_errors"]:
        out.append(f"  {row['time']}  {row['sender']}  {row['outcome']} (exit {row['exit']})  "
                   f"{row['message_id']}" + (f"  {row['target']}" if row["target"] != "-" else ""))
        if row["detail"] and row["detail"] != "-":
            out.append(f"      {row['detail']}")
    out.append("")
    out.append("Stash folders, mails kept (done/ not counted; a later delivery's success resolves one):")
    for kind, count in data["stash"].items():
        extra = [f"{count['files']} files"] if count["files"] != count["mails"] else []
        if count["resolved"]:
            extra.append(f"besides {count['resolved']} resolved")
        out.append(f"  {kind:<16}  {count['waiting']:>6}" + (f"  ({'; '.join(extra)})" if extra else ""))
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
