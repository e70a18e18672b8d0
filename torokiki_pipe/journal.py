"""Adapter: the journal that makes the gateway exactly-once over MTA retries.

The MTA delivers at least once: it retries on exit 75, may run the pipe again
after a crash or a timeout, and runs many pipes at once.  The journal records
how far each message got, keyed by its Message-ID (or a digest of the raw
message when there is none, or when the same Message-ID comes with other
content):

    received  ->  answered (the website's answer, and the reply built from it)  ->  done

A message delivered again resumes where it stopped: a ``done`` one is not
touched again, an ``answered`` one only has its stored reply sent.  Each
message is processed under an exclusive `filelock` on its key, so two
deliveries of the same message never run side by side.  Entries are JSON
files written atomically; old ones expire during ordinary runs (at most once
an hour), so no daemon is needed.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Iterator

from .records import make_private_dirs, write_atomically

LOCK_TIMEOUT = 120          # seconds a duplicate waits for the first delivery to finish
EXPIRY_INTERVAL = 3600      # seconds between two expiry sweeps


class JournalBusy(Exception):
    """Another run holds this message's lock for too long: try again later."""


@dataclass(frozen=True)
class Entry:
    """How far one message got, as kept in the journal."""
    key: str
    digest: str
    stage: str = "received"            # "received" | "answered" | "done"
    outcome: str = ""                  # outcome of the website step, once answered
    detail: str = ""
    url: str = ""
    command: str = ""
    recipient: str = ""                # where the stored reply goes
    first_failure: float | None = None # first temporary failure, for giving up
    failures: int = 0
    created: float = 0.0
    updated: float = 0.0


class Journal:
    def __init__(self, root: Path, expire_after: float, now=time.time):
        self.root = Path(root)
        self.expire_after = expire_after
        self.now = now

    # -- paths: one JSON entry, one stored reply and one lock file per key
    def _entry(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def _reply(self, key: str) -> Path:
        return self.root / f"{key}.reply.eml"

    def _lock(self, key: str) -> Path:
        return self.root / "locks" / f"{key}.lock"

    def key_for(self, message_key: str, digest: str) -> str:
        """The Message-ID key, unless that ID was already seen with other content."""
        known = self.read(message_key)
        if known is not None and known.digest != digest:
            return digest[:32]
        return message_key

    @contextmanager
    def hold(self, key: str, digest: str) -> Iterator[Entry]:
        """Lock the message's key for the whole run and yield its entry (new or resumed)."""
        from filelock import FileLock, Timeout

        make_private_dirs(self.root / "locks")
        lock = FileLock(str(self._lock(key)), timeout=LOCK_TIMEOUT, mode=0o600)
        try:
            lock.acquire()
        except Timeout:
            raise JournalBusy(f"another delivery of this message has been running for {LOCK_TIMEOUT} s") from None
        try:
            entry = self.read(key)
            if entry is None:
                # Not waited onto the disk: lost in a power cut, the message simply starts afresh.
                entry = self.save(Entry(key=key, digest=digest, created=self.now()), durable=False)
            yield entry
        finally:
            lock.release()

    def read(self, key: str) -> Entry | None:
        try:
            data = json.loads(self._entry(key).read_text(encoding="utf-8"))
            return Entry(**{k: v for k, v in data.items() if k in Entry.__dataclass_fields__})
        except FileNotFoundError:
            return None
        except (ValueError, TypeError):
            # A damaged entry must not wedge the message: start it afresh, keep the evidence.
            damaged = self._entry(key)
            os.replace(damaged, damaged.with_suffix(".damaged"))
            return None

    def save(self, entry: Entry, durable: bool = True) -> Entry:
        entry = replace(entry, updated=self.now())
        make_private_dirs(self.root)
        write_atomically(self._entry(entry.key), json.dumps(asdict(entry), ensure_ascii=False).encode("utf-8"),
                         durable=durable)
        return entry

    def store_reply(self, entry: Entry, message: bytes) -> None:
        write_atomically(self._reply(entry.key), message)

    def stored_reply(self, entry: Entry) -> bytes | None:
        try:
            return self._reply(entry.key).read_bytes()
        except FileNotFoundError:
            return None

    def failed(self, entry: Entry) -> Entry:
        """Count a temporary failure; the first one starts the give-up clock."""
        first = entry.first_failure if entry.first_failure is not None else self.now()
        # A failure count lost in a power cut only restarts the give-up clock.
        return self.save(replace(entry, first_failure=first, failures=entry.failures + 1), durable=False)

    def failing_for(self, entry: Entry) -> float:
        return 0.0 if entry.first_failure is None else self.now() - entry.first_failure

    def finish(self, entry: Entry, **changes) -> Entry:
        saved = self.save(replace(entry, stage="done", **changes))
        try:
            self._reply(entry.key).unlink()
        except FileNotFoundError:
            pass
        return saved

    def count_crash(self, digest: str, signature: str) -> int:
        """Count crashes of one raw message (by content digest) with the same signature."""
        from filelock import FileLock

        key = f"crash-{digest[:32]}"
        make_private_dirs(self.root / "locks")
        with FileLock(str(self._lock(key)), timeout=LOCK_TIMEOUT, mode=0o600):
            try:
                known = json.loads(self._entry(key).read_text(encoding="utf-8"))
            except (FileNotFoundError, ValueError):
                known = {}
            count = known.get("count", 0) + 1 if known.get("signature") == signature else 1
            write_atomically(self._entry(key), json.dumps({"signature": signature, "count": count}).encode())
        return count

    def expire(self) -> int:
        """Remove entries older than expire_after; cheap, and at most once an hour."""
        marker = self.root / ".last-expiry"
        now = self.now()
        try:
            if now - marker.stat().st_mtime < EXPIRY_INTERVAL:
                return 0
        except FileNotFoundError:
            pass
        make_private_dirs(self.root)
        marker.touch(mode=0o600)
        os.utime(marker, (now, now))
        removed = 0
        for item in os.scandir(self.root):
            if item.is_file() and not item.name.startswith(".") and now - item.stat().st_mtime > self.expire_after:
                key = item.name.split(".", 1)[0]
                removed += self._remove_unlocked(key, item.path)
        return removed

    def _remove_unlocked(self, key: str, path: str) -> int:
        from filelock import FileLock, Timeout

        lock = FileLock(str(self._lock(key)), timeout=0)
        try:
            with lock:
                os.unlink(path)
        except (Timeout, FileNotFoundError):
            return 0
        try:
            os.unlink(self._lock(key))   # no one holds it: safe to drop with its entry
        except FileNotFoundError:
            pass
        return 1
