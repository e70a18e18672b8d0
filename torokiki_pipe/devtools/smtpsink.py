"""A small SMTP sink that keeps every message it is given (benchmark, demo, manual tests).

The tests deliver through the real msmtp into an aiosmtpd server, but aiosmtpd is a
test-only dependency; the benchmark (and a demo or a manual test) needs a sink that
the installed package can always run, so this one is standard library only.  It speaks the part of
RFC 5321 that msmtp (and swaks, or a human with telnet) uses: EHLO/HELO, MAIL FROM
(null sender ``<>`` and ESMTP parameters accepted), RCPT TO, DATA, RSET, NOOP, QUIT;
it advertises 8BITMIME, SMTPUTF8 (RFC 6531) and SIZE, and no PIPELINING, so that
clients wait for every answer.  UTF-8 addresses are taken with or without the
SMTPUTF8 parameter of MAIL FROM (as Postfix with strict_smtputf8 = no does), and
``Received.smtputf8`` says whether the client asked for it: how a test tells a
client that speaks RFC 6531 (Postfix) from one that only passes UTF-8 through
(msmtp).  It is a sink, not a mail server: no relaying, no authentication, no TLS.

    python -m torokiki_pipe.devtools.smtpsink [--host H] [--port N] [DIR]

or, in Python, ``sink = serve_in_thread(directory=None)`` and then ``sink.port``,
``sink.count()``, ``sink.messages``, ``sink.wait_for(n)``, ``sink.clear()`` and
``sink.shutdown()``.  The 250 after DATA is sent only once the message is recorded
(and written to DIR, when given), so a client that exited 0 left its message here.

Each message is kept as ``Received(mail_from, rcpt_tos, data, smtputf8)``: ``data`` is what the
client sent between DATA and the final ``.``, dot-stuffing undone, CRLF line endings as
on the wire; the null sender is recorded as ``"<>"`` (as aiosmtpd does).  In DIR each
message is a file ``<time>-<n>.eml`` (written to a temporary name, then renamed, so a
reader never sees half a file) that starts with ``X-Sink-Envelope-From:`` and
``X-Sink-Envelope-To:`` lines (and ``X-Sink-SMTPUTF8: yes`` when it was asked for).
"""

from __future__ import annotations

import argparse
import itertools
import os
import select
import signal
import socket
import socketserver
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from torokiki_pipe.adapters.records import write_atomically

DEFAULT_MAX_SIZE = 100 * 1024 * 1024      # above any reply the gateway can send (40 MB mails)
MAX_COMMAND_LINE = 4096                   # RFC 5321 asks for 512; be lenient, but bounded
CLIENT_TIMEOUT = 120                      # seconds of silence before a client is dropped
_CHUNK = 256 * 1024
_QUICKACK = getattr(socket, "TCP_QUICKACK", None)     # Linux only
_BULK = 64 * 1024                       # DATA beyond this is "the bulk of a big message"


@dataclass(frozen=True)
class Received:
    mail_from: str                 # "<>" for the null sender
    rcpt_tos: tuple[str, ...]
    data: bytes
    smtputf8: bool = False         # the client asked for SMTPUTF8 (MAIL FROM:<...> SMTPUTF8)


class _LineTooLong(Exception):
    pass


class _Connection:
    """A socket with a read buffer: command lines one at a time, DATA in big chunks.

    Reading DATA line by line costs a Python call per line (hundreds of thousands for
    a 40 MB message, in the time the client waits for its 250); searching the buffer
    for the end marker and undoing dot-stuffing with bytes.replace stays in C.
    """

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buffer = bytearray()

    def _fill(self, bulk: bool = False) -> bool:
        # msmtp writes a message one line per send(); with Nagle on its side and a delayed
        # ACK on ours, each pause (after the first line, before the final ".") costs ~40 ms
        # waiting for our ACK, so a quick ACK is asked for before each recv.  In the bulk of
        # a big message that would ACK every few hundred bytes (a recv each, a second of CPU
        # for 40 MB): there ACKs stay delayed (0) while data keeps arriving within 1 ms.
        if _QUICKACK is not None:
            flowing = bulk and select.select([self.sock], [], [], 0.001)[0]
            self.sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 0 if flowing else 1)
        chunk = self.sock.recv(_CHUNK)
        if not chunk:
            return False
        self.buffer += chunk
        return True

    def send(self, text: str) -> None:
        self.sock.sendall(text.encode("ascii") + b"\r\n")

    def readline(self) -> bytes | None:
        """One command line without its line ending; None when the client is gone."""
        scanned = 0
        while True:
            end = self.buffer.find(b"\n", scanned)
            if end >= 0:
                line = bytes(self.buffer[:end + 1])
                del self.buffer[:end + 1]
                if len(line) > MAX_COMMAND_LINE:
                    raise _LineTooLong
                return line.rstrip(b"\r\n")
            scanned = len(self.buffer)
            if scanned > MAX_COMMAND_LINE:
                self.buffer.clear()
                raise _LineTooLong
            if not self._fill():
                return None

    def read_data(self, max_size: int) -> tuple[bytes, bool] | None:
        """(message up to CRLF.CRLF with dot-stuffing undone, whether it exceeded `max_size`);
        a message too big is read to its end all the same, and not kept.  None when the
        client is gone."""
        buffer = self.buffer
        scanned, skipped = 0, 0
        while True:
            if not skipped and buffer.startswith(b".\r\n"):     # an empty message
                del buffer[:3]
                return b"", False
            end = buffer.find(b"\r\n.\r\n", max(0, scanned - 4))
            if end >= 0:
                break
            scanned = len(buffer)
            if skipped + scanned > max_size:
                # Too big: keep only the tail that may hold the start of the end marker.
                skipped += scanned - 4
                del buffer[:-4]
                scanned = 4
            if not self._fill(bulk=skipped + scanned > _BULK):
                return None
        data = bytes(buffer[:end + 2])
        del buffer[:end + 5]
        if skipped or len(data) > max_size:
            return b"", True
        # RFC 5321 4.5.2: a line that starts with a period lost that period.
        data = data.replace(b"\r\n.", b"\r\n")
        return (data[1:] if data.startswith(b".") else data), False


def _address(argument: str, keyword: str) -> str | None:
    """The address of `FROM:<a@b> PARAMS` / `TO:<a@b>`; "<>" for the null sender."""
    if not argument[:len(keyword)].upper() == keyword:
        return None
    rest = argument[len(keyword):].strip()
    if rest.startswith("<"):
        end = rest.find(">")
        if end < 0:
            return None
        address = rest[1:end]
    else:                                       # lenient: a bare address
        address = rest.split(" ", 1)[0]
    if ":" in address and address.startswith("@"):
        address = address.split(":", 1)[1]      # a source route, which RFC 5321 says to ignore
    return address or ("<>" if keyword == "FROM:" else None)


def _smtputf8_parameter(argument: str) -> bool:
    return any(word.upper() == "SMTPUTF8" for word in argument.split()[1:])


def _size_parameter(argument: str) -> int | None:
    for word in argument.split()[1:]:
        key, _, value = word.partition("=")
        if key.upper() == "SIZE" and value.isdigit():
            return int(value)
    return None


class _Session(socketserver.BaseRequestHandler):
    server: "SmtpSink"

    def handle(self) -> None:
        self.request.settimeout(CLIENT_TIMEOUT)
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)   # one write per answer
        connection = _Connection(self.request)
        sink = self.server
        mail_from: str | None = None
        rcpt_tos: list[str] = []
        smtputf8 = False
        try:
            connection.send(f"220 {sink.hostname} ESMTP torokiki smtpsink")
            while True:
                try:
                    raw = connection.readline()
                except _LineTooLong:
                    connection.send("500 5.5.2 Line too long")
                    continue
                if raw is None:
                    return
                line = raw.decode("utf-8", "replace")
                verb, _, argument = line.partition(" ")
                verb = verb.upper()
                if verb == "EHLO":
                    mail_from, rcpt_tos = None, []
                    connection.send(f"250-{sink.hostname}\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE {sink.max_size}")
                elif verb == "HELO":
                    mail_from, rcpt_tos = None, []
                    connection.send(f"250 {sink.hostname}")
                elif verb == "MAIL":
                    address = _address(argument, "FROM:")
                    size = _size_parameter(argument)
                    if mail_from is not None:
                        connection.send("503 5.5.1 Nested MAIL command")
                    elif address is None:
                        connection.send("501 5.5.4 Syntax: MAIL FROM:<address>")
                    elif size is not None and size > sink.max_size:
                        connection.send("552 5.3.4 Message size exceeds fixed maximum message size")
                    else:
                        mail_from, rcpt_tos, smtputf8 = address, [], _smtputf8_parameter(argument)
                        connection.send("250 2.1.0 OK")
                elif verb == "RCPT":
                    address = _address(argument, "TO:")
                    if mail_from is None:
                        connection.send("503 5.5.1 Need MAIL before RCPT")
                    elif address is None or address == "<>":
                        connection.send("501 5.5.4 Syntax: RCPT TO:<address>")
                    else:
                        rcpt_tos.append(address)
                        connection.send("250 2.1.5 OK")
                elif verb == "DATA":
                    if argument.strip():
                        connection.send("501 5.5.4 Syntax: DATA")
                        continue
                    if mail_from is None or not rcpt_tos:
                        connection.send("503 5.5.1 Need MAIL and RCPT before DATA")
                        continue
                    connection.send("354 End data with <CR><LF>.<CR><LF>")
                    read = connection.read_data(sink.max_size)
                    if read is None:
                        return
                    data, too_big = read
                    envelope = (mail_from, tuple(rcpt_tos))
                    mail_from, rcpt_tos = None, []
                    if too_big:
                        connection.send("552 5.3.4 Message size exceeds fixed maximum message size")
                        continue
                    try:
                        sink.deliver(Received(envelope[0], envelope[1], data, smtputf8))
                    except OSError as error:
                        connection.send(f"451 4.3.0 Cannot store the message: {error.strerror}")
                        continue
                    connection.send("250 2.0.0 OK: queued")
                elif verb == "RSET":
                    mail_from, rcpt_tos = None, []
                    connection.send("250 2.0.0 OK")
                elif verb == "NOOP":
                    connection.send("250 2.0.0 OK")
                elif verb == "QUIT":
                    connection.send(f"221 2.0.0 {sink.hostname} closing connection")
                    return
                else:
                    connection.send("502 5.5.2 Command not implemented")
        except OSError:                             # socket.timeout included
            return                                  # the client went away or fell silent


class SmtpSink(socketserver.ThreadingTCPServer):
    """The sink: a threaded SMTP server and the messages it was given."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64                 # bursts of concurrent msmtp runs (benchmark)

    def __init__(self, host: str = "127.0.0.1", port: int = 0, directory: os.PathLike | str | None = None,
                 max_size: int = DEFAULT_MAX_SIZE):
        self.directory = Path(directory) if directory is not None else None
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
        super().__init__((host, port), _Session)
        self.host, self.port = self.server_address[:2]
        self.hostname = "smtpsink.invalid"
        self.max_size = max_size
        self._received: list[Received] = []
        self._changed = threading.Condition()
        self._numbers = itertools.count(1)
        self.thread: threading.Thread | None = None

    # ---- what arrived
    @property
    def messages(self) -> list[Received]:
        """A snapshot of the messages, oldest first."""
        with self._changed:
            return list(self._received)

    def count(self) -> int:
        with self._changed:
            return len(self._received)

    def clear(self) -> None:
        """Forget the messages kept in memory (files in the directory stay)."""
        with self._changed:
            self._received.clear()

    def wait_for(self, n: int, timeout: float = 10) -> list[Received]:
        """The messages once there are at least `n`; TimeoutError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self._received) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"expected {n} message(s) at the SMTP sink within {timeout:g} s, "
                                       f"got {len(self._received)}")
                self._changed.wait(left)
            return list(self._received)

    def deliver(self, message: Received) -> None:
        if self.directory is not None:
            self._write(message)
        with self._changed:
            self._received.append(message)
            self._changed.notify_all()

    def _write(self, message: Received) -> None:
        head = (f"X-Sink-Envelope-From: <{message.mail_from.strip('<>')}>\r\n"
                f"X-Sink-Envelope-To: {', '.join(message.rcpt_tos)}\r\n"
                + ("X-Sink-SMTPUTF8: yes\r\n" if message.smtputf8 else "")).encode("utf-8", "replace")
        name = f"{time.time_ns():020d}-{next(self._numbers):06d}.eml"
        # Called by deliver() only when there is a directory.
        write_atomically(self.directory / name, head + message.data, durable=False)  # type: ignore[operator]

    # ---- running
    def start(self) -> "SmtpSink":
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05},
                                       name="torokiki-smtpsink", daemon=True)
        self.thread.start()
        return self

    def shutdown(self) -> None:
        """Stop serving (when started) and close the listening socket."""
        if self.thread is not None and self.thread.is_alive():
            super().shutdown()
            self.thread.join(timeout=10)
        self.server_close()


def serve_in_thread(directory: os.PathLike | str | None = None, host: str = "127.0.0.1",
                    port: int = 0, max_size: int = DEFAULT_MAX_SIZE) -> SmtpSink:
    """Start a sink on a free loopback port in a daemon thread; `sink.shutdown()` stops it."""
    return SmtpSink(host, port, directory, max_size).start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m torokiki_pipe.devtools.smtpsink",
                                     description="An SMTP sink that keeps every message it is given.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument("directory", nargs="?", help="also write each message into this folder")
    args = parser.parse_args(argv)
    try:
        sink = SmtpSink(args.host, args.port, args.directory)
    except OSError as error:
        print(f"cannot start: {error}", file=sys.stderr)
        return 1
    print(f"listening on {sink.host}:{sink.port}", flush=True)   # type: ignore[str-bytes-safe]  # an IP's text

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        sink.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        sink.server_close()
        print(f"{sink.count()} message(s) received", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
