"""In-memory stand-ins for the adapters `pipeline.process` is handed, for tests in one process.

Each fake has the methods of the real adapter that the pipeline (and the
run around it) calls, with the same meaning, and keeps what happened where a
test can read it:

    FakeClock    .now() (aware datetime), .time() (seconds); moves only by .advance()
    FakeWebsite  .fetch(url), .submit(url, content, idempotency_key) -> WebsiteAnswer;
                 .mode "ok" | "down" | "refuse"; .stored, .requests
    FakeMailer   .send(message, recipient) -> SendResult, answering .results in turn
                 ("sent" once they run out); .attempts, .sent
    FakeRecords  .stash(kind, files, key), .append_line(text); .kept, .lines
    FakeJournal  the journal's stages and promises (adapters/journal.py): .hold, .answer,
                 .stored_reply, .sending, .failed, .failing_for, .finish, crashes; .entries,
                 .replies (stored replies), .stages (every stage saved, in order)
    FakeBudget   the reply limit and the once-a-day refusal (adapters/reply_budget.py), each
                 allowance idempotent per message key; .granted, .refusals

Only public values of the package are shared with the real adapters (Entry,
WebsiteAnswer, SendResult, stage and kind names), never their helpers: a
fake that borrowed the code it stands in for would test nothing.  Times come
from one FakeClock, so "three days of failures" is a number, not a wait.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from torokiki_pipe.adapters.journal import LOCK_TIMEOUT
from torokiki_pipe.stages.s4_journal import DONE, FORCEABLE, REPLY_STORED, SENDING, Crash, Entry, JournalBusy
from torokiki_pipe.stages.s8_record import STASH_KINDS
from torokiki_pipe.adapters.reply_budget import IDENTICAL_WINDOW, LAST, SEND, SILENT
from torokiki_pipe.adapters.sendmail import SendResult
from torokiki_pipe.adapters.website import WebsiteAnswer
from torokiki_pipe.config import ReplyLimit
from torokiki_pipe.pipeline import Effects

if TYPE_CHECKING:
    from torokiki_pipe.ports import Decision, SendStatus

SITE_URL = "http://torokiki.net"
START = datetime(2024, 5, 14, 8, 12, 24, tzinfo=timezone.utc)


class FakeClock:
    """Wall-clock time that stands still until told to move."""

    def __init__(self, start: datetime = START):
        self._now = start

    def now(self) -> datetime:
        return self._now

    def time(self) -> float:
        return self._now.timestamp()

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)


class FakeWebsite:
    """The website: "ok" stores a submission (once per idempotency key) and serves what it holds,
    "down" answers as a website that is down (HTTP 503, nothing stored), "refuse" as one that
    refuses the submission (HTTP 422)."""

    def __init__(self, site_url: str = SITE_URL, mode: str = "ok"):
        self.site_url, self.mode = site_url.rstrip("/"), mode
        self.stored: dict[str, dict] = {}     # public URL -> content
        self.requests: list[tuple[str, str]] = []   # (method, path), every call
        self._by_key: dict[str, str] = {}

    @property
    def posts(self) -> int:
        return sum(method == "POST" for method, _ in self.requests)

    def fetch(self, url) -> WebsiteAnswer:
        self.requests.append(("GET", url.path))
        if self.mode == "down":
            return self._down("GET", url.path)
        public = self.site_url + url.path
        if public not in self.stored:
            return WebsiteAnswer("not-found", "no such content", exchange=f"GET {url.path}\n\n(HTTP 404)")
        return WebsiteAnswer("found", "found", content=dict(self.stored[public]))

    def submit(self, url, content: dict, idempotency_key: str) -> WebsiteAnswer:
        self.requests.append(("POST", url.collection_path))
        if self.mode == "down":
            return self._down("POST", url.collection_path)
        if self.mode == "refuse":
            return WebsiteAnswer("refused", "the website refused it (HTTP 422): Text is too long",
                                 exchange=f"POST {url.collection_path}\n\n(HTTP 422)")
        location = self._by_key.get(idempotency_key)
        if location is None:
            location = f"{self.site_url}{url.collection_path}/{len(self.stored) + 1}"
            self.stored[location] = dict(content)
            self._by_key[idempotency_key] = location
        return WebsiteAnswer("saved", f"saved as {location}", location=location)

    @staticmethod
    def _down(method: str, path: str) -> WebsiteAnswer:
        return WebsiteAnswer("unavailable", "the website answered HTTP 503",
                             exchange=f"{method} {path}\n\n(HTTP 503)")


@dataclass(frozen=True)
class Attempt:
    """One hand-over to the mailer."""
    recipient: str
    message: bytes
    result: SendResult
    uninterrupted: bool     # inside Effects.uninterrupted, where no signal cuts the run short


class FakeMailer:
    """Sendmail: answers each hand-over with the next of `results`, "sent" once they run out."""

    def __init__(self, *results: SendStatus, smtputf8: bool = False):
        self.results = list(results)
        self.attempts: list[Attempt] = []
        self.uninterrupted = False          # set by Fakes.uninterrupted
        self.carries_utf8 = smtputf8

    def smtputf8(self) -> tuple[bool, str]:
        return self.carries_utf8, "the fake mailer's setting"

    @property
    def sent(self) -> list[Attempt]:
        return [a for a in self.attempts if a.result.sent]

    def send(self, message: bytes, recipient: str) -> SendResult:
        status: SendStatus = self.results.pop(0) if self.results else "sent"
        result = SendResult(status, "" if status == "sent" else f"sendmail exited with a {status} failure")
        self.attempts.append(Attempt(recipient, bytes(message), result, self.uninterrupted))
        return result


class FakeRecords:
    """logs/: what is kept, by kind and stem, and the log's lines."""

    def __init__(self):
        self.kept: dict[str, dict[str, dict[str, bytes]]] = {}   # kind -> stem -> suffix -> bytes
        self.lines: list[str] = []
        self._fresh = 0

    def stash(self, kind: str, files: dict[str, bytes], key: str = "") -> str:
        """As Records.stash: with a key the first file is written once, the others replaced."""
        if kind not in STASH_KINDS:
            raise ValueError(f"unknown stash kind {kind!r}")
        if key and key.isalnum():
            stem = key
        else:
            self._fresh += 1
            stem = f"fresh-{self._fresh}"
        held = self.kept.setdefault(kind, {}).setdefault(stem, {})
        for position, (suffix, data) in enumerate(files.items()):
            if not (position == 0 and suffix in held):
                held[suffix] = bytes(data)
        return f"logs/{kind}/{stem}{next(iter(files), '')}"

    def append_line(self, text: str) -> None:
        self.lines.append(text.rstrip("\n"))

    def sweep_due(self, interval: float = 3600) -> bool:
        return False

    def sweep(self, older_than: float = 3600) -> int:
        return 0


class FakeJournal:
    """The journal: received -> reply-stored -> sending -> done, per message key, with its stored reply.

    As the real one: the Message-ID's key is used unless its entry belongs to other content
    (then the digest's); `force` starts a finished, forceable entry afresh; the first
    temporary failure starts the give-up clock; finishing drops the stored reply.  A key in
    `busy` is held by another delivery: `hold` raises JournalBusy.
    """

    def __init__(self, clock: FakeClock, expire_after: float = 10 * 86400):
        self.clock, self.expire_after = clock, expire_after
        self.entries: dict[str, Entry] = {}
        self.replies: dict[str, bytes] = {}
        self.stages: list[tuple[str, str]] = []      # (key, stage) of every save, in order
        self.busy: set[str] = set()
        self._crashes: dict[str, dict] = {}

    def put(self, entry: Entry, reply: bytes | None = None) -> None:
        """Starting state: an entry (and its stored reply) left by an earlier delivery."""
        self.entries[entry.key] = entry
        if reply is not None:
            self.replies[entry.key] = reply

    @contextmanager
    def hold(self, message_key: str, digest: str, force: bool = False):
        if message_key in self.busy:
            raise JournalBusy(f"another delivery of this message has been running for {LOCK_TIMEOUT} s")
        entry = self.read(message_key)
        key = message_key
        if entry is not None and entry.digest != digest:
            key = digest[:32]
            if key in self.busy:
                raise JournalBusy(f"another delivery of this message has been running for {LOCK_TIMEOUT} s")
            entry = self.read(key)
        if entry is not None and force and entry.stage == DONE and entry.outcome in FORCEABLE:
            entry = None
        if entry is None:
            entry = self.save(Entry(key=key, digest=digest, created=self.clock.time()))
        yield entry

    def read(self, key: str) -> Entry | None:
        return self.entries.get(key)

    def save(self, entry: Entry, durable: bool = True) -> Entry:
        entry = entry._replace(updated=self.clock.time())
        self.entries[entry.key] = entry
        self.stages.append((entry.key, entry.stage))
        return entry

    def answer(self, entry: Entry, reply: bytes, **changes) -> Entry:
        self.replies[entry.key] = bytes(reply)
        return self.save(entry._replace(stage=REPLY_STORED, **changes))

    def stored_reply(self, entry: Entry) -> bytes | None:
        return self.replies.get(entry.key)

    def sending(self, entry: Entry) -> Entry:
        return self.save(entry._replace(stage=SENDING))

    def failed(self, entry: Entry) -> Entry:
        first = entry.first_failure if entry.first_failure is not None else self.clock.time()
        return self.save(entry._replace(first_failure=first, failures=entry.failures + 1))

    def failing_for(self, entry: Entry) -> float:
        return 0.0 if entry.first_failure is None else self.clock.time() - entry.first_failure

    def finish(self, entry: Entry, **changes) -> Entry:
        saved = self.save(entry._replace(stage=DONE, **changes))
        self.replies.pop(entry.key, None)
        return saved

    def crashed(self, digest: str, signature: str) -> Crash:
        known = self._crashes.get(digest[:32], {})
        count = known.get("count", 0) + 1 if known.get("signature") == signature else 1
        self._crashes[digest[:32]] = {"signature": signature, "count": count,
                                      "answered": bool(known.get("answered"))}
        return Crash(times=count, answered=bool(known.get("answered")))

    def crash_answered(self, digest: str) -> None:
        self._crashes.setdefault(digest[:32], {})["answered"] = True

    def expire(self) -> int:
        old = [k for k, e in self.entries.items() if self.clock.time() - e.updated > self.expire_after]
        for key in old:
            del self.entries[key]
            self.replies.pop(key, None)
        return len(old)


class FakeBudget:
    """The reply limit per address and the once-a-day answer to the same refused mail.

    Both remember, for each allowance, the message key it was taken for: asked again
    for that message, they give the same answer.
    """

    def __init__(self, clock: FakeClock, limit: ReplyLimit = ReplyLimit(0, 3600)):
        self.clock, self.limit = clock, limit
        self.granted: dict[str, list[tuple[float, str]]] = {}     # address -> [(time, key)]
        self.refusals: dict[tuple, list[tuple[float, str]]] = {}  # (address, subject, body) -> [(time, key)]

    def take(self, address: str, key: str = "") -> Decision:
        if self.limit.replies <= 0:
            return SEND
        now = self.clock.time()
        granted = [(t, k) for t, k in self.granted.get(address.lower(), []) if now - t < self.limit.window]
        for position, (_, known) in enumerate(granted, 1):
            if key and known == key:
                return LAST if position == self.limit.replies else SEND
        if len(granted) >= self.limit.replies:
            return SILENT
        granted.append((now, key))
        self.granted[address.lower()] = granted
        return LAST if len(granted) == self.limit.replies else SEND

    def first_time_refused(self, address: str, subject: str, body, key: str = "") -> bool:
        name = (address.lower(), subject, bytes(body))
        now = self.clock.time()
        seen = self.refusals.get(name, [])
        if seen and now - seen[-1][0] < IDENTICAL_WINDOW:
            return bool(key) and seen[-1][1] == key
        self.refusals[name] = [(now, key)]
        return True

    def expire(self) -> int:
        oldest = self.clock.time() - max(self.limit.window, IDENTICAL_WINDOW)
        removed = 0
        for table in (self.granted, self.refusals):
            stale = [n for n, times in table.items() if max(t for t, _ in times) <= oldest]
            for name in stale:
                del table[name]   # type: ignore[arg-type]  # each name is a key of its own table
            removed += len(stale)
        return removed


@dataclass
class Fakes:
    """One of each fake, sharing one clock; `effects()` hands them to the pipeline."""
    clock: FakeClock = field(default_factory=FakeClock)
    website: FakeWebsite = field(default_factory=FakeWebsite)
    mailer: FakeMailer = field(default_factory=FakeMailer)
    records: FakeRecords = field(default_factory=FakeRecords)
    journal: FakeJournal | None = None
    budget: FakeBudget | None = None
    limit: ReplyLimit = ReplyLimit(0, 3600)

    def __post_init__(self):
        if self.journal is None:
            self.journal = FakeJournal(self.clock)
        if self.budget is None:
            self.budget = FakeBudget(self.clock, self.limit)

    @contextmanager
    def uninterrupted(self):
        self.mailer.uninterrupted = True
        try:
            yield
        finally:
            self.mailer.uninterrupted = False

    def effects(self) -> Effects:
        assert self.journal is not None and self.budget is not None   # made by __post_init__
        return Effects(website=self.website, mailer=self.mailer, records=self.records, journal=self.journal,
                       budget=self.budget, uninterrupted=self.uninterrupted,
                       clock=self.clock)
