"""The HTML replies in a real browser: every HTML part the pipe sends, shot by Chromium at phone size.

A set of mails (the examples, a mail that is no command, a get of content that
does not exist, replies to our content mail with a photo and words, with only
the quote) goes through the installed pipe, msmtp and the SMTP sink.  Each
text/html part of each reply is written as a page (devtools.browser.html_pages)
and shot with Debian's headless ``chromium`` at 390x844; the set of pages is
whatever the pipe sent, not a list kept here.  The pages are shot together, each
in a 390x844 frame of one sheet (devtools.browser.sheet): one browser start,
about two seconds, where one per page cost a second each.  The shot must exist
and be 390 pixels wide, and no page's band of it may be blank (more than one
colour: the PNG is decoded here with zlib and struct); no page may load anything
from the network (checked in the HTML: no http(s) address in a src, srcset, link
href, CSS url()).

Skips only when chromium is missing and the tests do not run as root; as root
(CI, where `make test` installs it through `make deps`) a missing chromium fails.
"""

from __future__ import annotations

import base64
import os
import struct
import zlib
from pathlib import Path

import pytest
from helpers import EXAMPLES, SITE_URL, mail

from torokiki_pipe.devtools import browser
from torokiki_pipe.reference_site.store import make_png

SEED = f"{SITE_URL}/image/1/response"
QUOTE = ("On Tue, 14 May 2024 at 08:12, Torokiki <gateway@torokiki.net> wrote:\n"
         "> Here is the Torokiki content you asked for:\n>   " + SEED + "\n")


# --------------------------------------------------------------------------- PNG, read with the stdlib

def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the IHDR chunk."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def png_rows(data: bytes):
    """The rows of pixels of an 8-bit, non-interlaced PNG, each as bytes, filters undone; and its
    bytes per pixel: (bpp, rows)."""
    pos, idat, header = 8, bytearray(), b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = chunk
        elif kind == b"IDAT":
            idat += chunk
        elif kind == b"IEND":
            break
    width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and interlace == 0, f"bit depth {depth}, interlace {interlace}: not read here"
    bpp = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour_type]
    stride = width * bpp
    raw = zlib.decompress(bytes(idat))

    def rows():
        previous = bytearray(stride)
        for y in range(height):
            start = y * (stride + 1)
            kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
            for i in range(stride):         # undo the row's filter (PNG spec, section 9)
                left = line[i - bpp] if i >= bpp else 0
                up = previous[i]
                if kind == 1:
                    line[i] = (line[i] + left) & 255
                elif kind == 2:
                    line[i] = (line[i] + up) & 255
                elif kind == 3:
                    line[i] = (line[i] + (left + up) // 2) & 255
                elif kind == 4:
                    corner = previous[i - bpp] if i >= bpp else 0
                    p = left + up - corner
                    pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                    line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 255
            yield bytes(line)
            previous = line
    return bpp, rows()


def tile_colours(data: bytes, tile_height: int, enough: int = 2) -> list[int]:
    """For each band of `tile_height` rows, top to bottom, how many pixel values it holds
    (counted up to `enough`: telling blank from not blank needs no more)."""
    bpp, rows = png_rows(data)
    tiles: list[set[bytes]] = []
    for y, row in enumerate(rows):
        if y % tile_height == 0:
            tiles.append(set())
        if len(tiles[-1]) < enough:
            tiles[-1].update(row[x:x + bpp] for x in range(0, len(row), bpp))
    return [min(len(tile), enough) for tile in tiles]


def test_the_png_reader_tells_a_blank_picture_from_one_with_something_on_it():
    blank = make_png(30, 20, lambda x, y: (255, 255, 255))
    dot = make_png(30, 20, lambda x, y: (0, 0, 0) if (x, y) == (29, 19) else (255, 255, 255))
    assert png_size(blank) == (30, 20)
    assert tile_colours(blank, 20) == [1]
    assert tile_colours(dot, 20) == [2]         # found in the very last pixel
    assert tile_colours(dot, 10) == [1, 2]      # the top band blank, the bottom one not


# --------------------------------------------------------------------------- what a page loads

@pytest.mark.parametrize("page, remote", [
    ('<p>Hi <a href="http://torokiki.net/image/1/response">open it</a> '
     '<a href="mailto:gateway@torokiki.net?subject=help">help</a></p>', []),     # links load nothing
    ('<img src="cid:photo@x"><img src="data:image/png;base64,iVBO">', []),
    ('<img src="http://torokiki.net/logo.png">', ["http://torokiki.net/logo.png"]),
    ('<img srcset="a.png 1x, https://cdn.example/b.png 2x">', ["https://cdn.example/b.png"]),
    ('<link rel="stylesheet" href="//fonts.example/css">', ["//fonts.example/css"]),
    ('<p style="background: url(\'https://t.example/pixel.gif\')">x</p>', ["https://t.example/pixel.gif"]),
    ('<style>@import "https://fonts.example/a.css"; p { color: red }</style>', ["https://fonts.example/a.css"]),
    ('<table background="http://t.example/bg.gif"><tr><td>x</td></tr></table>', ["http://t.example/bg.gif"]),
])
def test_remote_resources_are_what_a_page_loads_by_itself(page, remote):
    assert browser.remote_resources(page) == remote


# --------------------------------------------------------------------------- the replies, shot

def chromium_or_skip() -> str:
    found = browser.find_chromium()
    if found is not None:
        return found
    if os.geteuid() != 0:
        pytest.skip("chromium is not installed (apt-get install chromium; `make test` does it as root)")
    pytest.fail("chromium is not installed, and the tests run as root as in CI, where `make test` "
                "installs it (make deps): run `make deps`")


def the_mails() -> list[tuple[str, bytes]]:
    """Mails that between them get every kind of reply the gateway sends."""
    photo = base64.encodebytes(make_png(8, 6, lambda x, y: (x * 30, y * 40, 90))).decode()
    photo_reply = ("--b\nContent-Type: text/plain; charset=utf-8\n\nThe same corner today.\n\n" + QUOTE
                   + "--b\nContent-Type: image/png; name=IMG_0417.PNG\nContent-Transfer-Encoding: base64\n\n"
                   + photo + "--b--\n")
    made = [
        ("no-command", mail("hello there", "Can I send you a photo?\n", msgid="<b1@example.net>")),
        ("not-found", mail(f"get: '{SITE_URL}/image/9/response'", msgid="<b2@example.net>")),
        ("photo-and-words", mail(f"Re: Torokiki content: {SEED}", photo_reply, "MIME-Version: 1.0",
                                 "Content-Type: multipart/mixed; boundary=b", msgid="<b3@example.net>")),
        ("only-the-quote", mail(f"Re: Torokiki content: {SEED}", "\n" + QUOTE, msgid="<b4@example.net>")),
    ]
    return [(path.stem, path.read_bytes()) for path in sorted(EXAMPLES.glob("*.eml"))] + made


def test_every_html_reply_looks_right_at_phone_size(run_pipe, smtp_sink, tmp_path):
    chromium = chromium_or_skip()
    pages: list[Path] = []
    for name, message in the_mails():
        already = len(smtp_sink.messages)
        done = run_pipe(message)
        assert done.returncode == 0, (name, done.stderr)
        for n, received in enumerate(smtp_sink.messages[already:]):
            pages += browser.html_pages(received.data, tmp_path / "pages", f"{name}-{n + 1}")
    assert pages, "no reply had an HTML part (the help reply has one)"

    # One browser start for all of them: each page in its own phone-size frame, one below the other.
    width, height = browser.PHONE
    shot = browser.screenshot(chromium, browser.sheet(pages, tmp_path / "pages" / "all.html"),
                              size=(width, height * len(pages)))
    assert shot.ok, shot.detail
    data = shot.png.read_bytes()
    assert png_size(data) == (width, height * len(pages)), "not phone-wide, or a frame is missing"
    wrong = [f"{page.name}: blank (one colour)"
             for page, colours in zip(pages, tile_colours(data, height)) if colours < 2]
    wrong += [f"{page.name} loads from the network: {remote}" for page in pages
              if (remote := browser.remote_resources(page.read_text(encoding="utf-8")))]
    laid_out = browser.widths(chromium, pages)
    assert isinstance(laid_out, dict), laid_out
    wrong += [f"{page.name}: {wide} px wide, the phone scrolls sideways" for page, wide in laid_out.items()
              if wide > width]
    assert not wrong, f"see {shot.png}:\n" + "\n".join(wrong)
