"""One message, one straight path:

    read -> parse headers -> guard -> journal -> understand -> act on the website -> reply -> record

The guard includes who really sent it (`stages.s3_auth`, with
TOROKIKI_AUTHSERV_ID): forged mail is held in ``logs/held/`` and goes no
further.  With TOROKIKI_REQUIRE_AUTH=create a response whose sender did not
prove the From is held there too, once understood, and answered so.

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
from typing import TYPE_CHECKING, Callable, ContextManager, NamedTuple, Optional

# Cost tier 1, what every message pays: its headers and the guard.  The later
# tiers are each one import where a message first needs them (tier 2 past the
# guard, 3 to act and reply, 4 to parse the body); the adapters, which load
# filelock and the HTTP and sendmail modules, are built on first use (run.py).
from torokiki_pipe.outcome import Outcome, Stopped, is_temporary
from torokiki_pipe.stages.s1_read import RawMail
from torokiki_pipe.stages.s2_headers import Head, read_head
from torokiki_pipe.stages.s3_guard import Sender, reason_to_ignore, reply_sender
from torokiki_pipe.stages.s4_journal import DONE, JournalBusy
from torokiki_pipe.stages.s8_record import ERRONEOUS, FAILED_SENDS, HELD, IGNORED

if TYPE_CHECKING:
    from torokiki_pipe.config import Config
    from torokiki_pipe.ports import BudgetPort, Clock, JournalPort, MailerPort, RecordsPort, WebsitePort
    from torokiki_pipe.stages.s6_act import Step
    from torokiki_pipe.stages.s7_reply import ReplyContext

# Outcomes whose reply is withheld when the same mail was already refused today.
REFUSALS = (Outcome.INVALID, Outcome.REFUSED, Outcome.TOO_BIG, Outcome.UNVERIFIED)


class Envelope(NamedTuple):
    """What the MTA says about the delivery, besides the message."""
    sender: Optional[str] = None      # Postfix ${sender}; "" is the null sender
    recipient: Optional[str] = None   # Postfix ${recipient}


class Effects(NamedTuple):
    """The adapters the pipeline may touch (their ports: torokiki_pipe/ports.py); the dry run hands harmless ones."""
    website: WebsitePort
    mailer: MailerPort
    records: RecordsPort
    journal: JournalPort
    budget: BudgetPort
    clock: Clock
    # Entered where no signal may cut the run short (the reply's hand-over):
    # from there on, a stop asked for is noted and the run finishes.
    uninterrupted: Callable[[], ContextManager[None]] = nullcontext


class Processed(NamedTuple):
    """What became of one message: the outcome and the lines for the log."""
    outcome: Outcome
    detail: str
    message_id: str = ""
    sender: str = ""
    auth: str = ""       # the verdict on the From (stages.s3_auth), "" when not checked
    command: str = ""
    target: str = ""     # the content the mail answered or fetched
    saved: str = ""      # the new response's URL, only when one was saved


def process(raw: RawMail, envelope: Envelope, config: Config, effects: Effects,
            force: bool = False) -> Processed:
    """`force`: submit again a mail the journal finished without success, or one held (`replay --force`)."""
    head = read_head(raw.data)
    so_far = Processed(Outcome.IGNORED, "", message_id=head.message_id)   # the log line, as far as it is known

    reason = reason_to_ignore(head, envelope.sender, config.gateway_address, raw.data, config.reply_subaddress,
                              envelope.recipient)
    if reason:
        effects.records.stash(IGNORED, {".eml": raw.data}, key=head.digest[:32])
        return so_far._replace(detail=reason, sender=_who(head, envelope))
    sender = answerable_sender(head, effects)
    if not isinstance(sender, Sender):
        effects.records.stash(ERRONEOUS, {".eml": raw.data}, key=head.digest[:32])
        return so_far._replace(outcome=Outcome.UNANSWERABLE, detail=sender, sender=_who(head, envelope))
    so_far = so_far._replace(sender=sender.address)
    notes, unproven = sender.note, ""     # for the log line's detail; why a response would be held
    if config.authserv_ids:               # who really sent it: loaded only when TOROKIKI_AUTHSERV_ID asks
        verdict, held = who_sent(head, sender, config, force)
        so_far = so_far._replace(auth=verdict.kind)
        if held.forged:
            # Neither posted nor answered: an answer would be backscatter to the forged address.
            effects.records.stash(HELD, {".eml": raw.data}, key=head.digest[:32])
            return so_far._replace(outcome=Outcome.FORGED,
                                   detail=f"held in {HELD}/, not posted nor answered: {verdict.reason}")
        notes, unproven = _joined(notes, held.note), held.unproven

    # Cost tier 2, a mail to answer: the subject's grammar, and the journal (its lock).
    from torokiki_pipe.stages.s5_understand import command

    line = command.replying_to(command.read_subject(head.subject), head.in_reply_to, head.references,
                               config.gateway_address, config.site_url,
                               recipients=tuple(filter(None, (envelope.recipient, *head.delivered_to))),
                               subaddress=config.reply_subaddress)
    so_far = so_far._replace(command=line.command)
    try:
        with effects.journal.hold(head.key, head.digest, force=force) as entry:
            done = _answer(raw, head, line, sender, entry, config, effects, so_far, unproven)
            return done._replace(detail=_joined(done.detail, notes)) if notes else done
    except JournalBusy as busy:
        return so_far._replace(outcome=Outcome.BUSY, detail=str(busy))
    except Stopped as stop:
        return so_far._replace(outcome=stop.outcome, detail=stop.detail)


def who_sent(head: Head, sender: Sender, config: Config, force: bool = False):
    """(`s3_auth.Verdict` on the From address, what it means for the mail: `s3_auth.Held`)."""
    from torokiki_pipe.stages import s3_auth

    verdict = s3_auth.verdict(head.auth_results, s3_auth.domain_of(sender.address), config.authserv_ids)
    return verdict, s3_auth.held(verdict, config.require_auth, force)


def _joined(*notes: str) -> str:
    return "; ".join(filter(None, notes))


def answerable_sender(head: Head, effects: Effects) -> Sender | str:
    """The From address a reply may go to, or why there is none (`guard.reply_sender`).

    Whether the mailer carries an internationalised address (SMTPUTF8) is
    asked only for one: the answer may cost a program run (`postconf`).
    """
    sender = reply_sender(head.from_raw, smtputf8=True)
    if not isinstance(sender, Sender) or sender.address.isascii():
        return sender
    carries, why = effects.mailer.smtputf8()
    if carries:
        return sender
    ascii_form = reply_sender(head.from_raw)    # kiri@xn--mchine-bua.example needs no SMTPUTF8
    return ascii_form if isinstance(ascii_form, Sender) else f"{ascii_form} ({why})"


def _answer(raw, head: Head, line, sender: Sender, entry, config: Config, effects: Effects,
            so_far: Processed, unproven: str = "") -> Processed:
    """Under the message's journal lock: resume, or act, then reply exactly once."""
    journal = effects.journal
    if entry.stage == DONE:
        return so_far._replace(outcome=Outcome.DUPLICATE, **_urls(entry),
                               detail=f"already handled ({entry.outcome}: {entry.detail})")
    if entry.owes_reply:
        stored = journal.stored_reply(entry)
        if stored is not None:   # the website step is done: only the reply is owed, byte for byte
            resumed = so_far._replace(outcome=Outcome(entry.outcome), detail=entry.detail, **_urls(entry))
            return _deliver(stored, entry, config, effects, resumed)

    # Cost tier 3, acting and replying: the website exchange as a value, the reply's MIME.
    from torokiki_pipe.stages import s6_act as act, s7_reply as reply

    try:
        step = (act.too_big(head.subject, config.max_message_bytes) if raw.oversize
                else _act(raw, head, line, sender, config, entry.key, effects, unproven))
    except Stopped as stop:
        if stop.outcome is not Outcome.TIMED_OUT:
            raise
        step = act.out_of_time(stop.detail, line, config.site_url)
    if is_temporary(step.outcome):
        entry = journal.failed(entry)
        if journal.failing_for(entry) < config.give_up_after:
            _keep(effects, step, raw, entry.key)   # once per message: the same name at every retry
            return so_far._replace(outcome=step.outcome, detail=step.detail, target=step.target)
        step = act.give_up(step, head.subject, journal.failing_for(entry), config.site_url)
    _keep(effects, step, raw, entry.key)
    so_far = so_far._replace(outcome=step.outcome, detail=step.detail, target=step.target, saved=step.saved)
    if step.reply is None:
        journal.finish(entry, outcome=step.outcome.value, detail=step.detail, url=step.saved, target=step.target)
        return so_far

    withheld, last = _allowance(step, sender, head, raw, entry.key, effects)
    if withheld:
        journal.finish(entry, outcome=step.outcome.value, detail=f"{step.detail}; {withheld}", url=step.saved,
                       target=step.target)
        return so_far._replace(detail=f"{step.detail}; {withheld}")
    note = reply.duration_words(effects.budget.limit.window) if last else None
    message = reply.build(step.reply, reply_context(head, sender, config, effects), last_before_limit=note)
    entry = journal.answer(entry, message, outcome=step.outcome.value, detail=step.detail,
                           url=step.saved, target=step.target, command=line.command, recipient=sender.address)
    return _deliver(message, entry, config, effects, so_far)


def _urls(entry) -> dict:
    """The log line's target and saved URL from a journal entry.

    An entry written before `target` existed holds one URL: the new
    response's when the outcome was "saved", else the content's.
    """
    if entry.target or not entry.url:
        return {"target": entry.target, "saved": entry.url}
    return {"saved": entry.url} if entry.outcome == "saved" else {"target": entry.url}


def reply_context(head: Head, sender: Sender, config: Config, effects: Effects) -> ReplyContext:
    """Who a reply to this mail goes to and what it answers."""
    from torokiki_pipe.stages.s7_reply import ReplyContext

    return ReplyContext(to=sender, gateway_address=config.gateway_address, site_url=config.site_url,
                        message_id=head.message_id, references=head.references,
                        original_subject=head.subject, now=effects.clock.now(),
                        subaddress=config.reply_subaddress)


def _act(raw: RawMail, head: Head, line, sender: Sender, config: Config, key: str, effects: Effects,
         unproven: str = "") -> Step:
    from torokiki_pipe.stages import s6_act as act
    from torokiki_pipe.stages.s5_understand import command

    mail = None
    if command.needs_body(line):
        # Cost tier 4, the body: the full MIME parse, the body grammar, HTML to text.
        from torokiki_pipe.stages.s5_understand import mime

        try:
            mail = mime.parse_mail(raw.data)
        except (ValueError, LookupError, TypeError, IndexError, AttributeError) as error:
            return act.invalid_step(command.Invalid(line.command, (command.Problem(
                f"the mail could not be read ({type(error).__name__}); send it again as a simple mail"),)),
                config.site_url, head.subject)
    return act.perform(command.understand(line, mail, config.site_url), website=effects.website, sender=sender,
                       site_url=config.site_url, subject=head.subject, idempotency_key=f"torokiki-pipe-{key}",
                       caller_id=config.api_caller_id, unproven=unproven)


def _allowance(step: Step, sender: Sender, head: Head, raw: RawMail, key: str,
               effects: Effects) -> tuple[str, bool]:
    """(why no reply goes out although one is due, or ""; whether it is the last one for a while).

    Taken for message `key`: asked again after a kill, it gives the same answer.
    """
    if step.outcome in REFUSALS:
        body = memoryview(raw.data)[head.body_start:]   # no copy of the body
        if not effects.budget.first_time_refused(sender.address, head.subject, body, key):
            return "reply withheld: the same mail was refused and answered today", False
    decision = effects.budget.take(sender.address, key)
    if decision == "silent":
        return "reply withheld: reply limit reached for this address", False
    return "", decision == "last"


def _deliver(message: bytes, entry, config: Config, effects: Effects, so_far: Processed) -> Processed:
    journal = effects.journal
    with effects.uninterrupted():
        entry = journal.sending(entry)
        result = effects.mailer.send(message, entry.recipient)
        if result.sent:
            try:
                journal.finish(entry)
            except OSError as error:
                # Sendmail has the reply: the message is handled.  A retry would answer twice.
                return so_far._replace(detail=f"{so_far.detail}; journal not updated ({error.strerror or error})")
            return so_far
    if result.status == "temporary":
        entry = journal.failed(entry)
        if journal.failing_for(entry) < config.give_up_after:
            return so_far._replace(outcome=Outcome.SEND_DEFERRED,
                                   detail=f"reply not handed over ({result.detail}); {so_far.detail}")
    effects.records.stash(FAILED_SENDS, {".eml": message}, key=entry.key)
    journal.finish(entry, detail=f"{entry.detail}; reply kept in {FAILED_SENDS}/")
    return so_far._replace(outcome=Outcome.REPLY_FAILED,
                           detail=f"reply could not be sent ({result.detail}); {so_far.detail}")


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
