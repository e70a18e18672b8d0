"""Adapter: writes into ``logs/``, whose layout `stages.s8_record` names.

Every file is written to a temporary name and renamed into place, so a reader
never sees half a file; names are made from the time, the process and a random
part, or (for a mail kept once per message) from the message's key, a hex
digest: never from anything the mail says.  Files are 0600, folders 0700.
A temporary file left by a killed write is removed by `sweep`.
"""

from __future__ import annotations

import os
import time

from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from torokiki_pipe.adapters.clock import SystemClock

if TYPE_CHECKING:
    from torokiki_pipe.ports import Clock

from torokiki_pipe.stages.s8_record import JOURNAL, LOG_FILE, REPLY_COUNTERS, STASH_KINDS, TEMPORARY_PREFIX

SWEEP_INTERVAL = 3600         # seconds between two housekeeping sweeps
STALE_TEMPORARY = 3600        # a temporary file this old was left by a killed write


class Records(NamedTuple):
    """``logs/`` at `root`: the paths of its layout, and the only writes into it."""
    root: Path
    clock: Clock = SystemClock()

    @property
    def log_file(self) -> Path:
        return self.root / LOG_FILE

    @property
    def journal_dir(self) -> Path:
        return self.root / JOURNAL

    @property
    def counters_dir(self) -> Path:
        return self.root / REPLY_COUNTERS

    def folder(self, kind: str) -> Path:
        if kind not in STASH_KINDS:
            raise ValueError(f"unknown stash kind {kind!r}")
        return self.root / kind

    def stash(self, kind: str, files: dict[str, bytes], key: str = "") -> Path:
        """Keep related files under one name: ``{stem}{suffix}`` for each suffix.

        With a `key` (a message's hex key) the stem is the key: the first
        file (the mail) is written once, however often the message is
        delivered, and the files beside it (an HTTP exchange) are replaced by
        the latest, so they tell how it ended.  Without a key the stem is
        fresh.  Returns the path of the first file.  Each is written atomically.
        """
        folder = self.folder(kind)
        make_private_dirs(folder)
        stem = key if key and key.isalnum() else unique_stem(self.clock.time())
        written: list[Path] = []
        for suffix, data in files.items():
            target = folder / f"{stem}{suffix}"
            if not (key and not written and target.exists()):
                write_atomically(target, data)
            written.append(target)
        return written[0]

    def sweep_due(self, interval: float = SWEEP_INTERVAL) -> bool:
        """True at most once per `interval` across all runs: time for the housekeeping sweep."""
        marker = self.root / ".last-sweep"
        now = self.clock.time()
        try:
            if now - marker.stat().st_mtime < interval:
                return False
        except FileNotFoundError:
            pass
        make_private_dirs(self.root)
        marker.touch(mode=0o600)
        os.utime(marker, (now, now))
        return True

    def sweep(self, older_than: float = STALE_TEMPORARY) -> int:
        """Remove temporary files that killed writes left behind, anywhere under logs/."""
        removed = 0
        cutoff = self.clock.time() - older_than
        folders = [self.root, self.journal_dir, self.counters_dir, *(self.root / k for k in STASH_KINDS)]
        for folder in folders:
            try:
                items = list(os.scandir(folder))
            except OSError:
                continue
            for item in items:
                try:
                    if item.name.startswith(TEMPORARY_PREFIX) and item.stat().st_mtime < cutoff:
                        os.unlink(item.path)
                        removed += 1
                except OSError:
                    continue
        return removed

    def append_line(self, text: str) -> None:
        """Append to the log file with one write(2) on an O_APPEND descriptor.

        The kernel serialises O_APPEND writes to a local file, so lines from
        concurrent pipes never tear or overwrite each other.
        """
        make_private_dirs(self.root)
        data = (text.rstrip("\n") + "\n").encode("utf-8", "replace")
        fd = os.open(self.log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)


def unique_stem(now: float) -> str:
    # Sortable by time (`now`, epoch seconds), unique across processes and hosts sharing a folder.
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
    return f"{stamp}.{int(now % 1 * 1e6):06d}Z-{os.getpid()}-{os.urandom(4).hex()}"


def write_atomically(target: Path, data: bytes, durable: bool = True) -> None:
    """Readers see the old file or the new one, never half of one.

    `durable` also waits for the disk, so that the file outlives a power cut:
    for what the MTA's exit 0 hands over to us (kept mail, the journal's
    reply-stored/done stages); counters whose loss is harmless skip the wait.
    """
    # A fresh, private temporary name beside the target (what tempfile.mkstemp
    # does, without its import cost on every run).
    temporary = target.parent / f"{TEMPORARY_PREFIX}{os.getpid()}-{os.urandom(8).hex()}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
            if durable:
                stream.flush()
                os.fsync(stream.fileno())
        os.replace(temporary, target)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


def make_private_dirs(folder: Path) -> None:
    if not folder.is_dir():
        old = os.umask(0o077)
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        finally:
            os.umask(old)
