"""Stage 1: read the message the MTA hands over, within the size limit.

Reads at most ``limit + 1`` bytes, so an over-size mail is recognised without
holding all of it; the rest is drained (never stored) so the MTA's write does
not fail with a broken pipe.  A leading mbox ``From `` line, which Postfix's
local(8) prepends for alias pipes, is dropped; LF, CRLF and CR line endings are
all left to the parser, which accepts each.
"""

from __future__ import annotations

from typing import BinaryIO, NamedTuple

CHUNK = 1 << 20


class RawMail(NamedTuple):
    """The message as read from stdin, up to the size limit."""
    data: bytes          # the message, at most limit + 1 bytes of it
    oversize: bool       # more than the limit arrived; data is only the start


def read_mail(stream: BinaryIO, limit: int) -> RawMail:
    data = stream.read(limit + 1)
    oversize = len(data) > limit
    if oversize:
        drain(stream)
    return RawMail(data=strip_mbox_line(data), oversize=oversize)


def drain(stream: BinaryIO) -> None:
    """Read and forget the rest of the input."""
    try:
        while stream.read(CHUNK):
            pass
    except OSError:
        pass


def strip_mbox_line(data: bytes) -> bytes:
    if data.startswith(b"From "):
        end = data.find(b"\n")
        return data[end + 1:] if end >= 0 else b""
    return data
