"""Adapter: how many replies one address may get, safe under concurrent runs.

A forged sender or a misbehaving robot must not turn the gateway into a mail
cannon.  Each address has a window of reply times in a small JSON file under
``logs/replies/``, updated under a `filelock`.  The last reply allowed in a
window says that no more will follow for a while; past it, mail is still
processed, but not answered.  Separately, the same refused mail sent again
(same sender, same subject and body) is answered once a day only.
"""

from __future__ import annotations

import hashlib
import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from .records import make_private_dirs, write_atomically

if TYPE_CHECKING:
    from .config import ReplyLimit

SEND, LAST, SILENT = "send", "last", "silent"
IDENTICAL_WINDOW = 24 * 3600


class ReplyBudget:
    def __init__(self, root: Path, limit: ReplyLimit, now=time.time):
        self.root = Path(root)
        self.limit = limit
        self.now = now

    def take(self, address: str) -> str:
        """SEND, LAST (send, and say it is the last one for a while) or SILENT."""
        if self.limit.count <= 0:
            return SEND
        with self._locked(_digest(address.lower())) as path:
            now = self.now()
            times = [t for t in _read_list(path) if now - t < self.limit.window]
            if len(times) >= self.limit.count:
                return SILENT
            times.append(now)
            write_atomically(path, json.dumps(times).encode(), durable=False)   # a lost count is harmless
            return LAST if len(times) == self.limit.count else SEND

    def first_time_refused(self, address: str, subject: str, body) -> bool:
        """True the first time (per day) this sender sends this refused mail (its subject and body)."""
        key = "same-" + _digest(address.lower(), b"\0", subject.encode("utf-8", "replace"), b"\0", body)
        with self._locked(key) as path:
            now = self.now()
            seen = _read_list(path)
            if seen and now - seen[-1] < IDENTICAL_WINDOW:
                return False
            write_atomically(path, json.dumps([now]).encode(), durable=False)
            return True

    @contextmanager
    def _locked(self, name: str):
        from filelock import FileLock

        make_private_dirs(self.root)
        with FileLock(str(self.root / f"{name}.lock"), timeout=60, mode=0o600):
            yield self.root / f"{name}.json"


def _digest(*parts) -> str:
    # Fed piece by piece: the body of a refused 40 MB mail is hashed where it stands, not copied.
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
    return digest.hexdigest()[:32]


def _read_list(path: Path) -> list:
    try:
        value = json.loads(path.read_text())
        return [float(t) for t in value] if isinstance(value, list) else []
    except (FileNotFoundError, ValueError, TypeError):
        return []
