"""``torokiki-pipe replay [--config FILE] [--resend] [--dry-run] FILE|DIR ...``

Runs kept mails through the pipe again, with `run.handle` (so with the same
journal, records and log line as a delivery from Postfix; nothing is posted or
answered twice when the journal already knows the mail).  Arguments are
``.eml`` files or one of the stash folders (``logs/crashed``,
``logs/failed_https``, ...); in a folder only the ``*.eml`` files are mails,
and the files beside one with the same stem (``X.http.txt`` beside ``X.eml``)
go wherever it goes.

A mail whose replay exits 0 moves to ``done/`` inside its own folder (made
0700); one that exits 75 stays for the next replay.  The replay writes no
second copy: what the pipe stashes again of the very same mail while being
replayed is removed (exit 75: the original stays the one waiting copy) or, when
it landed in the same folder, moved to ``done/`` with it (exit 0).  One line per
file on stdout: the file, the exit code, the outcome, where it went; when there
is no file to handle, one line that says so (``nothing to do: ...``, exit 0).

``--resend`` sends the ready replies in ``logs/failed_sends/`` (or the files
or folders given) with the configured sendmail to the one address in their
``To:`` header, and moves each one sent to ``done/``.  Only the gateway's own
replies (X-Loop marker) with exactly one well-formed To address are sent.

``--force`` submits again mail that the journal already finished without
success (refused, gave up, not understood, too big, reply failed, not
verified): for the day a fix on either side (a website bug fixed, a limit
raised) makes it succeed.  The mails in ``logs/held/`` (forged, or a
response from a sender who was not verified) are replayed only with
``--force``: it says a person read the mail and vouches for its sender; the
verdict is then logged beside the outcome, and the sender answered.  A
crashed mail needs no force: its entry never finished.  The same
Idempotency-Key goes with it, so a website that did store it answers with
what it stored.  Saved or answered mail is
never forced: that would answer the sender twice.

``--dry-run`` hands ``dry_run=True`` to `run.handle` (prints the request and
reply instead) and moves nothing; with ``--resend`` it says what it would send.

Exit 0 when every file was handled, 75 (EX_TEMPFAIL) when some are left,
64 for a wrong command line or argument, 78 for a configuration error.
One replay runs at a time (an exclusive lock on the log dir).
"""

from __future__ import annotations

import contextlib
import email
import fcntl
import io
import os
import re
import shlex
import sys
from dataclasses import dataclass
from email.errors import HeaderDefect, NonASCIILocalPartDefect
from email.policy import default
from pathlib import Path

from torokiki_pipe import config as configuration
from torokiki_pipe.adapters.records import make_private_dirs
from torokiki_pipe.adapters.sendmail import Sendmail
from torokiki_pipe.admin.check import emit
from torokiki_pipe.admin.report import parse_line
from torokiki_pipe.arguments import UsageParser
from torokiki_pipe.pipeline import Envelope
from torokiki_pipe.run import handle
from torokiki_pipe.stages.s1_read import read_mail
from torokiki_pipe.stages.s2_headers import read_head
from torokiki_pipe.stages.s3_guard import LOOP_MARKER_PREFIX, Sender, reply_sender
from torokiki_pipe.stages.s8_record import FAILED_SENDS, HELD, LOG_FILE, STASH_KINDS, as_logged, field_value

DONE = "done"
MAIL_SUFFIX = ".eml"


def parse_args(argv):
    parser = UsageParser(prog="torokiki-pipe replay",
                     description="Run kept mails (.eml files, or a logs/ stash folder) through the pipe "
                                 "again; those handled move to done/.  With --resend, send the kept "
                                 "replies of logs/failed_sends/ instead.")
    parser.add_argument("paths", nargs="*", metavar="FILE|DIR", help=".eml files or stash folders")
    parser.add_argument("--resend", action="store_true",
                        help="send the ready replies in logs/failed_sends/ (or the files given)")
    parser.add_argument("--force", action="store_true",
                        help="submit again mail the journal finished without success (refused, gave up, ...); "
                             "saved or answered mail is never sent twice")
    parser.add_argument("--dry-run", action="store_true",
                        help="change nothing: no POST, no mail sent, nothing moved; print what would happen")
    args = parser.parse_args(argv)
    if args.force and args.resend:
        parser.error("--force replays mails; --resend sends kept replies: choose one")
    return args


def main(argv) -> int:
    args = parse_args(argv)
    try:
        settings = configuration.load(args.config)
    except configuration.ConfigError as error:
        print(f"problem: configuration: {error}", file=sys.stderr)
        return os.EX_CONFIG
    if not args.paths and not args.resend:
        print("torokiki-pipe replay: name the .eml files or stash folders to replay "
              f"(e.g. {settings.log_dir}/crashed)", file=sys.stderr)
        return os.EX_USAGE
    paths = [Path(p) for p in args.paths] or [Path(settings.log_dir) / FAILED_SENDS]
    files, problems = collect(paths, replies=args.resend, default=not args.paths, force=args.force)
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    if problems:
        return os.EX_USAGE
    if not files:
        what = "kept replies to send" if args.resend else "kept mails (.eml) to replay"
        emit(sys.stdout, f"nothing to do: no {what} in {', '.join(map(str, paths))} ({DONE}/ not counted)")
        return os.EX_OK
    with _exclusive(Path(settings.log_dir)) as locked:
        if not locked:
            print(f"problem: another replay is running on {settings.log_dir}; try again when it is done",
                  file=sys.stderr)
            return os.EX_TEMPFAIL
        left = 0
        for number, path in enumerate(files):
            if args.resend:
                left += not resend_one(path, settings, args.dry_run)
            else:
                status = replay_one(path, settings, args.dry_run, args.force)
                left += status != HANDLED
                if status == STOPPED:      # SIGTERM or Ctrl-C ended that mail's run: stop here
                    left += len(files) - number - 1
                    break
    return os.EX_TEMPFAIL if left else os.EX_OK


# --------------------------------------------------------------------------- which files

def collect(paths: list[Path], *, replies: bool, default: bool = False,
            force: bool = False) -> tuple[list[Path], list[str]]:
    """The .eml files named or held by `paths` (not in done/), each once, and what is wrong.

    Held mails (logs/held/) are only taken with `force`: replaying one submits it.
    """
    files: list[Path] = []
    problems: list[str] = []
    seen: set[Path] = set()
    for path in paths:
        if path.is_dir():
            if not replies and _holds_replies(path):
                problems.append(f"{path} holds replies, not mails: send them with --resend")
                continue
            if not replies and not force and _is_held(path):
                problems.append(_HELD_NEEDS_FORCE.format(path=path))
                continue
            try:
                found = sorted(p for p in path.iterdir()
                               if p.name.endswith(MAIL_SUFFIX) and not p.name.startswith(".") and p.is_file())
            except OSError as error:
                problems.append(f"{path}: {error.strerror}")
                continue
        elif path.is_file():
            if not path.name.endswith(MAIL_SUFFIX):
                problems.append(f"{path} is not a kept mail (.eml)")
                continue
            if not replies and _holds_replies(path.parent):
                problems.append(f"{path} is a reply, not a mail: send it with --resend")
                continue
            if not replies and not force and _is_held(path.parent):
                problems.append(_HELD_NEEDS_FORCE.format(path=path))
                continue
            found = [path]
        elif default and not path.exists():
            found = []                    # no logs/failed_sends/ yet: nothing to resend
        else:
            problems.append(f"{path}: no such file or folder")
            continue
        for item in found:
            key = item.resolve()
            if key not in seen:
                seen.add(key)
                files.append(item)
    return files, problems


_HELD_NEEDS_FORCE = ("{path} is held for a person to look at (forged, or its sender not verified; the log line "
                     "says which): read it, and if you vouch for its sender, submit it with replay --force")


def _holds_replies(folder: Path) -> bool:
    return _kind(folder) == FAILED_SENDS


def _is_held(folder: Path) -> bool:
    return _kind(folder) == HELD


def _kind(folder: Path) -> str:
    """The stash kind a folder (or its done/) is."""
    folder = folder.resolve()
    return (folder.parent if folder.name == DONE else folder).name


def companions(mail: Path) -> list[Path]:
    """The files kept with `mail`: same stem, another suffix (X.http.txt beside X.eml)."""
    stem = mail.name[: -len(MAIL_SUFFIX)] + "."
    try:
        return sorted(p for p in mail.parent.iterdir()
                      if p.name.startswith(stem) and not p.name.endswith(MAIL_SUFFIX) and p.is_file())
    except OSError:
        return []


def move_to_done(mail: Path) -> Path:
    """Move `mail` and its companions into done/ beside it (0700); the mail goes last."""
    folder = mail.parent if mail.parent.name == DONE else mail.parent / DONE
    make_private_dirs(folder)
    for path in [*companions(mail), mail]:
        target = folder / path.name
        if target != path:
            os.replace(path, target)
    return folder


def remove_with_companions(mail: Path) -> None:
    for path in [*companions(mail), mail]:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


@contextlib.contextmanager
def _exclusive(log_dir: Path):
    """An exclusive, non-blocking flock on the log dir for the whole replay (yields False if taken)."""
    try:
        fd = os.open(log_dir, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        yield True                        # no log dir: nothing else can be replaying in it
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- replay

@dataclass(frozen=True)
class Result:
    """What replaying one kept mail came to."""
    code: int | None
    outcome: str
    detail: str = ""


class _Tee(io.TextIOBase):
    """Passes writes on (when `through` is given) and keeps a copy."""

    def __init__(self, through=None):
        self.through, self.kept = through, io.StringIO()

    def write(self, text):
        self.kept.write(text)
        if self.through is not None:
            self.through.write(text)
        return len(text)

    def flush(self):
        if self.through is not None:
            self.through.flush()


def _read_kept(path: Path, read):
    """(read(path), _) or (None, handled): a file gone meanwhile was handled elsewhere."""
    try:
        return read(path), False
    except FileNotFoundError:
        say(path, outcome="gone", detail="no longer there (moved or removed meanwhile)")
        return None, True
    except OSError as error:
        say(path, outcome="unreadable", detail=error.strerror or str(error))
        return None, False


HANDLED, LEFT, STOPPED = "handled", "left", "stopped"


def replay_one(mail: Path, settings, dry_run: bool, force: bool = False) -> str:
    """Replay one kept mail: HANDLED (and, unless dry run, moved to done/), LEFT for the next
    replay, or STOPPED (left, and the run was stopped by SIGTERM or Ctrl-C)."""
    log_dir = Path(settings.log_dir)

    def read(path):
        with open(path, "rb") as stream:
            return read_mail(stream, settings.max_message_bytes)

    raw, handled = _read_kept(mail, read)
    if raw is None:
        return HANDLED if handled else LEFT
    message_id = _message_id(raw.data)
    before = _stashed(log_dir)
    offset = _size(log_dir / LOG_FILE)
    out, err = _Tee(sys.stdout if dry_run else None), _Tee()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            # The envelope is not kept with the mail: its headers (Return-Path, From) decide.
            code = handle(raw, Envelope(), settings, dry_run=dry_run, force=force)
    except Exception as error:   # handle() records its own failures; this is a last guard
        say(mail, exit=os.EX_TEMPFAIL, outcome="crashed", moved="no (kept for the next replay)",
            detail=f"{type(error).__name__}: {error}")
        return LEFT
    result = _result(code, log_dir, offset, message_id, out.kept.getvalue(), err.kept.getvalue(), dry_run)
    not_handled = STOPPED if result.outcome == "interrupted" else LEFT
    if dry_run:
        say(mail, exit=code, outcome=result.outcome, moved="no (dry run)", detail=result.detail)
        return HANDLED if code == os.EX_OK else not_handled
    copies = _new_copies(log_dir, before, raw.data)
    try:
        if code == os.EX_OK:
            for copy in copies:
                if copy.parent.resolve() == mail.parent.resolve():
                    move_to_done(copy)      # keep its record, but not as a mail waiting for replay
            folder = move_to_done(mail)
            moved = sum(copy.parent.resolve() == mail.parent.resolve() for copy in copies)
            say(mail, exit=code, outcome=result.outcome, moved=f"{folder}/",
                copies=f"{moved}-new-moved-to-done" if moved else None, detail=result.detail)
            return HANDLED
        for copy in copies:
            remove_with_companions(copy)    # the original stays the one waiting copy
    except OSError as error:
        what = ("handled but could not be moved to done/" if code == os.EX_OK
                else "the copy the pipe kept during the replay could not be removed")
        say(mail, exit=code, outcome=result.outcome, moved="FAILED",
            detail=f"{what} ({error.strerror}): see to it by hand before the next replay; {result.detail}")
        return LEFT
    say(mail, exit=code, outcome=result.outcome, moved="no (kept for the next replay)",
        copies=f"{len(copies)}-new-removed" if copies else None, detail=result.detail)
    return not_handled


def _message_id(data: bytes) -> str:
    try:
        return read_head(data).message_id
    except Exception:   # the pipe itself copes with any header; this is only for finding the log line
        return ""


def _stashed(log_dir: Path) -> dict[str, set[str]]:
    names = {}
    for kind in STASH_KINDS:
        try:
            names[kind] = set(os.listdir(log_dir / kind))
        except OSError:
            names[kind] = set()
    return names


def _new_copies(log_dir: Path, before: dict[str, set[str]], data: bytes) -> list[Path]:
    """Mails stashed during the replay that are byte for byte the replayed one."""
    copies = []
    for kind, names in _stashed(log_dir).items():
        for name in sorted(names - before.get(kind, set())):
            path = log_dir / kind / name
            if not name.endswith(MAIL_SUFFIX) or name.startswith("."):
                continue
            try:
                if path.stat().st_size == len(data) and path.read_bytes() == data:
                    copies.append(path)
            except OSError:
                pass
    return copies


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


_STATUS = re.compile(r"^\d\.\d\.\d ([a-z][a-z-]*)(?:: (.*))?$")
_DRY = re.compile(r"^# outcome: ([a-z][a-z-]*) \(exit \d+\): ?(.*)$")


def _result(code, log_dir, offset, message_id, out, err, dry_run) -> Result:
    """The outcome of the replay: from its log line, else from what handle() printed."""
    if not dry_run:
        entry = _log_entry(log_dir / LOG_FILE, offset, message_id)
        if entry is not None:
            return Result(code, entry.get("outcome"), entry.fields.get("detail", ""))
    for line in reversed((out if dry_run else "").splitlines() + err.splitlines()):
        match = _DRY.match(line.strip()) or _STATUS.match(line.strip())
        if match:
            return Result(code, match[1], match[2] or "")
    return Result(code, "handled" if code == os.EX_OK else "unknown", "")


def _log_entry(log_file: Path, offset: int, message_id: str):
    """The last line written for this message since `offset` (the last line at all when none matches)."""
    try:
        with open(log_file, "rb") as stream:
            if _size(log_file) >= offset:
                stream.seek(offset)       # else the log was rotated meanwhile: read the new one whole
            text = stream.read().decode("utf-8", "replace")
    except OSError:
        return None
    wanted = as_logged(message_id)
    entries = [e for e in map(parse_line, text.splitlines()) if e is not None]
    mine = [e for e in entries if e.get("message-id") == wanted]
    return (mine or entries)[-1] if entries else None


# --------------------------------------------------------------------------- resend

def resend_one(path: Path, settings, dry_run: bool) -> bool:
    """Send one kept reply; True when it was sent (and moved to done/)."""
    data, handled = _read_kept(path, Path.read_bytes)
    if data is None:
        return handled
    recipient, problem = reply_recipient(data, settings.gateway_address)
    if problem:
        say(path, outcome="refused", detail=problem)
        return False
    mailer = _mailer(settings)
    if dry_run:
        say(path, outcome="would-send", to=recipient, moved="no (dry run)",
            detail=shlex.join(mailer.argv(recipient)))
        return True
    result = mailer.send(data, recipient)
    if not result.sent:
        say(path, outcome=f"not-sent-{result.status}", to=recipient, moved="no", detail=result.detail)
        return False
    try:
        folder = move_to_done(path)
    except OSError as error:
        say(path, outcome="sent", to=recipient, moved="FAILED",
            detail=f"sent, but could not be moved to done/ ({error.strerror}): move it by hand "
                   "or it is sent again")
        return False
    say(path, outcome="sent", to=recipient, moved=f"{folder}/")
    return True


def reply_recipient(data: bytes, gateway_address: str) -> tuple[str, str]:
    """(the one To address, "") of a kept reply, or ("", why it must not be sent)."""

    message = email.message_from_bytes(data)      # compat32: header values as they are written
    if not any(str(v).strip().lower().startswith(LOOP_MARKER_PREFIX) for v in message.get_all("X-Loop") or []):
        return "", "not a reply of this gateway (no X-Loop marker)"
    tos = [value for name, value in message.raw_items() if name.lower() == "to"]
    if len(tos) != 1:
        return "", f"a reply needs exactly one To header, this one has {len(tos)}"
    raw = re.sub(r"\r?\n(?=[ \t])", "", str(tos[0])).strip()
    # compat32 reads header bytes as ASCII with surrogates; a reply to an
    # internationalised address has a UTF-8 To (RFC 6532).
    raw = raw.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    try:
        parsed = default.header_factory("to", raw)
    except (ValueError, TypeError, IndexError):
        return "", "the To header cannot be read safely"
    # A UTF-8 local part is a defect to RFC 5322 alone; RFC 6531 allows it.
    defects = [d for d in parsed.defects if not isinstance(d, NonASCIILocalPartDefect)]
    if any(isinstance(d, HeaderDefect) for d in defects) or len(parsed.addresses) != 1:
        return "", f"the To header must hold exactly one address, it holds {len(parsed.addresses)}"
    # The pipe's own test of an address it may answer; it wrote a UTF-8 address
    # only when its mailer could carry it.
    checked = reply_sender(raw, smtputf8=True)
    if not isinstance(checked, Sender):
        return "", f"To: {checked.replace('From', 'To')}"
    if checked.address.lower() == gateway_address.lower():
        return "", "addressed to the gateway itself"
    return checked.address, ""


def _mailer(settings):
    if hasattr(settings, "null_sender"):
        try:
            return Sendmail(settings.sendmail, null_sender=settings.null_sender)
        except TypeError:
            pass
    return Sendmail(settings.sendmail)


# --------------------------------------------------------------------------- output

def say(path: Path, **fields) -> None:
    """One line: the file, then key=value pairs as in the log (values with spaces quoted)."""
    parts = [str(path)] + [f"{key}={field_value(value)}" for key, value in fields.items()
                           if value is not None and value != ""]

    emit(sys.stdout, " ".join(parts))   # a reader gone (`| head`) must not stop the replay half-way
