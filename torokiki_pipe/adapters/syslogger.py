"""Adapter: one line to the local syslog daemon, over its socket (TOROKIKI_SYSLOG_SOCKET).

What glibc's syslog(3) does, with the socket's path a setting: a datagram
``<PRI>Mmm dd hh:mm:ss torokiki-pipe[PID]: text`` (RFC 3164, local time) to a
Unix socket, /dev/log by default; a stream socket gets the same bytes ended
by a NUL.  `send` returns "" once the daemon took the line, else why not
(no socket, nobody listening, no answer within SEND_TIMEOUT): the caller has
nothing better to do with it than its stderr line, so it never raises.
`probe` connects without sending anything: whether a line would get through.
"""

from __future__ import annotations

import os
import socket
import time

LOG_MAIL = 2 << 3                 # facility "mail" (RFC 5424 6.2.1), shifted as PRI wants it
LOG_WARNING, LOG_INFO = 4, 6
IDENT = "torokiki-pipe"
SEND_TIMEOUT = 2.0                # seconds: a stuck daemon must not hold the mail
MAX_LINE_BYTES = 8000             # rsyslog's and journald's default message size, with room for the head


def line_for(text: str, severity: int, when: time.struct_time, pid: int) -> bytes:
    """The datagram for `text` (pure): priority, time stamp, ident[pid], text, cut to MAX_LINE_BYTES."""
    stamp = f"{time.strftime('%b', when)} {when.tm_mday:2d} {time.strftime('%H:%M:%S', when)}"
    data = f"<{LOG_MAIL | severity}>{stamp} {IDENT}[{pid}]: {text}".encode("utf-8", "replace")
    return data[:MAX_LINE_BYTES]


def send(path: str, text: str, severity: int = LOG_INFO) -> str:
    """Hand `text` to the syslog daemon at `path` with facility mail; "" when taken, else why not."""
    data = line_for(text, severity, time.localtime(), os.getpid())
    error = _send(path, data, socket.SOCK_DGRAM)
    if error is not None and error.startswith("EPROTOTYPE"):
        error = _send(path, data + b"\0", socket.SOCK_STREAM)
    return error or ""


def probe(path: str) -> str:
    """Whether a syslog daemon listens at `path` (connect only, nothing sent): "" yes, else why not."""
    error = _send(path, None, socket.SOCK_DGRAM)
    if error is not None and error.startswith("EPROTOTYPE"):
        error = _send(path, None, socket.SOCK_STREAM)
    return error or ""


def _send(path: str, data: bytes | None, kind: int) -> str | None:
    try:
        with socket.socket(socket.AF_UNIX, kind) as connection:
            connection.settimeout(SEND_TIMEOUT)
            connection.connect(path)
            if data is not None:
                connection.sendall(data)
    except socket.timeout:
        return f"the syslog daemon at {path} took nothing within {SEND_TIMEOUT:g} s"
    except OSError as error:
        import errno

        name = errno.errorcode.get(error.errno or 0, "")
        if error.errno == errno.EPROTOTYPE:
            return f"EPROTOTYPE {path}"
        if error.errno == errno.ENOENT:
            return f"there is no socket {path}"
        if error.errno == errno.ECONNREFUSED:
            return f"nothing listens on {path} (a syslog daemon that stopped?)"
        return f"{path}: {(error.strerror or name).lower()}"
    return None
