"""What more than one test module uses that is not a fixture: constants, mail builders, readers.

Test modules import from here (``from helpers import mail``), never from one
another, so that each test module can be run, moved or removed on its own.
Fixtures stay in conftest.py, which imports its constants from here too.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

SITE_URL = "http://torokiki.net"
GATEWAY = "gateway@torokiki.net"
GATEWAY_ADDRESS = GATEWAY
API_KEY = "test-api-key"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def mail(subject, body="", *headers, sender="Kiri Tane <kiri@example.net>", msgid="<m1@example.net>") -> bytes:
    """A plain mail to the gateway, LF line endings; `headers` are extra "Name: value" lines."""
    lines = [f"From: {sender}", f"To: {GATEWAY}", f"Subject: {subject}", f"Message-ID: {msgid}",
             "Date: Tue, 14 May 2024 08:12:24 +1200", *headers]
    return ("\n".join(lines) + "\n\n" + body).encode()


SEED = f"{SITE_URL}/image/1/response"     # content the reference website holds
PHOTO = bytes(range(256)) * 40


def photo_reply(subject: str, *headers: str, msgid: str, words: str = "") -> bytes:
    """A phone's reply with a photo: its words (if any), the quote of our mail, the photo."""
    body = ("--b\nContent-Type: text/plain; charset=utf-8\n\n" + (words + "\n\n" if words else "")
            + "On Tue, 14 May 2024 at 08:12, Torokiki <gateway@torokiki.net> wrote:\n"
            + "> Here is the Torokiki content you asked for:\n>   " + SEED + "\n"
            + "--b\nContent-Type: image/jpeg; name=tram.jpg\nContent-Transfer-Encoding: base64\n\n"
            + base64.encodebytes(PHOTO).decode() + "--b--\n")
    return mail(subject, body, "MIME-Version: 1.0", "Content-Type: multipart/mixed; boundary=b", *headers,
                msgid=msgid)


def files_in(folder: Path) -> list[Path]:
    """The entries of `folder` that are not hidden, sorted; [] when there is no such folder."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".")) if folder.is_dir() else []


def log_lines(pipe_env) -> list[str]:
    """The lines of the gateway's log in `pipe_env`'s log folder."""
    return (pipe_env.log_dir / "torokiki-pipe.log").read_text().splitlines()


def example(name: str) -> bytes:
    """The bytes of examples/<name> (e.g. "03-text-response.eml")."""
    return (EXAMPLES / name).read_bytes()


def write_env_file(path: Path, values: dict[str, str]) -> Path:
    """Write KEY=value lines (dotenv), mode 0600."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as stream:
        for key, value in values.items():
            stream.write(f"{key}={value}\n")
    os.chmod(path, 0o600)
    return path


def reply_links(message) -> dict[str, str]:
    """The links of a reply's HTML part, label -> href (the label is the link's text, spaces folded)."""
    from html.parser import HTMLParser

    links: dict[str, str] = {}
    opened: list[list] = []

    class Links(HTMLParser):
        def handle_starttag(self, tag, attrs):
            if tag == "a":
                opened.append([dict(attrs).get("href") or "", ""])

        def handle_data(self, data):
            if opened:
                opened[-1][1] += data

        def handle_endtag(self, tag):
            if tag == "a" and opened:
                href, label = opened.pop()
                links.setdefault(" ".join(label.split()), href)

    Links(convert_charrefs=True).feed(message.get_body(("html",)).get_content())
    return links
