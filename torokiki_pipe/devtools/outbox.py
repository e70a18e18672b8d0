"""A sendmail stand-in that writes each message to a folder (for the demo and tests).

    python -m torokiki_pipe.devtools.outbox DIR [sendmail options...] -- RECIPIENT...

Reads one message on stdin and stores it as ``DIR/<time>-<pid>-<random>.eml``
(atomically: a temporary file renamed into place), so file names sort in the
order the messages were sent.  Sendmail options such as ``-i``, ``-oi``,
``-t``, ``-f SENDER`` and ``-F NAME`` are accepted and ignored, except that
the envelope is recorded in two headers put before the message, the way a
delivery agent adds ``Return-Path``::

    X-Outbox-Envelope-From: <SENDER>      (only with -f)
    X-Outbox-Envelope-To: RECIPIENT, ...

It reads its input to end of file before it stores or exits 0: the gateway
counts a mailer that exits 0 with part of the reply unread as a hand-over that
failed.  Exit 0 when stored, 64 on a usage error (no folder, no recipient; the
input is not read, as sendmail does), 75 when the folder cannot be written
(sendmail's "try again later").
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from pathlib import Path

from torokiki_pipe.adapters.records import write_atomically

EX_OK, EX_USAGE, EX_TEMPFAIL = 0, 64, 75
_OPTIONS_WITH_VALUE = {"-f", "-F", "-r", "-o", "-O", "-B", "-N", "-R", "-V", "-X", "-C", "-L", "-p", "-q"}


def parse_args(args: list[str]) -> tuple[str | None, list[str]]:
    """(envelope sender or None, recipients) from sendmail-style arguments."""
    sender, recipients = None, []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            recipients.extend(args[i + 1:])
            break
        if arg in _OPTIONS_WITH_VALUE and i + 1 < len(args):
            if arg in ("-f", "-r"):
                sender = args[i + 1]
            i += 2
            continue
        if arg.startswith(("-f", "-r")) and len(arg) > 2 and not arg.startswith("-oi"):
            sender = arg[2:]
        elif not arg.startswith("-"):
            recipients.append(arg)
        i += 1
    return sender, recipients


def store(folder: os.PathLike | str, message: bytes, sender: str | None, recipients: list[str]) -> Path:
    """Write `message` (with envelope headers) into `folder`; return the new file."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    newline = b"\r\n" if b"\r\n" in message.split(b"\n", 1)[0] + b"\n" else b"\n"
    head = b""
    if sender is not None:
        head += b"X-Outbox-Envelope-From: <" + sender.strip("<>").encode("utf-8", "replace") + b">" + newline
    head += b"X-Outbox-Envelope-To: " + ", ".join(recipients).encode("utf-8", "replace") + newline
    name = f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}.eml"
    target = folder / name
    write_atomically(target, head + message)
    return target


def messages(folder: os.PathLike | str) -> list[Path]:
    """The stored messages of `folder`, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix == ".eml" and not p.name.startswith("."))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0].startswith("-"):
        print("usage: python -m torokiki_pipe.devtools.outbox DIR [options] -- RECIPIENT...", file=sys.stderr)
        return EX_USAGE
    folder, rest = argv[0], argv[1:]
    sender, recipients = parse_args(rest)
    if not recipients:
        print("outbox: no recipient given", file=sys.stderr)
        return EX_USAGE
    # To end of file, whatever its size (None: started with fd 0 closed).
    message = sys.stdin.buffer.read() if sys.stdin is not None else b""
    try:
        path = store(folder, message, sender, recipients)
    except OSError as error:
        print(f"outbox: cannot write to {folder}: {error}", file=sys.stderr)
        return EX_TEMPFAIL
    print(f"outbox: stored {path.name} for {', '.join(recipients)}", file=sys.stderr)
    return EX_OK


if __name__ == "__main__":
    sys.exit(main())
