"""Adapter: the journal that makes the gateway exactly-once over MTA retries.

The MTA delivers at least once: it retries on exit 75, may run the pipe again
after a crash or a timeout, and runs many pipes at once.  The journal records
how far each message got, keyed by its Message-ID (or a digest of the raw
message when there is none, or when the same Message-ID comes with other
content):

    received -> reply-stored (the website's answer, and the reply built from it, stored;
                              not yet handed over)
             -> sending (the reply is being handed to sendmail) -> done

A message delivered again resumes where it stopped: a ``done`` one is not
touched again; a ``reply-stored`` or ``sending`` one only has its stored reply
sent, byte for byte the same (same Message-ID), so that the one case where a
second hand-over cannot be excluded (killed while sendmail ran) gives the
sender a copy their mail client collapses, never a second, different answer.

Each message is processed under an exclusive `filelock` on its Message-ID key,
held for the whole run; the choice between that key and the content digest is
made under the lock, so two different mails that share a Message-ID and
arrive at the same moment are two messages, one after the other.  Entries are
JSON files written atomically; old ones expire during ordinary runs (at most
once an hour), so no daemon is needed.  A lock file is removed only by the
sweep, while the sweep holds it.
"""

from __future__ import annotations

import json
import os
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from filelock import FileLock, Timeout

from torokiki_pipe.adapters.clock import SystemClock
from torokiki_pipe.adapters.records import make_private_dirs, write_atomically
from torokiki_pipe.stages.s4_journal import (DONE, EARLIER_STAGES, FORCEABLE, REPLY_STORED, SENDING, Crash, Entry,
                                             JournalBusy)

if TYPE_CHECKING:
    from torokiki_pipe.ports import Clock

LOCK_TIMEOUT = 120          # seconds a duplicate waits for the first delivery to finish

class Journal:
    def __init__(self, root: Path, expire_after: float, clock: Clock = SystemClock()):
        self.root = Path(root)
        self.expire_after = expire_after
        self.clock = clock

    # -- paths: one JSON entry, one stored reply and one lock file per key
    def _entry(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def _reply(self, key: str) -> Path:
        return self.root / f"{key}.reply.eml"

    def _lock(self, key: str) -> Path:
        return self.root / "locks" / f"{key}.lock"

    @contextmanager
    def hold(self, message_key: str, digest: str, force: bool = False) -> Iterator[Entry]:
        """Lock the message for the whole run and yield its entry (new or resumed).

        The Message-ID's lock is taken first and kept: if its entry belongs to
        other content, the content digest's key is locked too and used.  Always
        in that order, so two runs never wait for each other in a circle.
        `force` starts a finished, forceable entry afresh (`replay --force`).
        """
        with ExitStack() as held:
            held.enter_context(self._locked(message_key))
            entry = self.read(message_key)
            key = message_key
            if entry is not None and entry.digest != digest:
                key = digest[:32]
                held.enter_context(self._locked(key))
                entry = self.read(key)
            if entry is not None and force and entry.stage == DONE and entry.outcome in FORCEABLE:
                entry = None
            if entry is None:
                # Not waited onto the disk: lost in a power cut, the message simply starts afresh.
                entry = self.save(Entry(key=key, digest=digest, created=self.clock.time()), durable=False)
            yield entry

    @contextmanager
    def _locked(self, key: str):
        make_private_dirs(self.root / "locks")
        lock = FileLock(str(self._lock(key)), timeout=LOCK_TIMEOUT, mode=0o600)
        try:
            lock.acquire()
        except Timeout:
            raise JournalBusy(f"another delivery of this message has been running for {LOCK_TIMEOUT} s") from None
        try:
            yield
        finally:
            lock.release()

    def read(self, key: str) -> Entry | None:
        try:
            data = json.loads(self._entry(key).read_text(encoding="utf-8"))
            fields = {k: v for k, v in data.items() if k in Entry._fields}
            stage = fields.get("stage")
            if isinstance(stage, str) and stage in EARLIER_STAGES:
                fields["stage"] = EARLIER_STAGES[stage]
            return Entry(**fields)
        except FileNotFoundError:
            return None
        except (ValueError, TypeError):
            # A damaged entry must not wedge the message: start it afresh, keep the evidence.
            damaged = self._entry(key)
            os.replace(damaged, damaged.with_suffix(".damaged"))
            return None

    def save(self, entry: Entry, durable: bool = True) -> Entry:
        entry = entry._replace(updated=self.clock.time())
        make_private_dirs(self.root)
        write_atomically(self._entry(entry.key), json.dumps(entry._asdict(), ensure_ascii=False).encode("utf-8"),
                         durable=durable)
        return entry

    def answer(self, entry: Entry, reply: bytes, **changes) -> Entry:
        """Store the reply that is owed, then record it as owed: both on the disk before it is sent."""
        write_atomically(self._reply(entry.key), reply)
        return self.save(entry._replace(stage=REPLY_STORED, **changes))

    def stored_reply(self, entry: Entry) -> bytes | None:
        try:
            return self._reply(entry.key).read_bytes()
        except FileNotFoundError:
            return None

    def sending(self, entry: Entry) -> Entry:
        """Record, on the disk, that the hand-over to sendmail starts now."""
        return self.save(entry._replace(stage=SENDING))

    def failed(self, entry: Entry) -> Entry:
        """Count a temporary failure; the first one starts the give-up clock."""
        first = entry.first_failure if entry.first_failure is not None else self.clock.time()
        # A failure count lost in a power cut only restarts the give-up clock.
        return self.save(entry._replace(first_failure=first, failures=entry.failures + 1), durable=False)

    def failing_for(self, entry: Entry) -> float:
        return 0.0 if entry.first_failure is None else self.clock.time() - entry.first_failure

    def finish(self, entry: Entry, **changes) -> Entry:
        saved = self.save(entry._replace(stage=DONE, **changes))
        try:
            self._reply(entry.key).unlink()
        except FileNotFoundError:
            pass
        return saved

    # -- crashes: counted per raw mail (its content digest), whatever its Message-ID says
    def _crash_key(self, digest: str) -> str:
        return f"crash-{digest[:32]}"

    def crashed(self, digest: str, signature: str) -> Crash:
        """Count one more crash of this raw mail with this signature."""
        key = self._crash_key(digest)
        with self._locked(key):
            known = self._read_crash(key)
            count = known.get("count", 0) + 1 if known.get("signature") == signature else 1
            answered = bool(known.get("answered"))
            write_atomically(self._entry(key), json.dumps(
                {"signature": signature, "count": count, "answered": answered}).encode())
        return Crash(times=count, answered=answered)

    def crash_answered(self, digest: str) -> None:
        """The sender was told: later deliveries of this mail are finished, not answered again."""
        key = self._crash_key(digest)
        with self._locked(key):
            known = self._read_crash(key)
            write_atomically(self._entry(key), json.dumps({**known, "answered": True}).encode())

    def _read_crash(self, key: str) -> dict:
        try:
            known = json.loads(self._entry(key).read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return {}
        return known if isinstance(known, dict) else {}

    def expire(self) -> int:
        """Remove entries (and their stored replies and locks) older than expire_after."""
        if not self.root.is_dir():
            return 0
        now = self.clock.time()
        removed = 0
        for item in os.scandir(self.root):
            if item.is_file() and not item.name.startswith(".") and now - item.stat().st_mtime > self.expire_after:
                removed += self._remove_unlocked(item.name.split(".", 1)[0], item.path)
        return removed

    def _remove_unlocked(self, key: str, path: str) -> int:
        lock = FileLock(str(self._lock(key)), timeout=0)
        try:
            with lock:
                os.unlink(path)
                # Removed while held: a run waiting on the old file finds the entry gone and
                # starts afresh, which is what an expired message does anyway.
                for other in (self._entry(key), self._reply(key), self._lock(key)):
                    try:
                        os.unlink(other)
                    except FileNotFoundError:
                        pass
        except (Timeout, FileNotFoundError):
            return 0
        return 1
