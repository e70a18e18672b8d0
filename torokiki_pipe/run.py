"""One run of the pipe: one message read, processed, recorded, and its exit code.

`run_pipe` is the pipe command after its arguments are parsed; `handle` is
the part that `replay` shares: build the adapters (`real_effects`, or the dry
run's), process the message with the run's signals and time limit in force
(`RunSignals`), turn what escaped into an outcome (an unexpected error is a
crash: the mail kept, the traceback logged, exit 75, and after `POISON_AFTER`
identical crashes the sender is told once: the poison policy), write the one
log line, and say the one stderr line of a non-zero exit.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from contextlib import contextmanager, nullcontext

from torokiki_pipe import config as configuration
from torokiki_pipe.adapters.clock import SystemClock
from torokiki_pipe.adapters.records import Records
from torokiki_pipe.outcome import Outcome, Stopped, exit_code, say
from torokiki_pipe.pipeline import Effects, Envelope, Processed, process, reply_context
from torokiki_pipe.stages.s1_read import drain, read_mail
from torokiki_pipe.stages.s8_record import CRASHED, STAMP_FORMAT, log_line


def run_pipe(args) -> int:
    """The pipe command, its arguments parsed: the configuration, the message, then `handle`."""
    started = time.monotonic()
    signals = RunSignals()
    signals.install()          # from the first byte read: a stop always ends with a status line
    try:
        try:
            settings = configuration.load(args.config)
        except configuration.ConfigError as error:
            if not args.file or args.file == "-":
                drain(sys.stdin.buffer)   # so the MTA's write does not fail with a broken pipe
            say(Outcome.CONFIG_ERROR, str(error))
            return exit_code(Outcome.CONFIG_ERROR)
        try:
            raw = _read(args.file, settings.max_message_bytes)
        except OSError as error:
            say(Outcome.USAGE if args.file else Outcome.CRASHED, f"cannot read the message: {error.strerror}")
            return os.EX_NOINPUT if args.file else exit_code(Outcome.CRASHED)
        envelope = Envelope(sender=args.sender, recipient=args.recipient)
        return handle(raw, envelope, settings, dry_run=args.dry_run, started=started, signals=signals)
    except Stopped as stop:    # before the message was read whole: nothing was done
        say(stop.outcome, stop.detail)
        return exit_code(stop.outcome)
    finally:
        signals.restore()
        # The run is over and its exit code decided: a stop from here to the exit changes nothing.
        for number in RunSignals.STOPS:
            signal.signal(number, signal.SIG_IGN)


def handle(raw, envelope: Envelope, settings, *, dry_run: bool = False, started: float | None = None,
           effects: Effects | None = None, force: bool = False, signals: RunSignals | None = None) -> int:
    """Process one message already read, record it, and return its exit code.

    The one path for the pipe and for `replay`; `effects` replaces the real
    adapters (the dry run's, or a test's); `force` is `replay --force`.
    """
    started = time.monotonic() if started is None else started
    own_signals = signals is None
    signals = RunSignals() if signals is None else signals
    if effects is None and dry_run:
        from torokiki_pipe.adapters.dryrun import dry_run_effects

        effects = dry_run_effects(settings, sys.stdout)
    elif effects is None:
        effects = real_effects(settings, signals.uninterrupted)
    records = effects.records
    _warn_world_readable(settings, effects)
    if own_signals:
        signals.install()
    try:
        done = process(raw, envelope, settings, effects, force=force)
    except Stopped as stop:
        done = Processed(stop.outcome, stop.detail, message_id=_identify(raw, envelope)[0])
    except OSError as error:
        # Writing logs/ failed (disk full, permissions): try again later.
        done = Processed(Outcome.LOGS_UNWRITABLE, f"cannot write {settings.log_dir}: {error.strerror or error}")
    except Exception:
        done = _crashed(raw, envelope, settings, effects)
    finally:
        signals.finishing = True   # recording what happened is never cut off
        if own_signals:
            signals.restore()
    if signals.noted:
        done = done._replace(detail=f"{done.detail}; {signals.noted}")
    code = exit_code(done.outcome)
    fields = {"message-id": done.message_id, "sender": done.sender, "auth": done.auth, "command": done.command,
              "target": done.target, "saved": done.saved,
              "outcome": done.outcome.value, "exit": code, "duration": f"{time.monotonic() - started:.3f}s",
              "detail": done.detail}
    line = log_line(effects.clock.now().strftime(STAMP_FORMAT), fields)
    if settings.api_key and settings.api_key in line:   # the last guard: never the key in a log line
        line = line.replace(settings.api_key, "<redacted>")
    unrecorded = ""
    try:
        records.append_line(line)
    except OSError as error:
        unrecorded = f"cannot write the log in {settings.log_dir}: {error.strerror or error}"
    if settings.syslog and not dry_run or unrecorded:
        _to_syslog(line, code, settings.syslog_socket)     # also the one record left when logs/ cannot be written
    if done.outcome not in DECIDED_BY_HEADERS and not dry_run:   # those runs never load the journal
        _sweep(settings, effects)
    if code != os.EX_OK:
        say(done.outcome, f"{done.detail}; {unrecorded}" if unrecorded else done.detail)
    elif dry_run:
        print(f"# outcome: {done.outcome.value} (exit {code}): {done.detail}")
    return code


# Mail the guard settles from its headers: no journal, no website, no reply.
DECIDED_BY_HEADERS = (Outcome.IGNORED, Outcome.UNANSWERABLE)

# Far below Postfix's command_time_limit (1000 s): a pipe Postfix kills is
# bounced, not retried, so we stop ourselves first and ask for a retry.
RUN_TIME_LIMIT = 600


class RunSignals:
    """SIGTERM, SIGINT and the run's time limit (SIGALRM) end the run as `Stopped`.

    Once the reply's hand-over has begun (`uninterrupted`), the run only
    finishes: a signal then is noted for the log line, never raised, so
    nothing is cut off between "sendmail took it" and "the journal knows".
    """

    STOPS = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "SIGINT"}

    def __init__(self):
        self.finishing = False
        self.noted = ""
        self._previous: dict = {}

    def install(self) -> None:
        for number in (*self.STOPS, signal.SIGALRM):
            self._previous[number] = signal.signal(number, self._arrived)
        signal.alarm(RUN_TIME_LIMIT)

    def restore(self) -> None:
        signal.alarm(0)
        for number, previous in self._previous.items():
            signal.signal(number, previous)
        self._previous.clear()

    @contextmanager
    def uninterrupted(self):
        self.finishing = True       # from here on the run finishes, whatever arrives
        yield

    def _arrived(self, number, frame):
        if number == signal.SIGALRM:
            outcome, detail = Outcome.TIMED_OUT, f"the run took longer than {RUN_TIME_LIMIT} s"
        else:
            outcome, detail = Outcome.INTERRUPTED, f"stopped by {self.STOPS[number]} before the work was done"
        if self.finishing:
            self.noted = f"{detail.split(' before')[0]} while the reply was handed over: finished first"
            return
        raise Stopped(outcome, detail)


def real_effects(settings, uninterrupted=None) -> Effects:
    """The adapters of a real run, one clock for all; each is built (and its library loaded) on first use."""
    clock = SystemClock()
    records = Records(settings.log_dir, clock)

    def website():
        from torokiki_pipe.adapters.website import Website
        return Website(settings.api_url, settings.api_key, settings.http_timeout, settings.site_url)

    def mailer():
        from torokiki_pipe.adapters.sendmail import Sendmail
        return Sendmail(settings.sendmail, null_sender=settings.null_sender, smtputf8=settings.smtputf8)

    def journal():
        from torokiki_pipe.adapters.journal import Journal
        return Journal(records.journal_dir, settings.journal_expire, clock=clock)

    def budget():
        from torokiki_pipe.adapters.reply_budget import ReplyBudget
        return ReplyBudget(records.counters_dir, settings.reply_limit, clock=clock)

    return Effects(website=BuiltOnFirstUse(website), mailer=BuiltOnFirstUse(mailer), records=records,
                   journal=BuiltOnFirstUse(journal), budget=BuiltOnFirstUse(budget),
                   clock=clock, uninterrupted=uninterrupted or nullcontext)


def _sweep(settings, effects: Effects) -> None:
    """Housekeeping, at most once an hour across all runs: expired state and leftovers go."""
    try:
        if effects.records.sweep_due():
            effects.journal.expire()
            effects.budget.expire()
            effects.records.sweep()
    except OSError:
        pass   # the next run's sweep tries again


class BuiltOnFirstUse:
    """Stands for an adapter until its first use, then builds it.

    Mail decided from its headers alone (ignored mail above all) so never
    loads the HTTP client, the journal's lock or the sendmail adapter: at one
    process per message, every module imported is paid for by every message.
    """

    def __init__(self, build):
        self._build = build
        self._built = None

    def __getattr__(self, name):
        if self._built is None:
            self._built = self._build()
        return getattr(self._built, name)


def _read(file, limit):
    if file and file != "-":
        with open(file, "rb") as stream:
            return read_mail(stream, limit)
    return read_mail(sys.stdin.buffer, limit)


POISON_AFTER = 3   # the same crash this often on one message: stop retrying it


def _crashed(raw, envelope, settings, effects) -> Processed:
    """Keep the mail (once) and the traceback; defer, unless this message keeps crashing the same way."""
    import hashlib
    import traceback

    trace = traceback.format_exc()
    if settings.api_key:
        # An exception's text may quote what it was handed, a request header among it.
        from torokiki_pipe.adapters.website import Redactor

        trace = Redactor(settings.api_key).text(trace)
    where = traceback.extract_tb(sys.exc_info()[2])[-1]
    signature = f"{type(sys.exc_info()[1]).__name__} at {os.path.basename(where.filename)}:{where.lineno}"
    message_id, sender = _identify(raw, envelope)
    digest = hashlib.sha256(raw.data).hexdigest()
    records, kept = effects.records, "(not kept)"
    try:
        crash = effects.journal.crashed(digest, signature)
    except OSError:
        crash = None
    if crash is not None and crash.answered:
        # Told once already that it cannot be processed: finished, not answered again.
        return Processed(Outcome.DUPLICATE, f"{signature} again; the sender was already told it cannot be processed",
                         message_id=message_id, sender=sender)
    try:
        kept = str(records.stash(CRASHED, {".eml": raw.data}, key=digest[:32]))
        records.append_line(f"crash traceback follows ({signature})\n" + trace.rstrip())
    except OSError:
        pass
    if crash is not None and crash.times >= POISON_AFTER:
        answered = _answer_poisoned(raw, envelope, settings, effects, key=digest[:32])
        try:
            effects.journal.crash_answered(digest)
        except OSError:
            pass
        return Processed(Outcome.POISONED, f"{signature} {crash.times} times; {answered}; mail kept as {kept}",
                         message_id=message_id, sender=sender)
    return Processed(Outcome.CRASHED, f"internal error ({signature}), mail kept as {kept}",
                     message_id=message_id, sender=sender)


def _identify(raw, envelope) -> tuple[str, str]:
    """Best effort: which message crashed, and from whom, for the log line."""
    try:
        from torokiki_pipe.stages.s2_headers import read_head

        head = read_head(raw.data)
    except Exception:
        return "", envelope.sender or ""
    return head.message_id, (envelope.sender if envelope.sender is not None else head.from_)[:200]


def _warn_world_readable(settings, effects: Effects) -> None:
    """Warn once (per config file change) that others can read the API key."""
    if settings.source is None or not configuration.world_readable(settings.source):
        return
    marker = settings.log_dir / ".warned-world-readable"
    try:
        if marker.exists() and marker.stat().st_mtime >= settings.source.stat().st_mtime:
            return
        stamp = effects.clock.now().strftime(STAMP_FORMAT)
        effects.records.append_line(f"{stamp} warning: {settings.source} is readable by every user and holds "
                                    f"the API key; chmod 600 it")
        marker.touch(mode=0o600)
    except OSError:
        pass


def _to_syslog(line: str, code: int, path: str) -> None:
    # Our own socket writer, not the syslog module: its socket is glibc's fixed /dev/log.
    from torokiki_pipe.adapters import syslogger

    syslogger.send(path, line.split(" ", 1)[1], syslogger.LOG_INFO if code == os.EX_OK else syslogger.LOG_WARNING)


def _answer_poisoned(raw, envelope: Envelope, config, effects: Effects, key: str) -> str:
    """Tell the sender that their mail keeps failing, if they may be answered at all.

    Called after the gateway crashed on this mail again and again; it must not
    crash itself, so it only uses the header stages, and says what it did.
    The answer counts against the sender's reply limit, for message `key`.
    """
    try:
        from torokiki_pipe.stages.s2_headers import read_head
        from torokiki_pipe.pipeline import answerable_sender
        from torokiki_pipe.stages.s3_guard import Sender, reason_to_ignore
        from torokiki_pipe.stages.s7_reply import Reply, build

        head = read_head(raw.data)
        if reason_to_ignore(head, envelope.sender, config.gateway_address, raw.data, config.reply_subaddress,
                            envelope.recipient):
            return "not answered (automatic mail)"
        sender = answerable_sender(head, effects)
        if not isinstance(sender, Sender):
            return f"not answered ({sender})"
        if effects.budget.take(sender.address, key) == "silent":
            return "not answered (reply limit reached for this address)"
        reply = Reply("poisoned.txt", {"subject": head.subject or "(no subject)"})
        with effects.uninterrupted():
            result = effects.mailer.send(build(reply, reply_context(head, sender, config, effects)),
                                         sender.address)
        return "sender answered" if result.sent else f"answer not sent ({result.detail})"
    except Exception as error:  # the last resort must not become the next crash
        return f"not answered ({type(error).__name__})"
