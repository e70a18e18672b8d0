"""Hostile mail through the real installed pipe: each finishes in seconds with a clear outcome.

Whatever arrives, the run ends with exit 0 (the website is up), an answer or a
kept file, one log line naming the outcome, and never a traceback.  The time
bound is generous (it catches hangs, it is not a benchmark).
"""
from __future__ import annotations

import base64
import re
import time

import pytest

from helpers import GATEWAY, files_in, log_lines

pytestmark = pytest.mark.integration  # the installed pipe, on hostile mail

RUN_TIMEOUT = 30      # seconds before subprocess.run gives up on the pipe
REASONABLE = 20       # seconds a hostile mail may take at most
URL = "http://torokiki.net/image/1/response"


def headers(subject: str, *extra: str, content_type: str | None = None) -> bytes:
    lines = ["From: Kiri Tane <kiri@example.net>", f"To: {GATEWAY}", f"Subject: {subject}",
             "Message-ID: <hostile@example.net>", "Date: Tue, 14 May 2024 08:12:24 +1200", *extra]
    if content_type:
        lines += ["MIME-Version: 1.0", f"Content-Type: {content_type}"]
    return ("\n".join(lines) + "\n").encode()


def multipart(subject: str, parts: list[bytes], boundary: str = "b") -> bytes:
    body = b"".join(b"--" + boundary.encode() + b"\n" + part + b"\n" for part in parts)
    return (headers(subject, content_type=f'multipart/mixed; boundary="{boundary}"') + b"\n"
            + body + b"--" + boundary.encode() + b"--\n")


def text_part(text: bytes, charset: str = "utf-8", cte: str = "8bit") -> bytes:
    return (f"Content-Type: text/plain; charset={charset}\nContent-Transfer-Encoding: {cte}\n\n").encode() + text


def file_part(name: str, data: bytes, ctype: str = "image/png", cte: str = "base64") -> bytes:
    return (f'Content-Type: {ctype}; name="{name}"\nContent-Disposition: attachment; filename="{name}"\n'
            f"Content-Transfer-Encoding: {cte}\n\n").encode() + data


def run_hostile(run_pipe, pipe_env, message: bytes):
    """Run the pipe on `message`, check what every run promises, return (CompletedProcess, log line)."""
    started = time.monotonic()
    done = run_pipe(message, timeout=RUN_TIMEOUT)
    took = time.monotonic() - started
    assert b"Traceback" not in done.stderr and b"Traceback" not in done.stdout, done.stderr[-2000:]
    assert done.returncode == 0, (done.returncode, done.stderr[-500:])
    assert done.stderr == b"", done.stderr[-500:]     # exit 0 says nothing on stderr
    assert took < REASONABLE, f"took {took:.1f} s"
    [line] = [each for each in log_lines(pipe_env) if " message-id=" in each]   # one message, one line
    print(line)
    assert " outcome=" in line and " exit=0 " in line, line
    assert "outcome=crashed" not in line, line
    return done, line


def reply_text(smtp_sink) -> str:
    [received] = smtp_sink.wait_for(1)
    assert list(received.rcpt_tos) == ["kiri@example.net"]
    return received.message().get_body(("plain",)).get_content()


def kept(pipe_env) -> list:
    return [p for folder in ("erroneous_emails", "ignored") for p in files_in(pipe_env.log_dir / folder)]


def test_five_thousand_tiny_parts(run_pipe, pipe_env, smtp_sink, website):
    message = multipart(f"create-response-to: '{URL}'",
                        [text_part(b"text: 'hi'")] + [file_part(f"p{i}.png", b"AA==") for i in range(5000)])
    done, line = run_hostile(run_pipe, pipe_env, message)
    assert "outcome=invalid" in line
    text = reply_text(smtp_sink)
    assert "too complex" in text and "more than 2000 parts" in text
    assert website.stats()["posts"] == 0 and kept(pipe_env)


def test_nesting_five_hundred_deep(run_pipe, pipe_env, smtp_sink, website):
    depth = 500
    opening = b"".join(f'--n{i}\nContent-Type: multipart/mixed; boundary="n{i + 1}"\n\n'.encode()
                       for i in range(depth))
    closing = b"".join(f"--n{i}--\n".encode() for i in reversed(range(depth + 1)))
    message = (headers(f"create-response-to: '{URL}'", content_type='multipart/mixed; boundary="n0"') + b"\n"
               + opening + f"--n{depth}\n".encode() + text_part(b"text: 'deep down'") + b"\n" + closing)
    done, line = run_hostile(run_pipe, pipe_env, message)
    assert "outcome=invalid" in line
    assert "nested more than 64 deep" in reply_text(smtp_sink)
    assert website.stats()["posts"] == 0


@pytest.mark.parametrize("where", ["before the subject", "after the subject"])
def test_a_megabyte_header_line(run_pipe, pipe_env, smtp_sink, where):
    big = b"X-Junk: " + b"a" * (1 << 20)
    lines = headers("help").splitlines()
    assert lines[2].startswith(b"Subject: ")
    lines.insert(3 if where == "after the subject" else 2, big)
    done, line = run_hostile(run_pipe, pipe_env, b"\n".join(lines) + b"\n\nhelp\n")
    # The header block is read up to a megabyte: a Subject before the junk line
    # is seen; after it, the headers are cut and the body's "help" answers.
    assert "outcome=answered" in line, line
    assert ("command=help" in line) == (where == "after the subject"), line
    assert "create-response-to" in reply_text(smtp_sink)


def test_a_hundred_thousand_header_lines(run_pipe, pipe_env, smtp_sink):
    junk = b"".join(b"X-Header-%d: value %d\n" % (i, i) for i in range(100_000))
    done, line = run_hostile(run_pipe, pipe_env, headers("help") + junk + b"\nhelp\n")
    assert "outcome=answered" in line or "outcome=invalid" in line, line
    assert reply_text(smtp_sink)


def test_broken_base64_in_the_attachment(run_pipe, pipe_env, smtp_sink, website):
    broken = b"iVBORw0KGgo*AAAANSUhEUgAA!!!AAEAAAAB\nCAYAAAAf\xff\xfeFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9\n=a=="
    message = multipart(f"create-response-to: '{URL}'",
                        [text_part(b"tags: 'broken'"), file_part("broken.png", broken)])
    done, line = run_hostile(run_pipe, pipe_env, message)
    assert "outcome=saved" in line or "outcome=invalid" in line or "outcome=refused" in line, line
    assert reply_text(smtp_sink)


def test_broken_quoted_printable_in_the_attachment(run_pipe, pipe_env, smtp_sink, website):
    broken = b"caf=E9 =ZZ =\n=4 soft=\r\nbreak =\n" + b"=" * 100 + b"\n=0"
    message = multipart(f"create-response-to: '{URL}'",
                        [file_part("notes.txt", broken, ctype="text/plain", cte="quoted-printable")])
    done, line = run_hostile(run_pipe, pipe_env, message)
    assert "outcome=saved" in line or "outcome=invalid" in line or "outcome=refused" in line, line
    assert reply_text(smtp_sink)


def test_broken_encoded_word_in_the_file_name(run_pipe, pipe_env, smtp_sink, website):
    message = multipart(f"create-response-to: '{URL}'",
                        [file_part("=?utf-8?b?!!not base64?=.png", base64.encodebytes(b"\x89PNG"))])
    done, line = run_hostile(run_pipe, pipe_env, message)
    assert "outcome=saved" in line, line
    assert reply_text(smtp_sink)


@pytest.mark.parametrize("charset, text", [
    ("utf-8", "text: 'caf\u00e9 na \u014ctautahi'".encode("latin-1", "replace")),   # latin-1 bytes, said utf-8
    ("no-such-charset", "text: 'caf\u00e9'".encode("utf-8")),
    ("x-unknown", "text: 'caf\u00e9'".encode("cp1252")),
    ("utf-16", b"text: 'odd length\xff'"),
    ("base64", b"text: 'a codec but not a text encoding'"),
])
def test_wrong_charsets_still_save_the_text(run_pipe, pipe_env, smtp_sink, website, charset, text):
    message = multipart(f"create-response-to: '{URL}'", [text_part(text, charset=charset)])
    done, line = run_hostile(run_pipe, pipe_env, message)
    assert "outcome=saved" in line or "outcome=invalid" in line, line
    assert reply_text(smtp_sink)


def test_a_wrong_charset_in_the_subject(run_pipe, pipe_env, smtp_sink):
    message = headers("=?no-such-charset?q?help?=") + b"\nhelp\n"
    done, line = run_hostile(run_pipe, pipe_env, message)
    assert reply_text(smtp_sink)


def test_nul_bytes_in_the_display_name_answer_the_address_alone(run_pipe, pipe_env, smtp_sink, website):
    message = (b"From: Kiri\x00 Tane <kiri@example.net>\nTo: " + GATEWAY.encode() + b"\n"
               b"Subject: create-response-to: '" + URL.encode() + b"'\x00\n"
               b"Message-ID: <nul@example.net>\n\ntext: 'nul\x00 inside'\x00\n\x00\x00")
    done, line = run_hostile(run_pipe, pipe_env, message)
    assert "outcome=saved" in line and "display name dropped (control characters in it)" in line, line
    [received] = smtp_sink.wait_for(1)
    assert received.rcpt_tos == ("kiri@example.net",) and received.message()["To"] == "kiri@example.net"
    assert not CONTROLS.search(received.data), received.data[:2000]


CONTROLS = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def test_nul_and_escape_bytes_in_headers_and_body(run_pipe, pipe_env, smtp_sink, website):
    message = (b"From: Kiri Tane <kiri@example.net>\nTo: " + GATEWAY.encode() + b"\n"
               b"Subject: create-response-to:\x00 '" + URL.encode() + b"'\x00\n"
               b"X-Nul: \x00\x00\x00\nMessage-ID: <nul\x00\x1b[2J@example.net>\n"
               b"References: <a\x00b@example.net> <c@example.net>\n\n"
               b"text: 'nul\x00 inside'\x00\n\x00\x00")
    done, line = run_hostile(run_pipe, pipe_env, message)
    assert "outcome=saved" in line, line
    assert not CONTROLS.search(line.encode()), line        # nothing in the log line can drive a terminal
    [received] = smtp_sink.wait_for(1)
    assert not CONTROLS.search(received.data), received.data[:2000]   # nor in the reply
    [item] = website.stats()["items"]
    assert item["content"]["Text"] == "nul inside"


def test_two_megabytes_without_a_line_break(run_pipe, pipe_env, smtp_sink, website):
    body = b"text: '" + b"word " * (2 * 1024 * 1024 // 5) + b"'"
    message = headers(f"create-response-to: '{URL}'", content_type="text/plain; charset=utf-8") + b"\n" + body
    done, line = run_hostile(run_pipe, pipe_env, message)
    assert "outcome=saved" in line or "outcome=invalid" in line or "outcome=refused" in line, line
    assert reply_text(smtp_sink)


def test_two_megabytes_of_html_without_a_line_break(run_pipe, pipe_env, smtp_sink, website):
    body = b"<p>text: '" + b"<b a=" * (2 * 1024 * 1024 // 5) + b"'</p>"
    message = headers(f"create-response-to: '{URL}'", content_type="text/html; charset=utf-8") + b"\n" + body
    done, line = run_hostile(run_pipe, pipe_env, message)
    assert reply_text(smtp_sink)


def test_three_hundred_attachments_get_one_file_per_mail(run_pipe, pipe_env, smtp_sink, website):
    picture = base64.encodebytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    message = multipart(f"create-response-to: '{URL}'",
                        [text_part(b"tags: 'many'")] + [file_part(f"photo{i}.png", picture) for i in range(300)])
    done, line = run_hostile(run_pipe, pipe_env, message)
    assert "outcome=invalid" in line
    text = reply_text(smtp_sink)
    assert "a response holds one file" in text and "300" in text and "send one per mail" in text
    assert website.stats()["posts"] == 0
    assert files_in(pipe_env.log_dir / "erroneous_emails")


@pytest.mark.parametrize("sender", [
    b"(" * 1000 + b"kiri@example.net",       # RecursionError in getaddresses and the RFC 5322 parser
    b"\xc3\xa1@[",                            # AttributeError in the RFC 5322 parser
    b"a\x01b@example.net",                    # accepted; Address() in reply.build raises NonPrintableDefect
    "Jos\u00e9 <jos\u00e9@example.es>".encode(),  # accepted; reply.build raises NonASCIILocalPartDefect
], ids=["nested-comments", "parser-attribute-error", "control-in-address", "non-ascii-local-part"])
def test_from_headers_that_crashed_the_guard_are_kept_or_answered(run_pipe, pipe_env, smtp_sink, sender):
    message = headers("help").replace(b"Kiri Tane <kiri@example.net>", sender)
    done, line = run_hostile(run_pipe, pipe_env, message + b"\nhelp\n")
    assert "outcome=unanswerable" in line or "outcome=answered" in line, line
