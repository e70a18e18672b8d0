"""The command line: the one place where a run becomes an exit code.

``torokiki-pipe [--config FILE] [--sender ADDR] [--recipient ADDR] [--dry-run] [FILE]``
reads one message (FILE or stdin), processes it, and exits with the code
`outcome.exit_code` gives.  Whatever happens, no traceback reaches stderr:
an unexpected error keeps the raw mail in ``logs/crashed/``, writes the
traceback to the log file and defers the message (exit 75); stderr gets one
line that starts with an RFC 3463 enhanced status code, which Postfix quotes.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from datetime import datetime, timezone

from . import __version__, config as configuration
from .outcome import Outcome, exit_code, status_line
from .pipeline import Effects, Envelope, Processed, process
from .read import read_mail
from .records import CRASHED, Records


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # wrong usage is EX_USAGE (64), not argparse's 2
        self.print_usage(sys.stderr)
        self.exit(os.EX_USAGE, f"{self.prog}: {message}\n")


def parse_args(argv):
    parser = _Parser(prog="torokiki-pipe",
                     description="Torokiki's email gateway: reads one RFC 822 message (FILE or stdin), "
                                 "saves what it asks for on the website, answers the sender, and exits "
                                 "0 (handled) or 75 (try again later).")
    parser.add_argument("file", nargs="?", metavar="FILE", help="the message; default: standard input")
    parser.add_argument("--config", metavar="FILE", help="env file (default: $TOROKIKI_PIPE_CONFIG, else ./.env)")
    parser.add_argument("--sender", metavar="ADDR", help="envelope sender (Postfix ${sender}); empty for a bounce")
    parser.add_argument("--recipient", metavar="ADDR", help="envelope recipient (Postfix ${recipient})")
    parser.add_argument("--dry-run", action="store_true",
                        help="change nothing: no POST, no mail sent, nothing under logs/; "
                             "print the request and the reply instead")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser.parse_args(argv)


# Administrator's commands: `torokiki-pipe NAME ...`; the bare command stays the pipe.
SUBCOMMANDS = {"check": "torokiki_pipe.check", "replay": "torokiki_pipe.replay",
               "report": "torokiki_pipe.report"}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if argv and argv[0] in SUBCOMMANDS:
            from importlib import import_module

            return import_module(SUBCOMMANDS[argv[0]]).main(argv[1:])
        return _run(parse_args(argv))
    except SystemExit as done:   # --help, --version, usage errors
        return done.code if isinstance(done.code, int) else os.EX_USAGE
    except BaseException as error:  # the last guard: never a traceback on stderr
        _say(Outcome.CRASHED, f"{type(error).__name__} before the message was read")
        return exit_code(Outcome.CRASHED)


def _run(args) -> int:
    started = time.monotonic()
    try:
        settings = configuration.load(args.config)
    except configuration.ConfigError as error:
        _say(Outcome.CONFIG_ERROR, str(error))
        return exit_code(Outcome.CONFIG_ERROR)
    try:
        raw = _read(args.file, settings.max_message_bytes)
    except OSError as error:
        _say(Outcome.USAGE if args.file else Outcome.CRASHED, f"cannot read the message: {error.strerror}")
        return os.EX_NOINPUT if args.file else exit_code(Outcome.CRASHED)
    envelope = Envelope(sender=args.sender, recipient=args.recipient)
    return handle(raw, envelope, settings, dry_run=args.dry_run, started=started)


def handle(raw, envelope: Envelope, settings, *, dry_run: bool = False, started: float | None = None) -> int:
    """Process one message already read, record it, and return its exit code.

    The one path for the pipe and for `replay`.
    """
    started = time.monotonic() if started is None else started
    if dry_run:
        from .dryrun import dry_run_effects

        effects = dry_run_effects(settings, sys.stdout)
    else:
        effects = _effects(settings)
    records = effects.records
    try:
        done = process(raw, envelope, settings, effects)
    except OSError as error:
        # Writing logs/ failed (disk full, permissions): try again later.
        done = Processed(Outcome.LOGS_UNWRITABLE, f"cannot write {settings.log_dir}: {error.strerror or error}")
    except Exception:
        done = _crashed(records, raw.data)
    code = exit_code(done.outcome)
    try:
        records.append_line(log_line(done, code, time.monotonic() - started))
    except OSError as error:
        print(f"torokiki-pipe: cannot write the log file: {error.strerror}", file=sys.stderr)
    if code != os.EX_OK:
        _say(done.outcome, done.detail)
    elif dry_run:
        print(f"# outcome: {done.outcome.value} (exit {code}): {done.detail}")
    return code


def _effects(settings) -> Effects:
    from .sendmail import Sendmail
    from .website import Website

    return Effects(
        website=Website(settings.api_url, settings.api_key, settings.http_timeout, settings.site_url),
        mailer=Sendmail(settings.sendmail),
        records=Records(settings.log_dir),
        now=lambda: datetime.now(timezone.utc),
    )


def _read(file, limit):
    if file and file != "-":
        with open(file, "rb") as stream:
            return read_mail(stream, limit)
    return read_mail(sys.stdin.buffer, limit)


def _crashed(records, data: bytes) -> Processed:
    trace = traceback.format_exc()
    kept = "(not kept)"
    try:
        kept = str(records.stash(CRASHED, {".eml": data}))
        records.append_line("crash traceback follows\n" + trace.rstrip())
    except OSError:
        pass
    last = trace.strip().splitlines()[-1][:200]
    return Processed(Outcome.CRASHED, f"internal error, mail kept as {kept}: {last}")


def log_line(done: Processed, code: int, seconds: float) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    fields = [("message-id", done.message_id), ("sender", done.sender), ("command", done.command),
              ("url", done.url), ("outcome", done.outcome.value), ("exit", str(code)),
              ("duration", f"{seconds:.3f}s"), ("detail", done.detail)]
    return stamp + " " + " ".join(f"{k}={_quote(v)}" for k, v in fields)


def _quote(value: str) -> str:
    value = " ".join(str(value).split())[:500] or "-"
    return value if not any(c in value for c in ' "=') else '"' + value.replace('"', "'") + '"'


def _say(outcome: Outcome, detail: str) -> None:
    print(status_line(outcome, detail), file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
