"""``torokiki-pipe example [--list] [NAME] [--from ADDR] [--to ADDR]``: the example mails, from the install.

The example mails (a help request, a get, a text and a photo response, an HTML-only
response, a mistake, an out-of-office) are package data (torokiki_pipe/examples/,
which a checkout also shows as examples/), so an installed gateway can be tried
without a checkout (postfix/README.md, "Try it")::

    torokiki-pipe example help --from you@example.net \\
        | /usr/sbin/sendmail -i -f you@example.net gateway@torokiki.net

``--list`` prints one line per mail: its NAME and its Subject.  ``example NAME``
writes that mail, byte for byte, to stdout; NAME is the file name with or without
``.eml``, or the part after the number (``help``, ``get``...).  ``--from ADDR`` makes
it a new mail of ADDR's, to be answered there: From and Return-Path become ADDR,
and Message-ID and Date are new, so that a second try is a new message and not
the one the gateway has already answered.  ``--to ADDR`` sets To (the gateway
address, when it is not gateway@torokiki.net).

Exits 0; EX_USAGE (64) for an unknown NAME (the names on stderr) or wrong usage.
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib.resources import files


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(os.EX_USAGE, f"{self.prog}: {message}\n")


def examples() -> dict:
    """{name without .eml: the mail's bytes}, sorted by name."""
    folder = files("torokiki_pipe") / "examples"
    found = {entry.name[:-len(".eml")]: entry.read_bytes() for entry in folder.iterdir()
             if entry.name.endswith(".eml")}
    return dict(sorted(found.items()))


def find(mails: dict, name: str) -> str | None:
    """The name of the example NAME means: a file name, with or without .eml, or its part after the number."""
    name = name[:-len(".eml")] if name.endswith(".eml") else name
    if name in mails:
        return name
    matches = [known for known in mails if known.split("-", 1)[-1] == name]
    return matches[0] if len(matches) == 1 else None


def subject(raw: bytes) -> str:
    from email import message_from_bytes, policy

    return str(message_from_bytes(raw, policy=policy.default).get("Subject", ""))


def as_new_mail(raw: bytes, sender: str | None, recipient: str | None) -> bytes:
    """The mail with its From, Return-Path (and a new Message-ID and Date) or To replaced.

    Only those header fields are rewritten; every other byte stays as written (no
    refolding, no line ending changed), so the mail is still the example it was.
    """
    import re
    from email.utils import formatdate, make_msgid, parseaddr

    changes = {}
    if sender:
        address = parseaddr(sender)[1]
        changes = {"Return-Path": f"<{address}>", "From": sender,
                   "Message-ID": make_msgid("example", domain=address.rpartition("@")[2] or None),
                   "Date": formatdate(localtime=True)}
    if recipient:
        changes["To"] = recipient
    end = re.search(rb"\r?\n\r?\n", raw)
    head, rest = (raw[:end.start()], raw[end.start():]) if end else (raw, b"")
    newline = b"\r\n" if b"\r\n" in head[:1000] else b"\n"
    fields: list[bytes] = []
    for line in head.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line
        else:
            fields.append(line)
    wanted = {name.lower(): name for name in changes}
    kept, done = [], set()
    for field in fields:
        name = field.split(b":", 1)[0].strip().decode("ascii", "replace").lower()
        if name in wanted:
            if name not in done:
                kept.append(f"{wanted[name]}: {changes[wanted[name]]}".encode() + newline)
                done.add(name)
            continue
        kept.append(field)
    if kept and not kept[-1].endswith(b"\n"):
        kept[-1] += newline
    kept += [f"{wanted[name]}: {changes[wanted[name]]}".encode() + newline for name in wanted if name not in done]
    new_head = b"".join(kept)
    return new_head[:-len(newline)] + rest if rest else new_head


def main(argv) -> int:
    parser = _Parser(prog="torokiki-pipe example",
                     description="Print one of the example mails installed with the gateway, to try it: "
                                 "torokiki-pipe example help --from you@example.net "
                                 "| /usr/sbin/sendmail -i -f you@example.net gateway@torokiki.net")
    parser.add_argument("name", metavar="NAME", nargs="?", help="the example (see --list), e.g. 01-help or help")
    parser.add_argument("--list", action="store_true", help="list the examples: NAME and Subject")
    parser.add_argument("--from", dest="sender", metavar="ADDR",
                        help="send it as a new mail of ADDR (From, Return-Path, a new Message-ID and Date)")
    parser.add_argument("--to", dest="recipient", metavar="ADDR", help="the gateway's address, for the To header")
    args = parser.parse_args(argv)
    mails = examples()
    if args.list or args.name is None:
        for name, raw in mails.items():
            print(f"{name:<20} {subject(raw)}")
        return os.EX_OK
    name = find(mails, args.name)
    if name is None:
        print(f"torokiki-pipe example: no example {args.name!r}; there are: {', '.join(mails)}", file=sys.stderr)
        return os.EX_USAGE
    raw = mails[name]
    if args.sender or args.recipient:
        raw = as_new_mail(raw, args.sender, args.recipient)
    sys.stdout.buffer.write(raw)
    sys.stdout.flush()
    return os.EX_OK
