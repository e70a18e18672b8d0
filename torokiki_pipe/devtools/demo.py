"""The demo: the example mails, then the reply flow, through the real gateway; no mail server needed.

    python -m torokiki_pipe.devtools.demo [--examples DIR] [--out DIR] [--chromium PROGRAM] [--keep]

Starts the reference website (torokiki_pipe.reference_site) on a free
loopback port with a temporary store, writes a temporary env file whose
sendmail is the outbox stand-in (torokiki_pipe.devtools.outbox), and pipes
mails through the installed ``torokiki-pipe --config ENV`` exactly as Postfix
would, printing for each the exit code and the reply it produced:

1. each ``examples/*.eml`` (sorted);
2. the reply flow, answering by pressing Reply as people on phones do: a
   ``get``; a reply to the content mail with a photo, built as iPhone Mail
   builds it (``Re:`` and our subject, In-Reply-To our Message-ID, the photo
   inline in ``multipart/related``, our mail quoted below); a reply to the
   "Saved" mail with a few words.  Each reply answers what the gateway really
   sent (its Message-ID, Subject and text read back from the outbox), and
   after each step the demo prints what the website stored;
3. at the end, all the website stored.

Every HTML part of a reply is written to ``--out`` (default ``build/demo``) as
``<mail>.html``, with a phone-size screenshot ``<mail>.png`` beside it when
Debian's ``chromium`` is installed (torokiki_pipe.devtools.browser); without
it one line says so.  ``--keep`` keeps the temporary folder (env file,
outbox, logs, store) and says where it is.  Exit 0 when every mail ended 0
or 75 and each step of the flow was answered; 1 otherwise.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import html
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import textwrap
import urllib.request
from datetime import datetime, timezone
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parsedate_to_datetime
from pathlib import Path
from typing import Callable, NamedTuple

from torokiki_pipe.devtools import browser, outbox
from torokiki_pipe.reference_site.server import serve_in_thread
from torokiki_pipe.reference_site.store import make_png

SITE_URL = "http://torokiki.net"
GATEWAY = "gateway@torokiki.net"
API_KEY = "demo-api-key"
EXIT_MEANING = {0: "handled", 75: "retry later (EX_TEMPFAIL)", 64: "usage error"}
RULE = "-" * 72
BANNER = "=" * 72
PIPE_TIMEOUT = 120

# The reply flow's person, phone and picture.
SENDER = "Kiri Tane <kiri@example.net>"
SENDER_DOMAIN = "example.net"
PHONE_MAILER = "iPhone Mail (21E236)"
FLOW_CONTENT = f"{SITE_URL}/image/1/response"
PHOTO_NAME = "IMG_0417.PNG"
FLOW_WORDS = ("The tram stop was right outside the bank. My nana waited there every morning.\n"
              "tags: \u2018lambtonquay, tram, nana\u2019")


class Run(NamedTuple):
    """One mail through the pipe: its exit code (None: timed out) and the replies it sent."""
    code: int | None
    replies: list[Path]


def find_pipe() -> str | None:
    """The installed torokiki-pipe: next to this Python first, else on PATH."""
    beside = Path(sys.executable).parent / "torokiki-pipe"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("torokiki-pipe")


def find_examples() -> Path | None:
    for candidate in (Path.cwd() / "examples", Path(__file__).resolve().parents[1] / "examples"):
        if candidate.is_dir() and any(candidate.glob("*.eml")):
            return candidate
    return None


def write_env(path: Path, values: dict[str, str]) -> None:
    """A dotenv file, mode 0600 (it holds the API key)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as stream:
        stream.write("# written by torokiki_pipe.devtools.demo\n")
        for key, value in values.items():
            stream.write(f"{key}={value}\n")


def parse(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def subject_of(raw: bytes) -> str:
    return str(parse(raw).get("Subject", "(no subject)"))


def text_of(message: EmailMessage) -> str | None:
    """The text/plain body of `message`, or None when it has none."""
    body = message.get_body(("plain",))
    if body is None:
        return None
    try:
        return str(body.get_content())
    except (LookupError, ValueError) as error:
        return f"(cannot decode the text: {error})"


def structure(part: EmailMessage) -> str:
    """The MIME tree of `part` on one line: multipart/alternative [text/plain, ...]."""
    if part.is_multipart():
        inner = ", ".join(structure(p) for p in part.iter_parts())   # type: ignore[arg-type]
        return f"{part.get_content_type()} [{inner}]"
    notes = [part.get_content_type()]
    if part.get_filename():
        notes.append(str(part.get_filename()))
    if part.get_content_maintype() != "text":
        notes.append(f"{len(part.get_payload(decode=True) or b'')} bytes")
    if part.get("Content-ID"):
        notes.append("inline")
    return " ".join(notes)


def describe_reply(raw: bytes) -> str:
    """To, Subject, the threading headers, the text/plain part and the attachments of a reply."""
    message = parse(raw)
    lines = [f"To:          {message.get('To', '')}",
             f"Subject:     {message.get('Subject', '')}",
             f"Message-ID:  {message.get('Message-ID', '')}",
             f"In-Reply-To: {message.get('In-Reply-To', '(none)')}",
             f"Parts:       {structure(message)}"]
    if message.get("X-Outbox-Envelope-To"):
        lines.append(f"(envelope to {message['X-Outbox-Envelope-To']})")
    text = text_of(message)
    lines.append("")
    lines.extend((text if text is not None else "(no text/plain part)").rstrip("\n").splitlines())
    for part in message.iter_attachments():
        size = len(part.get_payload(decode=True) or b"")
        lines.append(f"[attachment: {part.get_filename() or '(no name)'}, "
                     f"{part.get_content_type()}, {size} bytes]")
    return "\n".join(lines)


def describe_sent(raw: bytes) -> str:
    """A mail the flow sends, as its writer's phone would show its source: headers, parts, text."""
    message = parse(raw)
    lines = [f"{name + ':':<13}{message[name]}" for name in
             ("From", "To", "Subject", "Message-ID", "In-Reply-To", "References") if message.get(name)]
    lines.append(f"Parts:       {structure(message)}")
    lines.append("")
    lines.extend((text_of(message) or "").strip("\n").splitlines())
    return "\n".join(lines)


def indent(text: str, prefix: str = "    | ") -> str:
    return textwrap.indent(text, prefix, lambda line: True)


def run_one(pipe: str, env_file: Path, raw: bytes, box: Path, environ: dict) -> Run:
    """Pipe one mail; print the exit code, stderr and the replies it sent."""
    before = set(outbox.messages(box))
    try:
        done = subprocess.run([pipe, "--config", str(env_file)], input=raw, capture_output=True,
                              timeout=PIPE_TIMEOUT, env=environ)
    except subprocess.TimeoutExpired:
        print(f"  torokiki-pipe did not finish within {PIPE_TIMEOUT} s")
        return Run(None, [p for p in outbox.messages(box) if p not in before])
    print(f"  exit {done.returncode} ({EXIT_MEANING.get(done.returncode, 'unexpected')})")
    stderr = done.stderr.decode("utf-8", "replace").strip()
    if stderr:
        print("  stderr:")
        print(indent(stderr))
    replies = [p for p in outbox.messages(box) if p not in before]
    if not replies:
        print("  no reply sent")
    for reply in replies:
        print("  reply:")
        print(indent(describe_reply(reply.read_bytes())))
    return Run(done.returncode, replies)


# --------------------------------------------------------------------------- the reply flow

def phone_mail(subject: str, now: datetime, answering: EmailMessage | None = None) -> EmailMessage:
    """The headers iPhone Mail writes; when `answering` one of our mails, threaded under it.
    Line endings LF, as Postfix's pipe hands a mail over."""
    message = EmailMessage(policy=email.policy.default)
    message["From"] = SENDER
    message["To"] = GATEWAY
    message["Subject"] = subject
    message["Date"] = format_datetime(now)
    message["Message-ID"] = make_msgid(domain=SENDER_DOMAIN)
    message["X-Mailer"] = PHONE_MAILER
    if answering is not None:
        ours = str(answering["Message-ID"])
        message["In-Reply-To"] = ours
        message["References"] = " ".join(str(answering.get("References", "")).split() + [ours])
    return message


def reply_subject(ours: EmailMessage) -> str:
    return f"Re: {ours['Subject']}"


def attribution(ours: EmailMessage) -> str:
    """Apple's line above a quote: "On 2 Dec 2026, at 05:44, Torokiki <gateway@...> wrote:"."""
    try:
        sent = parsedate_to_datetime(str(ours["Date"]))
    except (TypeError, ValueError):
        sent = datetime.now(timezone.utc)
    return f"On {sent.day} {sent:%b %Y}, at {sent:%H:%M}, {ours['From']} wrote:"


def quote(ours: EmailMessage) -> str:
    """Our mail's text as iPhone Mail quotes it below a reply, attribution inside the quote."""
    lines = [attribution(ours), "", *(text_of(ours) or "").rstrip("\n").splitlines()]
    return "\n".join(f"> {line}".rstrip() for line in lines) + "\n"


def get_mail(url: str, now: datetime) -> bytes:
    message = phone_mail(f"get: '{url}'", now)
    message.set_content("\n\nSent from my iPhone\n")
    return message.as_bytes()


def photo_reply(ours: EmailMessage, photo: bytes, now: datetime) -> bytes:
    """Reply pressed on `ours`, a photo added: text and HTML alternatives, the photo inline in
    multipart/related beside the HTML, our mail quoted below (blockquote type="cite")."""
    message = phone_mail(reply_subject(ours), now, answering=ours)
    message.set_content("\n\nSent from my iPhone\n\n" + quote(ours))
    cid = make_msgid(domain=SENDER_DOMAIN)
    quoted_html = "<br>".join(html.escape(line) for line in (text_of(ours) or "").rstrip("\n").splitlines())
    message.add_alternative(
        '<html><head><meta http-equiv="content-type" content="text/html; charset=utf-8"></head>'
        f'<body dir="auto"><img src="cid:{cid[1:-1]}" alt="{PHOTO_NAME}"><br><br>'
        '<div dir="ltr">Sent from my iPhone</div><div dir="ltr"><br>'
        f'<blockquote type="cite">{html.escape(attribution(ours))}<br><br></blockquote></div>'
        f'<blockquote type="cite"><div dir="ltr">{quoted_html}</div></blockquote></body></html>\n',
        subtype="html")
    html_part = message.get_payload()[1]       # type: ignore[index]  # multipart: a list
    assert isinstance(html_part, EmailMessage)
    html_part.add_related(photo, maintype="image", subtype="png", cid=cid, filename=PHOTO_NAME,
                          disposition="inline")
    return message.as_bytes()


def words_reply(ours: EmailMessage, words: str, now: datetime) -> bytes:
    """Reply pressed on `ours`, a few words written above the quote (plain text, as on a phone)."""
    message = phone_mail(reply_subject(ours), now, answering=ours)
    message.set_content(f"{words}\n\nSent from my iPhone\n\n" + quote(ours))
    return message.as_bytes()


def demo_photo() -> bytes:
    """A small picture: sky over harbour water, a band of hills between."""
    def pixel(x: int, y: int) -> tuple[int, int, int]:
        if y < 18:
            return (150 + y * 3, 190 + y, 235)
        if y < 24 + (x % 17) // 6:
            return (60, 110 - y, 60)
        return (30, 80 + (x * y) % 40, 140)
    return make_png(64, 48, pixel)


def reply_flow(send: Callable[[bytes], Run], stored: Callable[[], list]) -> list[tuple[str, Path]]:
    """The three steps; the replies sent, named for the output folder.  Stops at a step not answered."""
    print(BANNER)
    print("THE REPLY FLOW: answering by pressing Reply, as people on phones do.")
    print("Each mail below answers the mail the gateway really sent (read back from the outbox).")
    now = datetime.now(timezone.utc).replace(microsecond=0)
    steps: list[tuple[str, str, Callable[[EmailMessage | None], bytes]]] = [
        ("flow-1-get", f"Kiri asks for a picture: a mail with the subject get: '{FLOW_CONTENT}'",
         lambda ours: get_mail(FLOW_CONTENT, now)),
        ("flow-2-photo", "Kiri presses Reply on the content mail and adds a photo. As iPhone Mail builds it:\n"
                         "  \"Re: \" and our subject, In-Reply-To our Message-ID, the photo inline, our mail quoted",
         lambda ours: photo_reply(ours, demo_photo(), now)),          # type: ignore[arg-type]
        ("flow-3-words", "Kiri presses Reply on the \"Saved\" mail and writes a few words (and a tags line)\n"
                         "  above the quote: another response to the same picture",
         lambda ours: words_reply(ours, FLOW_WORDS, now)),             # type: ignore[arg-type]
    ]
    sent: list[tuple[str, Path]] = []
    ours: EmailMessage | None = None
    for number, (name, what, build) in enumerate(steps, 1):
        raw = build(ours)
        print(RULE)
        print(f"Step {number} of {len(steps)}: {what}")
        print("  sent:")
        print(indent(describe_sent(raw)))
        before = {item["location"] for item in stored()}
        run = send(raw)
        new = [item for item in stored() if item["location"] not in before]
        print("  the website stored:" + ("" if new else " nothing"))
        for item in new:
            print_item(item)
        sent.extend((name if n == 0 else f"{name}-{n + 1}", reply) for n, reply in enumerate(run.replies))
        if run.code != 0 or len(run.replies) != 1:
            print(f"The flow stops here: step {number} ended {run.code} with {len(run.replies)} replies.")
            raise FlowStopped(sent)
        ours = parse(run.replies[0].read_bytes())
    return sent


class FlowStopped(Exception):
    """A step of the flow got no single reply; carries the replies sent so far."""

    def __init__(self, sent: list[tuple[str, Path]]):
        super().__init__("the reply flow stopped")
        self.sent = sent


# --------------------------------------------------------------------------- what the website stored

def stats(base_url: str) -> dict:
    with urllib.request.urlopen(base_url + "/_stats", timeout=10) as answer:
        return json.load(answer)


def print_item(item: dict) -> None:
    content = item["content"]
    print(f"  {item['location']}")
    print(f"      InspiredBy: {content.get('InspiredBy')}")
    for field in ("Submitter", "Text", "Tags", "Objective", "Location"):
        if field in content:
            value = ", ".join(content[field]) if field == "Tags" else content[field]
            print(f"      {field}: {value}")
    if "Attachment" in content:
        attachment = content["Attachment"]
        print(f"      Attachment: {attachment['name']} ({attachment['bytes']} bytes)")


def print_stats(found: dict) -> None:
    print(f"The website received {found['posts']} submission(s): {found['stored']} stored, "
          f"{found['duplicates']} duplicate(s), {found['rejected']} rejected, "
          f"{found['unauthorized']} without the right API key; {found['gets']} fetch(es).")
    for item in found["items"]:
        print_item(item)
    if not found["items"]:
        print("  (nothing stored)")


# --------------------------------------------------------------------------- the HTML replies

def clear_output(out: Path) -> None:
    """Remove what an earlier demo wrote into `out` (its pages, images and screenshots only)."""
    if out.is_dir():
        for path in out.iterdir():
            if path.is_file() and (path.suffix in (".html", ".png") or ".cid" in path.name):
                path.unlink()


def show_html(replies: list[tuple[str, Path]], out: Path, chromium: str | None) -> None:
    """Each reply's HTML parts as pages in `out`, shot at phone size when chromium is there."""
    print(BANNER)
    pages: list[Path] = []
    plain: list[str] = []
    for name, reply in replies:
        found = browser.html_pages(reply.read_bytes(), out, name)
        pages.extend(found)
        if not found:
            plain.append(name)
    if not pages:
        print("No reply has an HTML part.")
        return
    width, height = browser.PHONE
    print(f"The HTML replies, written to {out}/ (open them in a browser):")
    if chromium is None:
        for page in pages:
            print(f"  {page.name}")
        print("No screenshots: chromium is not installed (apt-get install chromium; `make deps` does it as root).")
    else:
        print(f"  with a screenshot of each as a phone shows it, {width}x{height}:")
        for shot in browser.screenshots(chromium, pages):
            if shot.ok:
                print(f"  {shot.page.name}  ->  {shot.png.name}")
            else:
                print(f"  {shot.page.name}  (no screenshot: {shot.detail})")
    for page in pages:
        remote = browser.remote_resources(page.read_text(encoding="utf-8"))
        if remote:
            print(f"  {page.name} loads from the network: {', '.join(remote[:3])}")
    if plain:
        print(f"  (text only, no HTML part: {', '.join(plain)})")


# --------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m torokiki_pipe.devtools.demo",
                                     description="Pipe the example mails and the reply flow through torokiki-pipe.")
    parser.add_argument("--examples", type=Path, help="folder of .eml files (default: ./examples)")
    parser.add_argument("--pipe", help="the torokiki-pipe program (default: the installed one)")
    parser.add_argument("--out", type=Path, default=Path("build/demo"),
                        help="where the HTML replies and their screenshots go (default: build/demo)")
    parser.add_argument("--chromium", help="the browser for screenshots (default: chromium on PATH)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)

    pipe = args.pipe or find_pipe()
    if not pipe:
        print("torokiki-pipe is not installed: run `pip install -e .` (or `make demo`).", file=sys.stderr)
        return 1
    examples = args.examples or find_examples()
    mails = sorted(examples.glob("*.eml")) if examples else []
    if not mails:
        print("no example mails found (looked for examples/*.eml)", file=sys.stderr)
        return 1
    chromium = args.chromium if args.chromium is not None else browser.find_chromium()
    if chromium is not None and shutil.which(chromium) is None:
        chromium = None

    work = Path(tempfile.mkdtemp(prefix="torokiki-demo-"))
    odd: dict = {}
    flow_done = False
    server, base_url = serve_in_thread(work / "store", SITE_URL, api_key=API_KEY)
    try:
        box, logs = work / "outbox", work / "logs"
        box.mkdir()
        logs.mkdir()
        env_file = work / "torokiki.env"
        sendmail = shlex.join([sys.executable, "-m", "torokiki_pipe.devtools.outbox", str(box)])
        write_env(env_file, {
            "TOROKIKI_SITE_URL": SITE_URL,
            "TOROKIKI_API_URL": base_url,
            "TOROKIKI_API_KEY": API_KEY,
            "TOROKIKI_GATEWAY_ADDRESS": GATEWAY,
            "TOROKIKI_SENDMAIL": sendmail,
            "TOROKIKI_LOG_DIR": str(logs),
            "TOROKIKI_HTTP_TIMEOUT": "10",
        })
        # Only the env file configures the gateway: real TOROKIKI_* variables would win over it.
        environ = {k: v for k, v in os.environ.items() if not k.startswith("TOROKIKI_")}
        print(f"Reference website at {base_url} (public URL {SITE_URL}), gateway {GATEWAY}")
        print(f"Running {pipe} --config {env_file}")
        codes: dict[str, int | None] = {}
        replies: list[tuple[str, Path]] = []
        for mail in mails:
            raw = mail.read_bytes()
            print(RULE)
            print(f"{mail.name}   Subject: {subject_of(raw)}")
            run = run_one(pipe, env_file, raw, box, environ)
            codes[mail.name] = run.code
            replies.extend((mail.stem if n == 0 else f"{mail.stem}-{n + 1}", reply)
                           for n, reply in enumerate(run.replies))
        try:
            replies.extend(reply_flow(lambda raw: run_one(pipe, env_file, raw, box, environ),
                                      lambda: stats(base_url)["items"]))
            flow_done = True
        except FlowStopped as stopped:
            replies.extend(stopped.sent)
        print(BANNER)
        print_stats(stats(base_url))
        clear_output(args.out)
        show_html(replies, args.out, chromium)
        print(BANNER)
        odd = {name: code for name, code in codes.items() if code not in (0, 75)}
        if odd:
            print("Unexpected: " + ", ".join(f"{name} ended with {code if code is not None else 'a timeout'}"
                                           for name, code in odd.items()))
        if args.keep:
            print(f"Kept {work}: torokiki.env, outbox/ (replies), logs/, store/")
    finally:
        server.shutdown()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if odd or not flow_done else 0


if __name__ == "__main__":
    sys.exit(main())
