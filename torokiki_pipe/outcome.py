"""What became of one message, and the one place that maps it to an exit code.

The MTA only understands sysexits codes; people only understand replies.  This
module owns the first: every way a run can end is an `Outcome`, and
`EXIT_POLICY` says which exit code it gets and which RFC 3463 enhanced status
starts the one line written to stderr, which Postfix quotes in its queue and
bounces.

Policy (modelled on rt-mailgate): exit 0 whenever the message is *handled*,
meaning saved and answered, refused and answered, or rightly ignored.  Exit 75
(EX_TEMPFAIL) whenever trying again later can help: the website is down, the
configuration is wrong, the reply could not be handed over, or the gateway
itself failed.  A wrong configuration is deliberately temporary: an
administrator's mistake must not bounce people's mail.  Nothing else is ever
returned, except 64 (EX_USAGE) for a wrong command line.
"""

from __future__ import annotations

import enum
import os
import sys
from typing import NamedTuple

from torokiki_pipe.stages.s8_record import one_line


class Outcome(enum.Enum):
    # Handled: the MTA may forget the message.
    SAVED = "saved"                    # a response was posted and the sender answered
    ANSWERED = "answered"              # help or get answered
    REFUSED = "refused"                # website refused (4xx) or content missing; answered
    INVALID = "invalid"                # the mail could not be understood; answered
    TOO_BIG = "too-big"                # over the size limit; answered without parsing
    IGNORED = "ignored"                # must not be answered (bounce, auto-reply, list, loop)
    UNANSWERABLE = "unanswerable"      # no usable From address; kept, not answered
    REPLY_FAILED = "reply-failed"      # sendmail refused the reply for good; reply kept
    DUPLICATE = "duplicate"            # delivered again after it was handled: nothing more to do
    GAVE_UP = "gave-up"                # failed temporarily for too long; answered that it was not saved
    POISONED = "poisoned"              # crashed the gateway the same way repeatedly; answered, not retried
    FORGED = "forged"                  # the MTA's DMARC says the From is forged; held, not answered
    UNVERIFIED = "unverified"          # a response whose From was not proven (REQUIRE_AUTH); held, answered
    # Not handled: the MTA keeps the message and tries again.
    WEBSITE_UNAVAILABLE = "website-unavailable"
    KEY_REFUSED = "key-refused"        # the website refused the gateway's API key (401/403/407)
    SEND_DEFERRED = "send-deferred"
    CONFIG_ERROR = "config-error"
    LOGS_UNWRITABLE = "logs-unwritable"
    CRASHED = "crashed"
    BUSY = "busy"                      # another delivery of the same message is still running
    TIMED_OUT = "timed-out"            # the run took too long as a whole
    INTERRUPTED = "interrupted"        # stopped by SIGTERM before the work was done
    # The command line itself was wrong.
    USAGE = "usage"


class ExitRule(NamedTuple):
    """The exit code an outcome gives the MTA, and its enhanced status."""
    code: int
    status: str  # RFC 3463 enhanced status code, for the stderr line


EXIT_POLICY: dict[Outcome, ExitRule] = {
    Outcome.SAVED: ExitRule(os.EX_OK, "2.0.0"),
    Outcome.ANSWERED: ExitRule(os.EX_OK, "2.0.0"),
    Outcome.REFUSED: ExitRule(os.EX_OK, "2.0.0"),
    Outcome.INVALID: ExitRule(os.EX_OK, "2.0.0"),
    Outcome.TOO_BIG: ExitRule(os.EX_OK, "2.0.0"),
    Outcome.IGNORED: ExitRule(os.EX_OK, "2.0.0"),
    Outcome.UNANSWERABLE: ExitRule(os.EX_OK, "2.0.0"),
    Outcome.REPLY_FAILED: ExitRule(os.EX_OK, "2.0.0"),
    Outcome.DUPLICATE: ExitRule(os.EX_OK, "2.0.0"),
    Outcome.GAVE_UP: ExitRule(os.EX_OK, "2.0.0"),
    Outcome.POISONED: ExitRule(os.EX_OK, "2.0.0"),
    # Held in logs/held/ for a person to look at: kept, so handled; a retry would decide the same.
    Outcome.FORGED: ExitRule(os.EX_OK, "2.0.0"),
    Outcome.UNVERIFIED: ExitRule(os.EX_OK, "2.0.0"),
    Outcome.WEBSITE_UNAVAILABLE: ExitRule(os.EX_TEMPFAIL, "4.4.2"),
    # The administrator's key, not the sender's mail: keep it queued until the key is fixed.
    Outcome.KEY_REFUSED: ExitRule(os.EX_TEMPFAIL, "4.3.5"),
    Outcome.SEND_DEFERRED: ExitRule(os.EX_TEMPFAIL, "4.4.1"),
    Outcome.CONFIG_ERROR: ExitRule(os.EX_TEMPFAIL, "4.3.5"),
    Outcome.LOGS_UNWRITABLE: ExitRule(os.EX_TEMPFAIL, "4.3.1"),
    Outcome.CRASHED: ExitRule(os.EX_TEMPFAIL, "4.3.0"),
    Outcome.BUSY: ExitRule(os.EX_TEMPFAIL, "4.3.0"),
    Outcome.TIMED_OUT: ExitRule(os.EX_TEMPFAIL, "4.4.7"),
    Outcome.INTERRUPTED: ExitRule(os.EX_TEMPFAIL, "4.3.2"),
    Outcome.USAGE: ExitRule(os.EX_USAGE, "5.3.5"),
}


def is_temporary(outcome: Outcome) -> bool:
    return EXIT_POLICY[outcome].code == os.EX_TEMPFAIL


def exit_code(outcome: Outcome) -> int:
    return EXIT_POLICY[outcome].code


def say(outcome: Outcome, detail: str) -> None:
    """Write the one stderr line of a non-zero exit (`status_line`)."""
    print(status_line(outcome, detail), file=sys.stderr)


def status_line(outcome: Outcome, detail: str) -> str:
    """The one line for stderr: enhanced status, then a short reason."""
    reason = one_line(detail, 300)  # one line, short: Postfix quotes it
    return f"{EXIT_POLICY[outcome].status} {outcome.value}: {reason}" if reason else (
        f"{EXIT_POLICY[outcome].status} {outcome.value}")


class Stopped(BaseException):
    """Raised by the run's signal handlers (`run.RunSignals`) to end it early with `outcome`; never by the pipeline.

    A BaseException, so that no ``except Exception`` mistakes it for a crash.
    """

    def __init__(self, outcome: Outcome, detail: str):
        super().__init__(detail)
        self.outcome, self.detail = outcome, detail
