"""Adapter: how many replies one address may get, safe under concurrent runs.

A forged sender or a misbehaving robot must not turn the gateway into a mail
cannon.  Each address has a window of reply times in a small JSON file under
``logs/replies/``, updated under a `filelock`.  The last reply allowed in a
window says that no more will follow for a while; past it, mail is still
processed, but not answered.  Separately, the same refused mail sent again
(same sender, same subject and body) is answered once a day only.

Every allowance is taken for one message (its journal key) and is idempotent:
a run killed after taking it and before storing the reply asks again on the
next delivery and gets the same answer, so a reply that is owed is never
withheld, and a retry never counts twice.  Files whose window has passed are
removed by `expire`.
"""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from filelock import FileLock, Timeout

from torokiki_pipe.adapters.clock import SystemClock
from torokiki_pipe.adapters.records import make_private_dirs, write_atomically

if TYPE_CHECKING:
    from typing import Final

    from torokiki_pipe.config import ReplyLimit
    from torokiki_pipe.ports import Clock, Decision

# take()'s answers (ports.Decision): send the reply; send it and say it is the last one for a while; send none.
SEND: Final = "send"
LAST: Final = "last"
SILENT: Final = "silent"
IDENTICAL_WINDOW = 24 * 3600
SAME_PREFIX = "same-"


class ReplyBudget:
    def __init__(self, root: Path, limit: ReplyLimit, clock: Clock = SystemClock()):
        self.root = Path(root)
        self.limit = limit
        self.clock = clock

    def take(self, address: str, key: str = "") -> Decision:
        """SEND, LAST (send, and say it is the last one for a while) or SILENT, for message `key`."""
        if self.limit.replies <= 0:
            return SEND
        with self._locked(_digest(address.lower())) as path:
            now = self.clock.time()
            granted = [(t, k) for t, k in _read_list(path) if now - t < self.limit.window]
            for position, (_, known) in enumerate(granted, 1):
                if key and known == key:          # asked again for the same message: same answer
                    return LAST if position == self.limit.replies else SEND
            if len(granted) >= self.limit.replies:
                return SILENT
            granted.append((now, key))
            write_atomically(path, json.dumps(granted).encode(), durable=False)   # a lost count is harmless
            return LAST if len(granted) == self.limit.replies else SEND

    def first_time_refused(self, address: str, subject: str, body: bytes | memoryview, key: str = "") -> bool:
        """True the first time (per day) this sender sends this refused mail (its subject and body),
        and again whenever the message that was first (`key`) asks."""
        name = SAME_PREFIX + _digest(address.lower(), b"\0", subject.encode("utf-8", "replace"), b"\0", body)
        with self._locked(name) as path:
            now = self.clock.time()
            seen = _read_list(path)
            if seen and now - seen[-1][0] < IDENTICAL_WINDOW:
                return bool(key) and seen[-1][1] == key
            write_atomically(path, json.dumps([(now, key)]).encode(), durable=False)
            return True

    def expire(self) -> int:
        """Remove the files of addresses and refused mails whose window has passed."""
        try:
            items = list(os.scandir(self.root))
        except FileNotFoundError:
            return 0
        removed = 0
        oldest = self.clock.time() - max(self.limit.window, IDENTICAL_WINDOW)
        for item in items:
            name, dot, suffix = item.name.rpartition(".")
            try:
                if suffix not in ("json", "lock") or not dot or item.stat().st_mtime > oldest:
                    continue
            except FileNotFoundError:     # removed with its pair a moment ago
                continue
            removed += self._remove_if_stale(name, oldest)
        return removed

    def _remove_if_stale(self, name: str, oldest: float) -> int:
        """1 when the file of `name` was removed (with its lock), else 0."""

        path, lock_path = self.root / f"{name}.json", self.root / f"{name}.lock"
        try:
            with FileLock(str(lock_path), timeout=0):
                times = _read_list(path)
                if times and max(t for t, _ in times) > oldest:
                    return 0
                existed = path.exists()
                path.unlink(missing_ok=True)
                lock_path.unlink(missing_ok=True)     # removed while held (see journal.py)
        except (Timeout, FileNotFoundError):
            return 0
        return int(existed)

    @contextmanager
    def _locked(self, name: str):
        make_private_dirs(self.root)
        with FileLock(str(self.root / f"{name}.lock"), timeout=60, mode=0o600):
            yield self.root / f"{name}.json"


def _digest(*parts) -> str:
    # Fed piece by piece: the body of a refused 40 MB mail is hashed where it stands, not copied.
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
    return digest.hexdigest()[:32]


def _read_list(path: Path) -> list[tuple[float, str]]:
    """[(time, message key)]; files written before keys were kept hold bare times."""
    try:
        value = json.loads(path.read_text())
    except (FileNotFoundError, ValueError, TypeError):
        return []
    if not isinstance(value, list):
        return []
    found = []
    for item in value:
        try:
            when, key = (item, "") if isinstance(item, (int, float)) else (item[0], item[1])
            found.append((float(when), str(key)))
        except (TypeError, ValueError, IndexError):
            continue
    return found
