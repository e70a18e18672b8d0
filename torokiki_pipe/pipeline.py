"""One message, one straight path:

    read -> parse headers -> guard -> journal -> understand -> act on the website -> reply -> record

`process` is handed the raw mail, the envelope, the configuration and the
adapters (`Effects`) that touch the world; it returns a `Processed` value and
never decides an exit code (that is `outcome.exit_code`).  The body is parsed
only when the command needs it, so ignored mail and ``help`` are decided from
the headers alone.

Exactly once: everything after the guard runs under the message's journal
lock.  A message already handled is a duplicate; one whose website step is
done but whose reply was not handed over only has its stored reply sent.
The reply is stored, and its allowance (reply limit, once-a-day refusal)
taken for this message, before it is handed over; the start of the hand-over
and its end are recorded on the disk, and no signal stops the run between
them (`Effects.uninterrupted`).  Once sendmail took the reply, the message is
handled, whatever fails to be written afterwards.

A run is stopped early only by `Stopped`, which the process's signal handlers
raise (SIGTERM, the run's time limit): outside the hand-over it ends the run
with its outcome (exit 75); the time limit counts as a failure of the message,
so that a website that never answers is given up on like one that is down.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import InitVar, dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Callable, ContextManager, Optional

from torokiki_pipe.stages.s3_guard import Sender, reason_to_ignore, reply_sender
from torokiki_pipe.stages.s2_headers import Head, read_head
from torokiki_pipe.outcome import Outcome, is_temporary
from torokiki_pipe.stages.s1_read import RawMail
from torokiki_pipe.adapters.clock import SystemClock
from torokiki_pipe.adapters.records import ERRONEOUS, FAILED_HTTPS, FAILED_SENDS, IGNORED

if TYPE_CHECKING:
    from torokiki_pipe.stages.s6_act import Step
    from torokiki_pipe.config import Config
    from torokiki_pipe.ports import BudgetPort, Clock, JournalPort, MailerPort, RecordsPort, WebsitePort
    from torokiki_pipe.stages.s5_understand.command import Request

# Outcomes whose reply is withheld when the same mail was already refused today.
REFUSALS = (Outcome.INVALID, Outcome.REFUSED, Outcome.TOO_BIG)


@dataclass(frozen=True)
class Envelope:
    """What the MTA says about the delivery, besides the message."""
    sender: Optional[str] = None      # Postfix ${sender}; "" is the null sender
    recipient: Optional[str] = None   # Postfix ${recipient}


@dataclass(frozen=True)
class Effects:
    """The adapters the pipeline may touch (their ports: torokiki_pipe/ports.py); the dry run hands harmless ones."""
    website: WebsitePort
    mailer: MailerPort
    records: RecordsPort
    journal: JournalPort
    budget: BudgetPort
    clock: Clock = field(default_factory=SystemClock)
    # Entered where no signal may cut the run short (the reply's hand-over):
    # from there on, a stop asked for is noted and the run finishes.
    uninterrupted: Callable[[], ContextManager[None]] = field(default=nullcontext)
    # The clock's earlier form, a function giving an aware datetime, is still
    # taken (it becomes the clock) until every caller passes `clock=`.
    now: InitVar[Optional[Callable[[], datetime]]] = None

    def __post_init__(self, now: Optional[Callable[[], datetime]]) -> None:
        if now is not None:
            from torokiki_pipe.adapters.clock import CallableClock

            object.__setattr__(self, "clock", CallableClock(now))


class Stopped(BaseException):
    """Raised by the process's signal handlers to end the run early (never by the pipeline).

    A BaseException, so that no ``except Exception`` mistakes it for a crash.
    """

    def __init__(self, outcome: Outcome, detail: str):
        super().__init__(detail)
        self.outcome, self.detail = outcome, detail


@dataclass(frozen=True)
class Processed:
    """What became of one message: the outcome and the lines for the log."""
    outcome: Outcome
    detail: str
    message_id: str = ""
    sender: str = ""
    command: str = ""
    url: str = ""


def process(raw: RawMail, envelope: Envelope, config: Config, effects: Effects,
            force: bool = False) -> Processed:
    """`force`: submit again a mail the journal finished without success (`replay --force`)."""
    head = read_head(raw.data)
    seen = Processed(Outcome.IGNORED, "", message_id=head.message_id)

    reason = reason_to_ignore(head, envelope.sender, config.gateway_address, raw.data)
    if reason:
        effects.records.stash(IGNORED, {".eml": raw.data}, key=head.digest[:32])
        return replace(seen, detail=reason, sender=_who(head, envelope))
    sender = reply_sender(head.from_raw)
    if not isinstance(sender, Sender):
        effects.records.stash(ERRONEOUS, {".eml": raw.data}, key=head.digest[:32])
        return replace(seen, outcome=Outcome.UNANSWERABLE, detail=sender, sender=_who(head, envelope))

    # Past the guard the mail will be answered: only now load what answering
    # takes, so that ignored mail is decided from the headers at the least cost.
    from torokiki_pipe.stages.s5_understand.command import read_subject

    line = read_subject(head.subject)
    seen = replace(seen, sender=sender.address, command=line.command)
    from torokiki_pipe.adapters.journal import JournalBusy

    try:
        with effects.journal.hold(head.key, head.digest, force=force) as entry:
            return _answer(raw, head, line, sender, entry, config, effects, seen)
    except JournalBusy as busy:
        return replace(seen, outcome=Outcome.BUSY, detail=str(busy))
    except Stopped as stop:
        return replace(seen, outcome=stop.outcome, detail=stop.detail)


def _answer(raw, head: Head, line, sender: Sender, entry, config: Config, effects: Effects,
            seen: Processed) -> Processed:
    """Under the message's journal lock: resume, or act, then reply exactly once."""
    journal = effects.journal
    if entry.stage == "done":
        return replace(seen, outcome=Outcome.DUPLICATE, url=entry.url,
                       detail=f"already handled ({entry.outcome}: {entry.detail})")
    if entry.owes_reply:
        stored = journal.stored_reply(entry)
        if stored is not None:   # the website step is done: only the reply is owed, byte for byte
            resumed = replace(seen, outcome=Outcome(entry.outcome), detail=entry.detail, url=entry.url)
            return _deliver(stored, entry, config, effects, resumed)

    try:
        step = _too_big(head, config) if raw.oversize else _act(raw, head, line, sender, config, entry.key, effects)
    except Stopped as stop:
        if stop.outcome is not Outcome.TIMED_OUT:
            raise
        step = _out_of_time(stop, line, config)
    if is_temporary(step.outcome):
        entry = journal.failed(entry)
        if journal.failing_for(entry) < config.give_up_after:
            _keep(effects, step, raw, entry.key)   # once per message: the same name at every retry
            return replace(seen, outcome=step.outcome, detail=step.detail, url=step.url)
        step = _give_up(step, head, journal.failing_for(entry), config.site_url)
    _keep(effects, step, raw, entry.key)
    seen = replace(seen, outcome=step.outcome, detail=step.detail, url=step.url)
    if step.reply is None:
        journal.finish(entry, outcome=step.outcome.value, detail=step.detail, url=step.url)
        return seen

    withheld, last = _allowance(step, sender, head, raw, entry.key, effects)
    if withheld:
        journal.finish(entry, outcome=step.outcome.value, detail=f"{step.detail}; {withheld}", url=step.url)
        return replace(seen, detail=f"{step.detail}; {withheld}")
    from torokiki_pipe.stages.s7_reply import build

    note = _duration_words(effects.budget.limit.window) if last else None
    message = build(step.reply, _context(head, sender, config, effects), last_before_limit=note)
    entry = journal.answer(entry, message, outcome=step.outcome.value, detail=step.detail,
                           url=step.url, command=line.command, recipient=sender.address)
    return _deliver(message, entry, config, effects, seen)


def _context(head: Head, sender: Sender, config: Config, effects: Effects):
    from torokiki_pipe.stages.s7_reply import ReplyContext

    return ReplyContext(to=sender, gateway_address=config.gateway_address, site_url=config.site_url,
                        message_id=head.message_id, references=head.references,
                        original_subject=head.subject, now=effects.clock.now())


def _act(raw: RawMail, head: Head, line, sender: Sender, config: Config, key: str, effects: Effects) -> Step:
    from torokiki_pipe.stages.s6_act import invalid_step, perform
    from torokiki_pipe.stages.s5_understand.command import HelpRequest, Invalid, Problem, needs_body, understand

    if not needs_body(line):
        request: Request = HelpRequest()
    else:
        from torokiki_pipe.stages.s5_understand.mime import parse_mail   # the full parse, only for mail that needs it

        try:
            mail = parse_mail(raw.data)
        except (ValueError, LookupError, TypeError, IndexError, AttributeError) as error:
            return invalid_step(Invalid(line.command, (Problem(
                f"the mail could not be read ({type(error).__name__}); send it again as a simple mail"),)),
                config.site_url, head.subject)
        request = understand(line, mail, config.site_url)
    return perform(request, website=effects.website, sender=sender, site_url=config.site_url,
                   subject=head.subject, idempotency_key=f"torokiki-pipe-{key}",
                   caller_id=config.api_caller_id)


def _out_of_time(stop: Stopped, line, config: Config) -> Step:
    """Out of time while acting: a failure like any other, so the give-up clock runs."""
    from torokiki_pipe.stages.s6_act import Step
    from torokiki_pipe.stages.s5_understand.urls import BadUrl, parse_content_url

    try:
        url = parse_content_url(line.argument, config.site_url).canonical(config.site_url)
    except BadUrl:
        url = ""
    # A POST cut short may have reached the website.
    return Step(Outcome.TIMED_OUT, stop.detail, url=url, maybe_saved=line.command == "create-response-to")


def _too_big(head: Head, config: Config) -> Step:
    from torokiki_pipe.stages.s6_act import Step
    from torokiki_pipe.stages.s7_reply import Reply

    limit = f"{config.max_message_bytes / (1024 * 1024):g} MB"
    return Step(Outcome.TOO_BIG, f"larger than {config.max_message_bytes} bytes",
                Reply("too-big.txt", {"subject": head.subject or "(no subject)", "limit": limit}),
                keep=ERRONEOUS)


def _give_up(step: Step, head: Head, waited: float, site_url: str) -> Step:
    from torokiki_pipe.stages.s6_act import Step
    from torokiki_pipe.stages.s7_reply import Reply

    # Say what is known: a POST whose answer was unclear may have been stored; a refused
    # API key is ours to fix, and its wording (fix TOROKIKI_API_KEY) is not for the sender.
    if step.outcome is Outcome.KEY_REFUSED:
        template = "gave-up-ours.txt"
    else:
        template = "gave-up-unsure.txt" if step.maybe_saved else "gave-up.txt"
    values = {"subject": head.subject or "(no subject)", "detail": step.detail, "waited": _duration_words(waited),
              "url": step.url or site_url}
    return Step(Outcome.GAVE_UP, f"gave up after {_duration_words(waited)}: {step.detail}",
                Reply(template, values), keep=FAILED_HTTPS, exchange=step.exchange, url=step.url,
                maybe_saved=step.maybe_saved)


def _allowance(step: Step, sender: Sender, head: Head, raw: RawMail, key: str,
               effects: Effects) -> tuple[str, bool]:
    """(why no reply goes out although one is due, or ""; whether it is the last one for a while).

    Taken for message `key`: asked again after a kill, it gives the same answer.
    """
    from torokiki_pipe.adapters.reply_budget import LAST, SILENT

    if step.outcome in REFUSALS:
        body = memoryview(raw.data)[head.body_start:]   # no copy of the body
        if not effects.budget.first_time_refused(sender.address, head.subject, body, key):
            return "reply withheld: the same mail was refused and answered today", False
    decision = effects.budget.take(sender.address, key)
    if decision == SILENT:
        return "reply withheld: reply limit reached for this address", False
    return "", decision == LAST


def _deliver(message: bytes, entry, config: Config, effects: Effects, seen: Processed) -> Processed:
    journal = effects.journal
    with effects.uninterrupted():
        entry = journal.sending(entry)
        result = effects.mailer.send(message, entry.recipient)
        if result.sent:
            try:
                journal.finish(entry)
            except OSError as error:
                # Sendmail has the reply: the message is handled.  A retry would answer twice.
                return replace(seen, detail=f"{seen.detail}; journal not updated ({error.strerror or error})")
            return seen
    if result.status == "temporary":
        entry = journal.failed(entry)
        if journal.failing_for(entry) < config.give_up_after:
            return replace(seen, outcome=Outcome.SEND_DEFERRED,
                           detail=f"reply not handed over ({result.detail}); {seen.detail}")
    effects.records.stash(FAILED_SENDS, {".eml": message}, key=entry.key)
    journal.finish(entry, detail=f"{entry.detail}; reply kept in {FAILED_SENDS}/")
    return replace(seen, outcome=Outcome.REPLY_FAILED,
                   detail=f"reply could not be sent ({result.detail}); {seen.detail}")


def _keep(effects: Effects, step: Step, raw: RawMail, key: str) -> None:
    if step.keep:
        files = {".eml": raw.data}
        if step.exchange:
            files[".http.txt"] = step.exchange.encode("utf-8", "replace")
        effects.records.stash(step.keep, files, key=key)


def _who(head: Head, envelope: Envelope) -> str:
    if envelope.sender is not None:
        return envelope.sender or "<>"
    return head.from_[:200]


def _duration_words(seconds: float) -> str:
    for size, word in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds >= size:
            count = round(seconds / size)
            return f"{count} {word}" + ("" if count == 1 else "s")
    return f"{int(seconds)} seconds"


def answer_poisoned(raw: RawMail, envelope: Envelope, config: Config, effects: Effects, key: str) -> str:
    """Tell the sender that their mail keeps failing, if they may be answered at all.

    Called after the gateway crashed on this mail again and again; it must not
    crash itself, so it only uses the header stages, and says what it did.
    The answer counts against the sender's reply limit, for message `key`.
    """
    try:
        from torokiki_pipe.adapters.reply_budget import SILENT
        from torokiki_pipe.stages.s7_reply import Reply, build

        head = read_head(raw.data)
        if reason_to_ignore(head, envelope.sender, config.gateway_address, raw.data):
            return "not answered (automatic mail)"
        sender = reply_sender(head.from_raw)
        if not isinstance(sender, Sender):
            return f"not answered ({sender})"
        if effects.budget.take(sender.address, key) == SILENT:
            return "not answered (reply limit reached for this address)"
        reply = Reply("poisoned.txt", {"subject": head.subject or "(no subject)"})
        with effects.uninterrupted():
            result = effects.mailer.send(build(reply, _context(head, sender, config, effects)),
                                         sender.address)
        return "sender answered" if result.sent else f"answer not sent ({result.detail})"
    except Exception as error:  # the last resort must not become the next crash
        return f"not answered ({type(error).__name__})"
