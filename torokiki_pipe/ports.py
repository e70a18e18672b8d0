"""The ports: what the pipeline asks of each adapter that touches the world.

Each port is a `typing.Protocol`, so an adapter conforms by its shape, not by
inheritance: the real adapters (``adapters/``), the dry run's fakes
(``adapters/dryrun.py``) and a test's fakes alike.  ``make typecheck`` has
mypy check that each real adapter and each dry-run fake fits its port
(``tests/typecheck_ports.py``) and that the pipeline asks for nothing more.

Free at run time: this module is imported only under ``if TYPE_CHECKING:``
by its users, never when the gateway runs; only the type checker reads it.
That is why it may import the adapters' value types directly.

The strings the gateway passes around as values (journal stages, the
mailer's and the website's statuses, the reply budget's decisions) are
`Literal` types defined beside the code that makes them and named here too.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, ContextManager, Dict, Literal, Optional, Protocol, Union

# The values the ports speak in, and their Literal statuses, live beside the code that
# makes them; the ports name them, and nothing they name imports this module back.
from torokiki_pipe.adapters.sendmail import SendResult, SendStatus
from torokiki_pipe.adapters.website import AnswerStatus, WebsiteAnswer
from torokiki_pipe.config import ReplyLimit
from torokiki_pipe.stages.s4_journal import Crash, Entry, Stage
from torokiki_pipe.stages.s5_understand.urls import ContentUrl

__all__ = ["AnswerStatus", "SendStatus", "Stage"]

# The reply budget's answer for one reply: send it; send it and say it is the
# last one for a while; send nothing.  (The budget's adapter names no value
# of its own for the ports to import.)
Decision = Literal["send", "last", "silent"]

# What `stash` hands back to be named in the log: the file, or (dry run) a description.
Kept = Union[Path, str]


class Clock(Protocol):
    def now(self) -> datetime:
        """The time now, as an aware datetime (UTC)."""

    def time(self) -> float:
        """The time now, in seconds since the epoch."""


class WebsitePort(Protocol):
    def fetch(self, url: ContentUrl) -> WebsiteAnswer:
        """GET the content; every failure is an answer, never an exception."""

    def submit(self, url: ContentUrl, content: Dict[str, Any], idempotency_key: str) -> WebsiteAnswer:
        """POST a response to the content; every failure is an answer, never an exception."""


class MailerPort(Protocol):
    def send(self, message: bytes, recipient: str) -> SendResult:
        """Hand the reply over to the one recipient; never raises for what the mailer does."""

    def smtputf8(self) -> tuple[bool, str]:
        """Whether the mailer carries an internationalised address (SMTPUTF8), and how that is known."""


class RecordsPort(Protocol):
    """``logs/``: kept mails and the log file (paths are the concrete `Records`' business)."""

    def stash(self, kind: str, files: Dict[str, bytes], key: str = "") -> Kept:
        """Keep related files under one name in the folder of `kind`; returns the first."""

    def append_line(self, text: str) -> None:
        """One line (or a traceback) to the log file, appended whole."""

    def sweep_due(self) -> bool:
        """True at most once per sweep interval, across all runs."""

    def sweep(self) -> int:
        """Remove what killed writes left behind; how many files."""


class JournalPort(Protocol):
    """How far each message got: exactly once over the MTA's retries."""

    def hold(self, message_key: str, digest: str, force: bool = False) -> ContextManager[Entry]:
        """The message's entry (new or resumed), under its lock for as long as the block runs."""

    def answer(self, entry: Entry, reply: bytes, **changes: Any) -> Entry:
        """Store the reply that is owed; the entry's stage becomes "reply-stored"."""

    def stored_reply(self, entry: Entry) -> Optional[bytes]:
        """The reply stored for the entry, byte for byte, or None."""

    def sending(self, entry: Entry) -> Entry:
        """Record that the hand-over to the mailer starts now."""

    def failed(self, entry: Entry) -> Entry:
        """Count a temporary failure."""

    def failing_for(self, entry: Entry) -> float:
        """Seconds since the entry's first temporary failure (0 without one)."""

    def finish(self, entry: Entry, **changes: Any) -> Entry:
        """The message is handled: stage "done", and its stored reply goes."""

    def crashed(self, digest: str, signature: str) -> Crash:
        """Count one more crash of this raw mail with this signature."""

    def crash_answered(self, digest: str) -> None:
        """The sender of this crashing mail was told."""

    def expire(self) -> int:
        """Remove expired entries; how many."""


class BudgetPort(Protocol):
    """How many replies one address gets, and refused mail answered once a day."""

    @property
    def limit(self) -> ReplyLimit: ...

    def take(self, address: str, key: str = "") -> Decision:
        """The allowance for message `key`'s reply; asked again, the same answer."""

    def first_time_refused(self, address: str, subject: str, body: Union[bytes, memoryview],
                           key: str = "") -> bool:
        """True the first time today this refused mail comes from this address (and for `key` again)."""

    def expire(self) -> int:
        """Remove counters whose window has passed; how many."""
