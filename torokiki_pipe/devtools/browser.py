"""The gateway's HTML replies as a phone shows them: saved as pages, shot with headless Chromium.

    pages = html_pages(reply_bytes, folder, "02-get")     # [folder/02-get.html, ...]
    shots = screenshots(find_chromium(), pages)            # [Shot(page, png, ok, detail), ...]

`html_pages` writes each text/html part of a mail as a page of its own; the
images the part names by ``cid:`` (its ``multipart/related`` siblings) are
written beside it and the references rewritten to those files, so the page
shows what the mail shows.  `remote_resources` lists what a page would load
from the network (a reply must load nothing: mail apps block remote images).

`screenshot` starts Debian's ``chromium`` once per page, headless, at phone
size (PHONE, 390x844 CSS pixels), with a new profile in a temporary folder, a
bounded timeout and an argument list; the PNG goes beside the page.  It
returns a Shot and never raises: a browser that fails or hangs is a Shot with
``ok`` False and the reason.  Each start costs about a second of processor
time, so running several at once gains little on two cores: `screenshots`
runs two; `sheet` puts many pages in one, each in a phone-size frame, for one
start to shoot them all (the tests do that).  For the demo and the tests, not the
gateway: nothing in the pipe imports this module.
"""

from __future__ import annotations

import mimetypes
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from email import message_from_bytes, policy
from email.message import EmailMessage
from html import escape as html_escape
from html.parser import HTMLParser
from pathlib import Path
from typing import NamedTuple

PHONE = (390, 844)              # an iPhone 12-15's viewport, in CSS pixels
SHOT_TIMEOUT = 60.0             # seconds; a start takes about one
PARALLEL = 2             # the machines that run this have two cores or so

# Without the background-networking, component-update and sync flags Chromium
# reaches for Google's servers at start; on a closed network those connections
# are refused and the start slows down or fails.  --no-sandbox: CI runs as root,
# where Chromium's sandbox refuses to start.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")


class Shot(NamedTuple):
    """One screenshot: the page, where its PNG is (or would be), and whether it was made."""
    page: Path
    png: Path
    ok: bool
    detail: str = ""


def find_chromium() -> str | None:
    """Debian's chromium (package `chromium`) on PATH, or None."""
    return shutil.which("chromium")


_CID = re.compile(r"cid:([^\s\"'>)]+)", re.IGNORECASE)


def html_pages(raw: bytes, folder: Path, stem: str) -> list[Path]:
    """Each text/html part of the mail `raw` as folder/<stem>.html (then <stem>-2.html, ...)."""
    message = message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    folder.mkdir(parents=True, exist_ok=True)
    images: dict[str, str] = {}     # Content-ID (no angle brackets), lower case -> a file beside the pages
    for n, part in enumerate(p for p in message.walk() if p.get("Content-ID")):
        data = part.get_payload(decode=True)
        if not isinstance(data, bytes):
            continue
        cid = str(part["Content-ID"]).strip().strip("<>")
        name = f"{stem}.cid{n + 1}{mimetypes.guess_extension(part.get_content_type()) or '.bin'}"
        (folder / name).write_bytes(data)
        images[cid.lower()] = name
    pages: list[Path] = []
    for part in (p for p in message.walk() if p.get_content_type() == "text/html"):
        assert isinstance(part, EmailMessage)
        try:
            text = str(part.get_content())
        except (LookupError, ValueError):
            continue
        text = _CID.sub(lambda found: images.get(found[1].lower(), found[0]), text)
        page = folder / (f"{stem}.html" if not pages else f"{stem}-{len(pages) + 1}.html")
        page.write_text(text, encoding="utf-8")
        pages.append(page)
    return pages


# What a page loads by itself (not links the reader may tap): tag -> its attributes that fetch.
_FETCHING = {"img": ("src", "srcset"), "script": ("src",), "iframe": ("src",), "frame": ("src",),
             "embed": ("src",), "object": ("data",), "source": ("src", "srcset"), "track": ("src",),
             "video": ("src", "poster"), "audio": ("src",), "input": ("src",), "link": ("href",),
             "body": ("background",), "table": ("background",), "td": ("background",)}
_REMOTE = re.compile(r"^\s*(?:https?:|ftp:)?//", re.IGNORECASE)
_CSS_URL = re.compile(r"""(?:url\(\s*["']?|@import\s+["'])\s*((?:https?:|ftp:)?//[^"')\s]*)""", re.IGNORECASE)


class _Resources(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        fetching = _FETCHING.get(tag, ())
        for name, value in attrs:
            value = value or ""
            if name == "style":
                self.found.extend(_CSS_URL.findall(value))
            elif name in fetching:
                urls = [u.strip().split(" ")[0] for u in value.split(",")] if name == "srcset" else [value]
                self.found.extend(u for u in urls if _REMOTE.match(u))
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.found.extend(_CSS_URL.findall(data))


def remote_resources(html: str) -> list[str]:
    """The network addresses a page would load by itself (images, styles, scripts, frames)."""
    parser = _Resources()
    parser.feed(html)
    parser.close()
    return parser.found


def sheet(pages: list[Path], path: Path, size: tuple[int, int] = PHONE) -> Path:
    """A page at `path` showing `pages` one below the other, each in a frame of `size`: one
    browser start shoots them all (at `size` wide, len(pages) times its height high), each
    frame laid out as the page alone in a phone's viewport."""
    width, height = size
    frames = "".join(f'<iframe src="{html_escape(page.resolve().as_uri())}" width="{width}" height="{height}" '
                     'style="border: 0; display: block"></iframe>\n' for page in pages)
    path.write_text(f'<!DOCTYPE html>\n<html><body style="margin: 0">\n{frames}</body></html>\n',
                    encoding="utf-8")
    return path


def screenshot(program: str, page: Path, png: Path | None = None, size: tuple[int, int] = PHONE,
               timeout: float = SHOT_TIMEOUT) -> Shot:
    """Shoot `page` with `program` (a chromium) at `size`; the PNG goes to `png` (default: beside it)."""
    page = page.resolve()
    png = (png or page.with_suffix(".png")).resolve()
    png.unlink(missing_ok=True)         # an old shot must not pass for a new one
    with tempfile.TemporaryDirectory(prefix="torokiki-chromium-") as profile:
        command = [program, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                   f"--window-size={size[0]},{size[1]}", f"--screenshot={png}", page.as_uri()]
        try:
            done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return Shot(page, png, False, f"chromium did not finish within {timeout:g} s")
        except OSError as error:
            return Shot(page, png, False, f"cannot start {program}: {error}")
    if done.returncode != 0 or not png.is_file() or png.stat().st_size == 0:
        # Chromium's stderr is mostly D-Bus noise; its last lines say what went wrong.
        tail = " | ".join(done.stderr.decode("utf-8", "replace").strip().splitlines()[-3:])
        return Shot(page, png, False, f"chromium exited {done.returncode}, no screenshot: {tail}")
    return Shot(page, png, True)


def widths(program: str, pages: list[Path], size: tuple[int, int] = PHONE,
           timeout: float = SHOT_TIMEOUT) -> dict[Path, int] | str:
    """How wide each page lays out in a frame of `size` (its scrollWidth, CSS pixels), or why
    it could not be measured.  Wider than the frame means the phone scrolls sideways: a
    screenshot clips that silently, so the tests measure it.  One browser start for all."""
    width, height = size
    frames = "".join(f'<iframe src="{html_escape(page.resolve().as_uri())}" width="{width}" '
                     f'height="{height}"></iframe>\n' for page in pages)
    # After every frame loaded, the measurements go into the DOM that --dump-dom prints.
    script = ("<script>window.onload = function () { var out = [];"
              " for (var f of document.querySelectorAll('iframe'))"
              " out.push(f.contentDocument.documentElement.scrollWidth);"
              " document.body.setAttribute('data-widths', out.join(' ')); };</script>")
    with tempfile.TemporaryDirectory(prefix="torokiki-chromium-") as profile:
        measure = Path(profile) / "measure.html"
        measure.write_text(f"<!DOCTYPE html>\n<html><body>\n{frames}{script}</body></html>\n", encoding="utf-8")
        # file:// frames are other origins unless the browser is told to let file pages read them.
        command = [program, *CHROMIUM_FLAGS, f"--user-data-dir={profile}/data", "--allow-file-access-from-files",
                   "--dump-dom", measure.as_uri()]
        try:
            done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return f"chromium did not finish within {timeout:g} s"
        except OSError as error:
            return f"cannot start {program}: {error}"
    found = re.search(r'data-widths="([\d ]*)"', done.stdout.decode("utf-8", "replace"))
    numbers = found[1].split() if found else []
    if len(numbers) != len(pages):
        tail = " | ".join(done.stderr.decode("utf-8", "replace").strip().splitlines()[-3:])
        return f"chromium exited {done.returncode} without the widths: {tail}"
    return dict(zip(pages, map(int, numbers)))


def screenshots(program: str, pages: list[Path], size: tuple[int, int] = PHONE,
                timeout: float = SHOT_TIMEOUT, parallel: int = PARALLEL) -> list[Shot]:
    """`screenshot` of each page, a few at once; in the order of `pages`."""
    if not pages:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(pages)))) as pool:
        return list(pool.map(lambda page: screenshot(program, page, None, size, timeout), pages))
