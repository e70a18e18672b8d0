"""One message, one straight path:

    read -> parse headers -> guard -> understand -> act on the website -> reply -> record

`process` is handed the raw mail, the envelope, the configuration and the
adapters (`Effects`) that touch the world; it returns a `Processed` value and
never decides an exit code (that is `outcome.exit_code`).  The body is parsed
only when the command needs it, so ignored mail and ``help`` are decided from
the headers alone.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Callable, Optional

from .actions import Step, invalid_step, perform
from .command import HelpRequest, Invalid, Problem, needs_body, read_subject, understand
from .config import Config
from .guard import Sender, reason_to_ignore, reply_sender
from .headers import Head, read_head
from .outcome import Outcome
from .read import RawMail
from .records import ERRONEOUS, FAILED_SENDS, IGNORED
from .reply import Reply, ReplyContext, build


@dataclass(frozen=True)
class Envelope:
    sender: Optional[str] = None      # Postfix ${sender}; "" is the null sender
    recipient: Optional[str] = None   # Postfix ${recipient}


@dataclass(frozen=True)
class Effects:
    """The adapters the pipeline may touch; the dry run hands harmless ones."""
    website: object                   # .fetch(url), .submit(url, content, key)
    mailer: object                    # .send(bytes, recipient) -> SendResult
    records: object                   # .stash(kind, files), .append_line(text)
    now: Callable[[], datetime]


@dataclass(frozen=True)
class Processed:
    outcome: Outcome
    detail: str
    message_id: str = ""
    sender: str = ""
    command: str = ""
    url: str = ""


def process(raw: RawMail, envelope: Envelope, config: Config, effects: Effects) -> Processed:
    head = read_head(raw.data)
    line = read_subject(head.subject)
    seen = Processed(Outcome.IGNORED, "", message_id=head.message_id, command=line.command)

    reason = reason_to_ignore(head, envelope.sender, config.gateway_address)
    if reason:
        _keep(effects, IGNORED, raw)
        return replace(seen, outcome=Outcome.IGNORED, detail=reason, sender=_who(head, envelope))
    sender = reply_sender(head.from_raw)
    if not isinstance(sender, Sender):
        _keep(effects, ERRONEOUS, raw)
        return replace(seen, outcome=Outcome.UNANSWERABLE, detail=sender, sender=_who(head, envelope))
    seen = replace(seen, sender=sender.address)

    if raw.oversize:
        step = Step(Outcome.TOO_BIG, f"larger than {config.max_message_bytes} bytes",
                    Reply("too-big.txt", {"subject": head.subject or "(no subject)",
                                          "limit": _megabytes(config.max_message_bytes)}),
                    keep=ERRONEOUS)
    else:
        step = _act(raw, head, line, sender, config, effects)

    if step.keep:
        files = {".eml": raw.data}
        if step.exchange:
            files[".http.txt"] = step.exchange.encode("utf-8", "replace")
        effects.records.stash(step.keep, files)
    seen = replace(seen, outcome=step.outcome, detail=step.detail, url=step.url)
    if step.reply is None:
        return seen
    return _send(step.reply, head, sender, config, effects, seen)


def _act(raw: RawMail, head: Head, line, sender: Sender, config: Config, effects: Effects) -> Step:
    if not needs_body(line):
        request = HelpRequest()
    else:
        from .mime import parse_mail   # the full parse, only for mail that needs it

        try:
            mail = parse_mail(raw.data)
        except (ValueError, LookupError, TypeError, IndexError, AttributeError) as error:
            return invalid_step(Invalid(line.command, (Problem(
                f"the mail could not be read ({type(error).__name__}); send it again as a simple mail"),)),
                config.site_url, head.subject)
        request = understand(line, mail, config.site_url)
    return perform(request, website=effects.website, sender=sender, site_url=config.site_url,
                   subject=head.subject, idempotency_key=f"torokiki-pipe-{head.key}",
                   caller_id=config.api_caller_id)


def _send(reply: Reply, head: Head, sender: Sender, config: Config, effects: Effects,
          seen: Processed) -> Processed:
    context = ReplyContext(to=sender, gateway_address=config.gateway_address, site_url=config.site_url,
                           message_id=head.message_id, references=head.references,
                           original_subject=head.subject, now=effects.now())
    message = build(reply, context).as_bytes()
    result = effects.mailer.send(message, sender.address)
    if result.sent:
        return seen
    if result.status == "temporary":
        return replace(seen, outcome=Outcome.SEND_DEFERRED,
                       detail=f"reply not handed over ({result.detail}); {seen.detail}")
    effects.records.stash(FAILED_SENDS, {".eml": message})
    return replace(seen, outcome=Outcome.REPLY_FAILED,
                   detail=f"reply refused for good ({result.detail}); {seen.detail}")


def _keep(effects: Effects, kind: str, raw: RawMail) -> None:
    effects.records.stash(kind, {".eml": raw.data})


def _who(head: Head, envelope: Envelope) -> str:
    if envelope.sender is not None:
        return envelope.sender or "<>"
    return head.from_[:200]


def _megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):g} MB"
