"""The demo: every example mail through the real gateway, no mail server needed.

    python -m torokiki_pipe.devtools.demo [--examples DIR] [--keep]

Starts the reference website (torokiki_pipe.devtools.reference_site) on a free
loopback port with a temporary store, writes a temporary env file whose
sendmail is the outbox stand-in (torokiki_pipe.devtools.outbox), pipes each
``examples/*.eml`` (sorted) through the installed ``torokiki-pipe --config
ENV`` exactly as Postfix would, and prints for each mail the exit code and the
reply it produced; at the end, what the website stored.  ``--keep`` keeps the
temporary folder (env file, outbox, logs, store) and says where it is.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import textwrap
import urllib.request
from pathlib import Path

from torokiki_pipe.devtools import outbox
from torokiki_pipe.devtools.reference_site.server import serve_in_thread

SITE_URL = "http://torokiki.net"
GATEWAY = "gateway@torokiki.net"
API_KEY = "demo-api-key"
EXIT_MEANING = {0: "handled", 75: "retry later (EX_TEMPFAIL)", 64: "usage error"}
RULE = "-" * 72


def find_pipe() -> str | None:
    """The installed torokiki-pipe: next to this Python first, else on PATH."""
    beside = Path(sys.executable).parent / "torokiki-pipe"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("torokiki-pipe")


def find_examples() -> Path | None:
    for candidate in (Path.cwd() / "examples", Path(__file__).resolve().parents[2] / "examples"):
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


def subject_of(raw: bytes) -> str:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    return str(message.get("Subject", "(no subject)"))


def describe_reply(raw: bytes) -> str:
    """To, Subject, the text/plain part and the attachments of a reply, for people."""
    message = email.message_from_bytes(raw, policy=email.policy.default)
    lines = [f"To:      {message.get('To', '')}",
             f"Subject: {message.get('Subject', '')}"]
    if message.get("X-Outbox-Envelope-To"):
        lines.append(f"(envelope to {message['X-Outbox-Envelope-To']})")
    body = message.get_body(("plain",))
    lines.append("")
    if body is None:
        lines.append("(no text/plain part)")
    else:
        try:
            text = body.get_content()
        except (LookupError, ValueError) as error:
            text = f"(cannot decode the text: {error})"
        lines.extend(text.rstrip("\n").splitlines())
    for part in message.iter_attachments():
        size = len(part.get_payload(decode=True) or b"")
        lines.append(f"[attachment: {part.get_filename() or '(no name)'}, "
                     f"{part.get_content_type()}, {size} bytes]")
    return "\n".join(lines)


def indent(text: str, prefix: str = "    | ") -> str:
    return textwrap.indent(text, prefix, lambda line: True)


def run_one(pipe: str, env_file: Path, mail: Path, box: Path, environ: dict) -> int | None:
    """Pipe one mail; print what happened; return the exit code (None: timed out)."""
    raw = mail.read_bytes()
    before = set(outbox.messages(box))
    print(RULE)
    print(f"{mail.name}   Subject: {subject_of(raw)}")
    try:
        done = subprocess.run([pipe, "--config", str(env_file)], input=raw, capture_output=True,
                              timeout=120, env=environ)
    except subprocess.TimeoutExpired:
        print("  torokiki-pipe did not finish within 120 s")
        return None
    meaning = EXIT_MEANING.get(done.returncode, "unexpected")
    print(f"  exit {done.returncode} ({meaning})")
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
    return done.returncode


def stats(base_url: str) -> dict:
    with urllib.request.urlopen(base_url + "/_stats", timeout=10) as answer:
        return json.load(answer)


def print_stats(found: dict) -> None:
    print(RULE)
    print(f"The website received {found['posts']} submission(s): {found['stored']} stored, "
          f"{found['duplicates']} duplicate(s), {found['rejected']} rejected, "
          f"{found['unauthorized']} without the right API key; {found['gets']} fetch(es).")
    for item in found["items"]:
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
    if not found["items"]:
        print("  (nothing stored)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m torokiki_pipe.devtools.demo",
                                     description="Pipe the example mails through torokiki-pipe.")
    parser.add_argument("--examples", type=Path, help="folder of .eml files (default: ./examples)")
    parser.add_argument("--pipe", help="the torokiki-pipe program (default: the installed one)")
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

    work = Path(tempfile.mkdtemp(prefix="torokiki-demo-"))
    odd: dict = {}
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
        codes = {mail.name: run_one(pipe, env_file, mail, box, environ) for mail in mails}
        print_stats(stats(base_url))
        print(RULE)
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
    return 1 if odd else 0


if __name__ == "__main__":
    sys.exit(main())
