"""Stage 4, journal: what the exactly-once journal knows of one message, as values.

A message goes through the stages in order, and a delivery of it resumes
where the last one stopped:

    received -> reply-stored (the website's answer, and the reply built from it, stored)
             -> sending (the reply is being handed to sendmail) -> done

The journal itself (its files and locks, `adapters.journal`) is built on
first use, past the guard; the pipeline reads these values without loading it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, NamedTuple

if TYPE_CHECKING:
    from typing import Final, Literal

    # How far a message got.  "reply-stored": the reply is built and stored on
    # the disk, not yet handed to the mailer.
    Stage = Literal["received", "reply-stored", "sending", "done"]


class JournalBusy(Exception):
    """Another run holds this message's lock for too long: try again later."""


# Stages, in order (Stage).  "reply-stored" and "sending" both hold a stored reply that is
# still owed.  "reply-stored", not "answered": that is an outcome, and the sender has no answer yet.
RECEIVED: Final = "received"
REPLY_STORED: Final = "reply-stored"
SENDING: Final = "sending"
DONE: Final = "done"
# Stage names that earlier versions wrote, read as today's: a journal entry
# lives as long as TOROKIKI_JOURNAL_EXPIRE (up to 366 days), across upgrades.
EARLIER_STAGES: Dict[str, Stage] = {"answered": REPLY_STORED}

# Outcomes that `replay --force` may submit again: the website or the gateway
# did not take the mail, and a fix on either side may make it succeed.  Saved
# and answered mail is never forced: that would answer the sender twice.
# (A poisoned mail never finishes its entry: a plain replay runs it again.)
FORCEABLE = frozenset({"refused", "gave-up", "invalid", "too-big", "reply-failed", "unverified"})


class Entry(NamedTuple):
    """How far one message got, as kept in the journal."""
    key: str
    digest: str
    stage: Stage = RECEIVED
    outcome: str = ""                  # outcome of the website step, once the reply is stored
    detail: str = ""
    url: str = ""                      # the new response's URL when one was saved (older entries: else the target)
    command: str = ""
    recipient: str = ""                # where the stored reply goes
    first_failure: float | None = None # first temporary failure, for giving up
    failures: int = 0
    created: float = 0.0
    updated: float = 0.0
    target: str = ""                   # the content answered or fetched (entries written before it: "")

    @property
    def owes_reply(self) -> bool:
        return self.stage in (REPLY_STORED, SENDING)


class Crash(NamedTuple):
    """What the journal knows of one raw mail that crashed the gateway."""
    times: int           # crashes in a row with the same signature
    answered: bool       # the sender was already told it cannot be processed
