"""Adapters for ``--dry-run``: change nothing anywhere, show what would happen.

GETs still reach the website (they change nothing); the POST, the reply and
every write under ``logs/`` are printed instead.  Each fits its port
(torokiki_pipe/ports.py; checked by ``make typecheck``).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING

from torokiki_pipe.adapters.clock import SystemClock
from torokiki_pipe.stages.s4_journal import DONE, REPLY_STORED, SENDING, Crash, Entry
from torokiki_pipe.pipeline import Effects
from torokiki_pipe.config import ReplyLimit
from torokiki_pipe.adapters.reply_budget import SEND
from torokiki_pipe.adapters.sendmail import SendResult, Sendmail
from torokiki_pipe.adapters.website import JsonBody, Website, WebsiteAnswer

if TYPE_CHECKING:
    from typing import Any, Dict, Iterator, Optional, TextIO, Tuple

    from torokiki_pipe.config import Config
    from torokiki_pipe.ports import Decision
    from torokiki_pipe.stages.s5_understand.urls import ContentUrl


class DryRunWebsite(Website):
    def __init__(self, settings: Config, out: TextIO):
        super().__init__(settings.api_url, settings.api_key, settings.http_timeout, settings.site_url)
        self.out = out

    def submit(self, url: ContentUrl, content: Dict[str, Any], idempotency_key: str) -> WebsiteAnswer:
        body = JsonBody.of(content)
        headers = {"Content-Type": "application/json", "X-API-Key": "<redacted>",
                   "Idempotency-Key": idempotency_key}
        print("# the request it would make:", file=self.out)
        print(self.describe_request("POST", url.collection_path, headers, body), file=self.out)
        location = f"{self.site_url}{url.collection_path}/(new id)"
        return WebsiteAnswer("saved", "dry run: not posted", location=location)


class PrintMailer:
    """Prints the reply and the exact argv the real send would run (`Sendmail.argv`: one source)."""

    def __init__(self, command: Tuple[str, ...], out: TextIO, smtputf8: str = "auto", null_sender: bool = True):
        self.mailer = Sendmail(command, null_sender=null_sender, smtputf8=smtputf8)
        self.out = out

    def smtputf8(self) -> Tuple[bool, str]:
        return self.mailer.smtputf8()

    def send(self, message: bytes, recipient: str) -> SendResult:
        import shlex

        # shlex.join: the argv as a shell would need it typed, so `-f '<>'` can be pasted and run.
        print(f"# the reply it would send with: {shlex.join(self.mailer.argv(recipient))}", file=self.out)
        print(message.decode("utf-8", "replace"), file=self.out)
        return SendResult("sent", "dry run: not sent")


class MemoryJournal:
    """A journal that remembers nothing: the dry run always starts from scratch."""

    @contextmanager
    def hold(self, message_key: str, digest: str, force: bool = False) -> Iterator[Entry]:
        yield Entry(key=message_key, digest=digest)

    def answer(self, entry: Entry, reply: bytes, **changes: Any) -> Entry:
        return entry._replace(stage=REPLY_STORED, **changes)

    def stored_reply(self, entry: Entry) -> Optional[bytes]:
        return None

    def sending(self, entry: Entry) -> Entry:
        return entry._replace(stage=SENDING)

    def failed(self, entry: Entry) -> Entry:
        return entry._replace(failures=entry.failures + 1, first_failure=0.0)

    def failing_for(self, entry: Entry) -> float:
        return 0.0

    def finish(self, entry: Entry, **changes: Any) -> Entry:
        return entry._replace(stage=DONE, **changes)

    def crashed(self, digest: str, signature: str) -> Crash:
        return Crash(times=1, answered=False)

    def crash_answered(self, digest: str) -> None:
        pass

    def expire(self) -> int:
        return 0


class NoLimit:
    limit = ReplyLimit(0, 3600)

    def take(self, address: str, key: str = "") -> Decision:
        return SEND

    def first_time_refused(self, address: str, subject: str, body: bytes | memoryview, key: str = "") -> bool:
        return True

    def expire(self) -> int:
        return 0


class NoRecords:
    def stash(self, kind: str, files: Dict[str, bytes], key: str = "") -> str:
        return f"(dry run: would keep in logs/{kind}/)"

    def append_line(self, text: str) -> None:
        pass

    def sweep_due(self) -> bool:
        return False

    def sweep(self) -> int:
        return 0


def dry_run_effects(settings: Config, out: TextIO) -> Effects:
    mailer = PrintMailer(settings.sendmail, out, settings.smtputf8, settings.null_sender)
    return Effects(website=DryRunWebsite(settings, out), mailer=mailer,
                   records=NoRecords(), journal=MemoryJournal(), budget=NoLimit(), clock=SystemClock())
