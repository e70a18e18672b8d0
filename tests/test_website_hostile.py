"""A hostile website against the installed pipe, and the judging of its answers.

The reference website's hostile modes (reference_site/server.py) echo the API key
in error texts, headers and the Location, send huge, endless and trickled
bodies, foreign Locations and the statuses that mean "the key is wrong" or
"later".  Each run asserts on everything the gateway leaves behind: the
website's store, the SMTP sink, the log, logs/ (journal included) and stderr.
The pure parts (classify, public_location, Redactor, actions) are tested
without a network.
"""
from __future__ import annotations

import base64
import email
import email.policy
import os
import re
import socket
import subprocess
import tempfile
import threading
import time
import zlib
from pathlib import Path

import pytest
import requests

from helpers import API_KEY, files_in, log_lines, mail
from torokiki_pipe.stages import s6_act as actions
from torokiki_pipe.stages.s7_reply import TEMPLATES
from torokiki_pipe.outcome import EXIT_POLICY, Outcome, is_temporary, status_line
from torokiki_pipe.stages.s5_understand.urls import parse_content_url
from torokiki_pipe.adapters.website import (MAX_CONTENT_BYTES, Place, Received, Redactor, Website, WebsiteAnswer,
                                   classify, failure, public_location)

SITE = "http://torokiki.net"
SEED = f"{SITE}/image/1/response"
SEED_URL = parse_content_url(SEED, SITE)
CREATE = f"create-response-to: '{SEED}'"
GET = f"get: '{SEED}'"
MEMORY_BOUND_KB = 200 * 1024      # generous (measured: 49-105 MB); the unbounded reader took 914 MB for 200 MB
SLACK = 5                          # seconds beyond the timeout a trickled exchange may take in all


# --------------------------------------------------------------------------- helpers

def control(website, **body) -> None:
    answer = requests.post(f"{website.url}/_control", json=body, timeout=10)
    assert answer.status_code == 200, answer.text


def key_forms(key: str = API_KEY) -> list[str]:
    """The key as it could leak (lower-cased; the text searched is lower-cased and squeezed too)."""
    raw = key.encode()
    forms = {key.lower(), "".join(f"%{b:02x}" for b in raw), raw.hex()}
    for offset in range(3):      # base64 at each alignment inside longer data: the part only the key decides
        encoded = base64.b64encode(b"\0" * offset + raw).decode()
        forms.add(encoded[(offset * 8 + 5) // 6:(offset + len(raw)) * 8 // 6].lower())
    return sorted(forms)


def mime_texts(data: bytes) -> list[bytes]:
    """The raw message and each of its parts decoded (base64 or quoted-printable hide a key from grep)."""
    found = [data]
    message = email.message_from_bytes(data, policy=email.policy.default)
    for part in message.walk():
        if not part.is_multipart():
            found.append(part.get_payload(decode=True) or b"")
    return found


def assert_key_nowhere(pipe_env, smtp_sink, done=None) -> None:
    """The key (in any form key_forms knows) is in no reply, log line, logs/ file or output."""
    blobs: list[tuple[str, bytes]] = []
    for received in smtp_sink.messages:
        blobs += [("a reply", text) for text in mime_texts(received.data)]
    for path in sorted(pipe_env.log_dir.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            blobs += [(str(path), text) for text in (mime_texts(data) if path.suffix == ".eml" else [data])]
    if done is not None:
        blobs += [("stdout", done.stdout), ("stderr", done.stderr)]
    for where, blob in blobs:
        text = blob.decode("utf-8", "replace").lower()
        squeezed = re.sub(r"\s+", "", text)
        for form in key_forms():
            assert form not in text and form not in squeezed, f"the key ({form}) is in {where}"


def reply_text(received) -> str:
    return received.message().get_body(("plain",)).get_content().replace("\r\n", "\n")


def last_line(pipe_env) -> str:
    return [line for line in log_lines(pipe_env) if " message-id=" in line][-1]


def stored(website) -> list[dict]:
    return website.stats()["items"]


# Forks the pipe from a small process and writes its peak RSS into argv[1].  The child of a
# fork counts the RSS its parent had until exec: forked from pytest, which grows to a few
# hundred MB over the suite, the pipe would be charged with pytest's memory.
LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status) & 0xFF)
"""


def run_measured(pipe_program, config, message: bytes, timeout: float = 60):
    """Run the installed pipe as run_pipe does, and also return its peak RSS in KB."""
    import signal
    import sys

    environ = {k: v for k, v in os.environ.items() if not k.startswith("TOROKIKI_")}
    with tempfile.TemporaryDirectory() as folder:
        peak = Path(folder) / "peak"
        child = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(peak), pipe_program, "--config",
                                  os.fspath(config)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, env=environ, start_new_session=True)
        try:
            out, err = child.communicate(message, timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)      # its own session: the launcher and the pipe
            child.communicate()
            raise
        return subprocess.CompletedProcess(child.args, child.returncode, out, err), int(peak.read_text())


def assert_deferred(done, status: str, outcome: str) -> str:
    assert done.returncode == 75, (done.returncode, done.stderr)
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{status} {outcome}: "), lines
    return lines[0]


# --------------------------------------------------------------------------- the key echoed

def test_error_text_echoing_the_key_reaches_nobody(run_pipe, pipe_env, website, smtp_sink):
    control(website, mode="echo-key", status=422)     # error text, a header and the raw body quote it
    done = run_pipe(mail(CREATE, "text: 'hi'"))
    assert done.returncode == 0 and done.stderr == b""
    [received] = smtp_sink.wait_for(1)
    text = reply_text(received)
    assert "did not accept" in text and "<redacted>" in text      # the reason is still told, without the key
    assert "outcome=refused" in last_line(pipe_env)
    [_, exchange] = files_in(pipe_env.log_dir / "failed_https")
    assert "HTTP 422" in exchange.read_text() and "X-Echo-Key: <redacted>" in exchange.read_text()
    assert_key_nowhere(pipe_env, smtp_sink, done)
    assert stored(website) == []


def test_saved_answer_echoing_the_key_in_location_and_header(run_pipe, pipe_env, website, smtp_sink):
    control(website, mode="echo-key", status=201)
    done = run_pipe(mail(CREATE, "text: 'hi'"))
    assert done.returncode == 0, done.stderr
    [item] = stored(website)
    [received] = smtp_sink.wait_for(1)
    # The Location's query (the key) is dropped: the address is rebuilt from its ids.
    assert f"is saved on Torokiki at\n  {SITE}/image/1/response/{item['id']}\n" in reply_text(received)
    assert "outcome=saved" in last_line(pipe_env)
    assert_key_nowhere(pipe_env, smtp_sink, done)


def test_key_refused_defers_and_the_mail_is_saved_once_the_key_works(run_pipe, pipe_env, website, smtp_sink):
    control(website, mode="echo-key", status=401)     # "wrong key", quoting it
    message = mail(CREATE, "text: 'hi'")
    done = run_pipe(message)
    line = assert_deferred(done, "4.3.5", "key-refused")
    assert "API key" in line and "TOROKIKI_API_KEY" in line
    assert smtp_sink.messages == [] and stored(website) == []
    assert "outcome=key-refused" in last_line(pipe_env) and "exit=75" in last_line(pipe_env)
    assert len(files_in(pipe_env.log_dir / "failed_https")) == 2      # kept for the administrator
    assert_key_nowhere(pipe_env, smtp_sink, done)
    control(website, mode="ok")                       # the administrator fixed it; the MTA retries
    again = run_pipe(message)
    assert again.returncode == 0, again.stderr
    assert len(stored(website)) == 1
    [received] = smtp_sink.wait_for(1)
    assert "is saved on Torokiki" in reply_text(received)
    assert_key_nowhere(pipe_env, smtp_sink, again)


@pytest.mark.parametrize("mode, status, enhanced, outcome", [
    ("refuse", 401, "4.3.5", "key-refused"),
    ("refuse", 403, "4.3.5", "key-refused"),
    ("refuse", 407, "4.3.5", "key-refused"),
    ("down", 408, "4.4.2", "website-unavailable"),
    ("down", 429, "4.4.2", "website-unavailable"),
])
def test_statuses_that_are_not_the_senders_fault_defer(run_pipe, pipe_env, website, smtp_sink,
                                                       mode, status, enhanced, outcome):
    control(website, mode=mode, status=status)
    for command in (mail(CREATE, "text: 'hi'"), mail(GET, msgid="<get@example.net>")):
        done = run_pipe(command)
        assert_deferred(done, enhanced, outcome)
        assert f"HTTP {status}" in done.stderr.decode()
    assert smtp_sink.messages == [] and stored(website) == []


def test_a_file_holding_the_key_is_not_mailed(run_pipe, pipe_env, website, smtp_sink):
    control(website, mode="echo-key")                 # the key in the seed's Text and inside its PNG
    done = run_pipe(mail(GET))
    assert done.returncode == 0, done.stderr
    [received] = smtp_sink.wait_for(1)
    message = received.message()
    assert [p for p in message.walk() if p.get_filename()] == []
    assert f"cannot be sent by mail" in reply_text(received) and SEED in reply_text(received)
    assert "outcome=answered" in last_line(pipe_env)
    assert files_in(pipe_env.log_dir / "failed_https")       # the administrator should see this
    assert_key_nowhere(pipe_env, smtp_sink, done)


def test_fetched_text_quoting_the_key_is_mailed_redacted(run_pipe, pipe_env, website, smtp_sink):
    assert run_pipe(mail(CREATE, "text: 'a text response'")).returncode == 0
    [item] = stored(website)
    control(website, mode="echo-key")
    done = run_pipe(mail(f"get: '{item['location']}'", msgid="<get@example.net>"))
    assert done.returncode == 0, done.stderr
    text = reply_text(smtp_sink.wait_for(2)[1])
    assert "a text response" in text and "(served with the key <redacted>)" in text
    assert_key_nowhere(pipe_env, smtp_sink, done)


# --------------------------------------------------------------------------- bodies: huge, endless, trickled

@pytest.mark.parametrize("length", [True, False], ids=["content-length", "until-close"])
def test_a_200_mb_answer_to_a_get_sends_the_link_in_bounded_memory(pipe_program, pipe_env, website, smtp_sink,
                                                                 length):
    control(website, mode="huge", size=200 * 1024 * 1024, length=length)
    done, peak_kb = run_measured(pipe_program, pipe_env, mail(GET))
    assert done.returncode == 0, done.stderr
    [received] = smtp_sink.wait_for(1)
    assert len(received.data) < 20_000                       # the link, not the file
    text = reply_text(received)
    assert "larger than the 15 MB" in text and SEED in text
    assert "outcome=answered" in last_line(pipe_env)
    assert peak_kb < MEMORY_BOUND_KB, f"peak RSS {peak_kb} KB"
    print(f"peak RSS {peak_kb / 1024:.0f} MB")


def test_an_endless_answer_to_a_get_sends_the_link_in_bounded_memory(pipe_program, pipe_env, website, smtp_sink):
    control(website, mode="endless")
    done, peak_kb = run_measured(pipe_program, pipe_env, mail(GET))
    assert done.returncode == 0, done.stderr
    [received] = smtp_sink.wait_for(1)
    assert "larger than the 15 MB" in reply_text(received)
    assert peak_kb < MEMORY_BOUND_KB, f"peak RSS {peak_kb} KB"
    print(f"peak RSS {peak_kb / 1024:.0f} MB")


def test_content_just_under_the_cap_is_still_mailed(pipe_program, pipe_env, website, smtp_sink):
    control(website, mode="huge", size=MAX_CONTENT_BYTES - 1000)
    done, peak_kb = run_measured(pipe_program, pipe_env, mail(GET))
    assert done.returncode == 0, done.stderr
    [received] = smtp_sink.wait_for(1, timeout=30)
    [attached] = [p for p in received.message().walk() if p.get_filename()]
    assert attached.get_filename() == "huge.bin"
    assert len(attached.get_payload(decode=True)) > (MAX_CONTENT_BYTES - 2000) * 3 // 4
    assert peak_kb < MEMORY_BOUND_KB, f"peak RSS {peak_kb} KB"
    print(f"peak RSS {peak_kb / 1024:.0f} MB, reply {len(received.data) / 1e6:.1f} MB")


@pytest.mark.parametrize("mode", ["huge", "endless"])
def test_a_huge_or_endless_answer_to_a_post_is_saved_once(pipe_program, pipe_env, website, smtp_sink, mode):
    control(website, mode=mode, size=200 * 1024 * 1024)      # 201 with its Location, then the flood
    done, peak_kb = run_measured(pipe_program, pipe_env, mail(CREATE, "text: 'hi'"))
    assert done.returncode == 0, done.stderr
    [item] = stored(website)
    [received] = smtp_sink.wait_for(1)
    assert item["location"] in reply_text(received)
    assert peak_kb < MEMORY_BOUND_KB, f"peak RSS {peak_kb} KB"


def test_a_5xx_after_storing_defers_and_the_retry_does_not_store_twice(run_pipe, pipe_env, website, smtp_sink):
    control(website, mode="huge", size=1024 * 1024, status=500)
    message = mail(CREATE, "text: 'hi'")
    assert_deferred(run_pipe(message), "4.4.2", "website-unavailable")
    assert len(stored(website)) == 1 and smtp_sink.messages == []
    control(website, mode="ok")
    assert run_pipe(message).returncode == 0
    stats = website.stats()
    assert (stats["stored"], stats["duplicates"], len(stats["items"])) == (1, 1, 1)
    [received] = smtp_sink.wait_for(1)
    assert stats["items"][0]["location"] in reply_text(received)


@pytest.mark.parametrize("part", ["body", "head"])
def test_a_trickled_answer_to_a_get_is_cut_at_the_timeout(run_pipe, pipe_env, website, smtp_sink, part):
    config = pipe_env.variant(TOROKIKI_HTTP_TIMEOUT="3")
    control(website, mode="trickle", delay=0.2, part=part)   # ~1.5 KB at 5 bytes/s: minutes
    started = time.monotonic()
    done = run_pipe(mail(GET), config=config)
    took = time.monotonic() - started
    line = assert_deferred(done, "4.4.2", "website-unavailable")
    assert "no complete answer within 3 s" in line
    assert took < 3 + SLACK, f"took {took:.1f} s"
    assert smtp_sink.messages == []


def test_a_trickled_head_of_a_post_is_cut_and_stored_once(run_pipe, pipe_env, website, smtp_sink):
    config = pipe_env.variant(TOROKIKI_HTTP_TIMEOUT="3")
    control(website, mode="trickle", delay=0.2, part="head")
    message = mail(CREATE, "text: 'hi'")
    started = time.monotonic()
    assert_deferred(run_pipe(message, config=config), "4.4.2", "website-unavailable")
    assert time.monotonic() - started < 3 + SLACK
    assert len(stored(website)) == 1               # it was stored before the head began to trickle
    control(website, mode="ok")
    assert run_pipe(message, config=config).returncode == 0
    assert len(stored(website)) == 1 and website.stats()["duplicates"] == 1


def test_a_trickled_body_after_a_201_is_saved_at_the_timeout(run_pipe, pipe_env, website, smtp_sink):
    # The head says saved, with the Location: a POST's body is only ever read for an error text.
    config = pipe_env.variant(TOROKIKI_HTTP_TIMEOUT="3")
    control(website, mode="trickle", delay=0.2)
    started = time.monotonic()
    done = run_pipe(mail(CREATE, "text: 'hi'"), config=config)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 3 + SLACK
    [item] = stored(website)
    assert item["location"] in reply_text(smtp_sink.wait_for(1)[0])


# --------------------------------------------------------------------------- foreign Location

@pytest.mark.parametrize("location", [
    "http://evil.example/image/1/response/5",
    "javascript:alert(document.cookie)",
    "//evil.example/image/1/response/5",
    "ftp://torokiki.net/image/1/response/5",
    "http://torokiki.net@evil.example/image/1/response/5",
    "http://torokiki.net.evil.example/image/1/response/5",
    None,
])
def test_a_foreign_or_missing_location_is_never_quoted(run_pipe, pipe_env, website, smtp_sink, location):
    control(website, mode="foreign-location", location=location)
    done = run_pipe(mail(CREATE, "text: 'hi'"))
    assert done.returncode == 0, done.stderr
    assert len(stored(website)) == 1
    [received] = smtp_sink.wait_for(1)
    text = reply_text(received)
    assert "did not tell us the address" in text and SEED in text
    assert "evil" not in received.data.decode() and "javascript" not in received.data.decode()
    assert "ftp:" not in received.data.decode()
    assert "outcome=saved" in last_line(pipe_env) and "evil" not in last_line(pipe_env)


def test_a_redirect_elsewhere_is_not_saved_and_the_retry_finds_the_first(run_pipe, pipe_env, website, smtp_sink):
    control(website, mode="foreign-location", status=302, location="https://login.example/sso")
    message = mail(CREATE, "text: 'hi'")
    line = assert_deferred(run_pipe(message), "4.4.2", "website-unavailable")
    assert "redirected" in line and "login.example" not in line
    control(website, mode="ok")
    assert run_pipe(message).returncode == 0
    [item] = stored(website)
    assert item["location"] in reply_text(smtp_sink.wait_for(1)[0])


# --------------------------------------------------------------------------- judging, without a network

PLACE = Place(site_url=SITE, api_url="http://127.0.0.1:8080", request_url="http://127.0.0.1:8080/image/1/response",
              timeout=5)
REDACTOR = Redactor(API_KEY)


def judged(method, code, headers=(), body=b"", ending="complete") -> WebsiteAnswer:
    return classify(method, Received(code, "", tuple(headers), body, ending), PLACE, REDACTOR)


@pytest.mark.parametrize("location, public", [
    ("http://torokiki.net/image/1/response/101", f"{SITE}/image/1/response/101"),
    ("https://torokiki.net/image/1/response/101", f"{SITE}/image/1/response/101"),     # rebuilt on the site's scheme
    ("/image/1/response/101", f"{SITE}/image/1/response/101"),                          # relative to the request
    ("response/101", f"{SITE}/image/1/response/101"),                                   # RFC 3986: beside the last segment
    ("101", None),
    ("http://127.0.0.1:8080/image/1/response/101", f"{SITE}/image/1/response/101"),     # the API host, made public
    ("http://torokiki.net/image/1/response/101?api_key=x#y", f"{SITE}/image/1/response/101"),
    ("http://torokiki.net/image/1/respond/101/", f"{SITE}/image/1/response/101"),
    ("http://127.0.0.1:9090/image/1/response/101", None),                               # another port
    ("http://evil.example/image/1/response/101", None),
    ("http://torokiki.net.evil.example/image/1/response/101", None),
    ("http://torokiki.net@evil.example/image/1/response/101", None),
    ("http://user@torokiki.net/image/1/response/101", None),
    ("//evil.example/image/1/response/101", None),
    ("javascript:alert(1)", None),
    ("ftp://torokiki.net/image/1/response/101", None),
    ("data:text/html,<script>", None),
    ("http://torokiki.net/image/1/response", None),                                     # a seed, not a new response
    ("http://torokiki.net/somewhere/else", None),
    ("http://torokiki.net/image/1/response/101\r\nX: y", None),
    ("", None),
    (None, None),
])
def test_public_location(location, public):
    assert public_location(location, PLACE) == public


@pytest.mark.parametrize("method, code, headers, body, ending, status, maybe_saved", [
    ("POST", 201, [("Location", "/image/1/response/101")], b"", "complete", "saved", False),
    ("POST", 303, [("Location", "/image/1/response/101")], b"", "complete", "saved", False),
    ("POST", 201, [("Location", "/image/1/response/101")], b"x" * 10, "overrun", "saved", False),
    ("POST", 201, [], b"", "complete", "saved", True),
    ("POST", 201, [("Location", "javascript:alert(1)")], b"", "complete", "saved", True),
    ("POST", 302, [("Location", "https://login.example/")], b"", "complete", "unavailable", True),
    ("POST", 302, [], b"", "complete", "unavailable", True),
    ("POST", 200, [], b"{}", "complete", "unavailable", True),
    ("POST", 500, [], b"", "complete", "unavailable", True),
    ("POST", 503, [], b"", "overrun", "unavailable", False),     # 503: not taken on
    ("POST", 500, [], b"", "overrun", "unavailable", True),
    ("POST", 401, [], b"", "complete", "key-refused", False),
    ("POST", 403, [], b"", "complete", "key-refused", False),
    ("POST", 407, [], b"", "complete", "key-refused", False),
    ("POST", 408, [], b"", "complete", "unavailable", False),
    ("POST", 429, [], b"", "complete", "unavailable", False),
    ("POST", 422, [], b'{"error": "no"}', "complete", "refused", False),
    ("POST", 404, [], b"", "complete", "refused", False),
    ("GET", 200, [], b'{"Text": "t"}', "complete", "found", False),
    ("GET", 200, [], b"x" * 10, "over-cap", "too-large", False),
    ("GET", 200, [], b'{"Text": "t', "overrun", "unavailable", False),
    ("GET", 200, [], b'{"Text": "t', "broken", "unavailable", False),
    ("GET", 200, [], b"\x1f\x8b", "undecodable", "unavailable", False),
    ("GET", 200, [], b"not json", "complete", "unavailable", False),
    ("GET", 200, [], b"[1, 2]", "complete", "unavailable", False),
    ("GET", 200, [], b"[" * 100000, "complete", "unavailable", False),     # nesting deeper than the stack
    ("GET", 404, [], b"", "complete", "not-found", False),
    ("GET", 401, [], b"", "complete", "key-refused", False),
    ("GET", 429, [], b"", "complete", "unavailable", False),
    ("GET", 500, [], b"", "complete", "unavailable", False),
    ("GET", 410, [], b"", "complete", "refused", False),
])
def test_classify(method, code, headers, body, ending, status, maybe_saved):
    answer = judged(method, code, headers, body, ending)
    assert (answer.status, answer.maybe_saved) == (status, maybe_saved), answer
    assert answer.temporary == (status in ("unavailable", "key-refused"))


def test_classify_tells_the_administrator_what_to_fix():
    post = judged("POST", 401, body=b'{"error": "wrong X-API-Key"}')
    assert post.detail == ("the website refused the gateway's API key (HTTP 401: wrong X-API-Key); "
                           "fix TOROKIKI_API_KEY")
    assert "TOROKIKI_API_URL" in judged("GET", 403).detail
    assert judged("POST", 201).detail == "saved, but the website gave no Location"
    assert judged("GET", 200, ending="overrun").detail == "no complete answer within 5 s"
    assert "15 MB" in judged("GET", 200, ending="over-cap").detail


def test_the_error_text_is_one_printable_line_cut_short():
    answer = judged("POST", 422, body=('{"error": "bad\\r\\nX-Injected: yes\\u0000' + "x" * 5000 + '"}').encode())
    reason = answer.detail.split(": ", 1)[1]
    assert "\n" not in reason and "\r" not in reason and "\x00" not in reason and len(reason) <= 200


@pytest.mark.parametrize("phase, error, overrun, detail, maybe_saved", [
    ("connect", ConnectionRefusedError(111, "Connection refused"), False, "connection refused", False),
    ("connect", OSError(-2, "Name or service not known"), False, "name or service not known", False),
    ("connect", TimeoutError("timed out"), False, "no connection within 5 s", False),
    ("connect", None, True, "no complete answer within 5 s", False),                # the watchdog, in TLS
    ("send", BrokenPipeError(32, "Broken pipe"), False, "broken pipe", False),      # not all of it arrived
    ("send", TimeoutError("timed out"), True, "no complete answer within 5 s", False),
    ("headers", ConnectionResetError(104, "Connection reset by peer"), False, "connection reset", True),
    ("headers", TimeoutError("timed out"), True, "no complete answer within 5 s", True),
])
def test_failure(phase, error, overrun, detail, maybe_saved):
    answer = failure("POST", phase, error, PLACE, overrun)
    assert (answer.status, answer.detail, answer.maybe_saved) == ("unavailable", detail, maybe_saved)
    assert failure("GET", phase, error, PLACE, overrun).maybe_saved is False       # a GET stores nothing


# --------------------------------------------------------------------------- redaction, without a network

@pytest.mark.parametrize("echoed", [
    API_KEY, API_KEY.upper(), "Test-API-Key",
    "".join(f"%{b:02X}" for b in API_KEY.encode()), "test%2dapi%2Dkey", "".join(f"%{b:02x}" for b in API_KEY.encode()),
    "test-api-\nkey", "test-api-\r\n key", "t e s t - a p i - k e y", "test-api-\\nkey",
    "".join(f"\\u{ord(c):04x}" for c in API_KEY), "\\u0074est-api-key", "\\x74est-api-key",
    "&#116;est-api-key", "&#x74;est-api-key", API_KEY.encode().hex(), API_KEY.encode().hex().upper(),
    base64.b64encode(API_KEY.encode()).decode(),
    base64.b64encode(b"user:" + API_KEY.encode()).decode(),
    base64.b64encode(b"x" + API_KEY.encode() + b"y").decode(),
    base64.urlsafe_b64encode(b"\xff\xfe" + API_KEY.encode()).decode(),
])
def test_the_key_is_redacted_in_the_forms_a_website_echoes(echoed):
    text = REDACTOR.text(f"before {echoed} after")
    assert text.startswith("before ") and text.endswith(" after") and "<redacted>" in text
    squeezed = re.sub(r"\s+", "", text.lower())
    assert not any(form in squeezed for form in key_forms()), text


def test_redaction_leaves_other_text_alone():
    for text in ("test-api", "api-key", "The test: a pi key.", "test-api-kez", "x" * 10000, ""):
        assert REDACTOR.text(text) == text
    assert Redactor("").text(API_KEY) == API_KEY                  # no key configured: nothing to hide


def test_a_cut_never_leaves_part_of_the_key():
    for position in range(180, 215):
        text = "x" * position + API_KEY + "y" * 300
        cut = REDACTOR.cut(text, 200)
        assert len(cut) <= 200 and "test-a" not in cut and "-api-" not in cut, position


def test_every_string_of_an_answer_is_redacted():
    content = {"Text": f"see {API_KEY}", "Tags": [API_KEY.upper(), "bus"], "Deep": [[{"data": [API_KEY]}]],
               API_KEY: "a key as a key", "Attachment": {"name": f"{API_KEY}.png", "data": "aGk="}}
    answer = REDACTOR.answer(WebsiteAnswer("found", f"detail {API_KEY}", location=f"{SITE}/{API_KEY}",
                                           content=content, exchange=f"X-Echo: {API_KEY}"))
    assert answer.status == "found"
    assert API_KEY not in repr(answer).lower()
    assert answer.content["Attachment"]["data"] == "aGk=" and answer.content["Tags"][1] == "bus"


def test_a_file_holding_the_key_is_withheld():
    for prefix in (b"", b"a", b"ab", b"\x89PNG\r\n"):
        data = base64.b64encode(prefix + b"...api_key=" + API_KEY.encode() + b"\n...").decode()
        if prefix == b"ab":
            data = "\n".join(data[i:i + 3] for i in range(0, len(data), 3))   # broken into lines
        if prefix == b"a":
            data = base64.b64encode(b"a" + API_KEY.upper().encode()).decode()
        answer = REDACTOR.answer(WebsiteAnswer("found", "found", content={"Attachment": {"name": "a", "data": data}}))
        assert answer.status == "withheld" and answer.content is None
    clean = base64.b64encode(os.urandom(100_000)).decode()
    assert REDACTOR.answer(WebsiteAnswer("found", content={"Attachment": {"name": "a", "data": clean}})).status == "found"


# --------------------------------------------------------------------------- what the gateway does with an answer

def test_key_refused_is_its_own_temporary_outcome():
    assert is_temporary(Outcome.KEY_REFUSED) and EXIT_POLICY[Outcome.KEY_REFUSED].code == os.EX_TEMPFAIL
    assert status_line(Outcome.KEY_REFUSED, "the website refused").startswith("4.3.5 key-refused: ")
    step = actions._after_submit(WebsiteAnswer("key-refused", "refused the key", exchange="x"), SEED_URL, SEED, "s")
    assert (step.outcome, step.reply, step.keep) == (Outcome.KEY_REFUSED, None, "failed_https")


@pytest.mark.parametrize("answer, outcome, template, maybe_saved", [
    (WebsiteAnswer("saved", "saved as", location=f"{SEED}/101"), Outcome.SAVED, "saved.txt", False),
    (WebsiteAnswer("saved", "no Location", maybe_saved=True), Outcome.SAVED, "saved-no-address.txt", True),
    (WebsiteAnswer("unavailable", "HTTP 500", maybe_saved=True), Outcome.WEBSITE_UNAVAILABLE, None, True),
    (WebsiteAnswer("unavailable", "connection refused"), Outcome.WEBSITE_UNAVAILABLE, None, False),
    (WebsiteAnswer("refused", "HTTP 422"), Outcome.REFUSED, "refused.txt", False),
])
def test_a_submission_answer_becomes_a_step(answer, outcome, template, maybe_saved):
    step = actions._after_submit(answer, SEED_URL, SEED, "subject")
    assert (step.outcome, step.reply and step.reply.template, step.maybe_saved) == (outcome, template, maybe_saved)


@pytest.mark.parametrize("answer, outcome, template", [
    (WebsiteAnswer("too-large", "larger"), Outcome.ANSWERED, "fetched-too-large.txt"),
    (WebsiteAnswer("withheld", "holds the key"), Outcome.ANSWERED, "fetched-link.txt"),
    (WebsiteAnswer("found", content={"Text": "t"}), Outcome.ANSWERED, "fetched.txt"),
    (WebsiteAnswer("not-found"), Outcome.REFUSED, "not-found.txt"),
    (WebsiteAnswer("key-refused"), Outcome.KEY_REFUSED, None),
])
def test_a_fetch_answer_becomes_a_step(answer, outcome, template):
    step = actions._after_get(answer, SEED_URL, SEED, "subject")
    assert (step.outcome, step.reply and step.reply.template) == (outcome, template)
    if template:
        assert (TEMPLATES / template).is_file()


# --------------------------------------------------------------------------- the adapter against canned answers

class Canned:
    """A loopback server answering each connection with the bytes of `answer` (the HTTP the
    reference website would never write), after reading the request's head and body."""

    def __init__(self, answer: bytes):
        self.answer = answer
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except socket.timeout:
                continue
            with conn:
                conn.settimeout(10)
                request = b""
                while b"\r\n\r\n" not in request:
                    request += conn.recv(65536) or b"\r\n\r\n"
                head, _, body = request.partition(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length: *(\d+)", head)
                while length and len(body) < int(length[1]):
                    body += conn.recv(65536) or b"x" * int(length[1])
                try:
                    conn.sendall(self.answer)
                except OSError:
                    pass

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.listener.close()


@pytest.fixture
def canned():
    servers = []

    def start(answer: bytes) -> Website:
        server = Canned(answer)
        servers.append(server)
        return Website(server.url, API_KEY, 5, SITE)

    yield start
    for server in servers:
        server.close()


def fetch(website: Website) -> WebsiteAnswer:
    return website.fetch(parse_content_url(SEED, SITE))


def submit(website: Website) -> WebsiteAnswer:
    return website.submit(parse_content_url(SEED, SITE), {"InspiredBy": SEED, "Text": "hi"}, "idem-1")


@pytest.mark.integration  # a canned HTTP server
def test_a_compressed_bomb_inflates_no_further_than_the_cap(canned):
    squeeze = zlib.compressobj(1, zlib.DEFLATED, 31)                   # gzip framing
    zeros = bytes(1 << 20)
    bomb = b"".join(squeeze.compress(zeros) for _ in range(1024)) + squeeze.flush()    # 1 GB of zeros
    assert len(bomb) < 5 * 1024 * 1024
    answer = fetch(canned(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s"
                          % (len(bomb), bomb)))
    assert answer.status == "too-large"


@pytest.mark.integration  # a canned HTTP server
def test_a_compressed_answer_within_the_cap_is_read(canned):
    body = zlib.compress(b'{"Text": "kia ora"}')
    answer = fetch(canned(b"HTTP/1.1 200 OK\r\nContent-Encoding: deflate\r\nContent-Length: %d\r\n\r\n%s"
                          % (len(body), body)))
    assert (answer.status, answer.content) == ("found", {"Text": "kia ora"})
    assert fetch(canned(b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 2\r\n\r\n{}")
                 ).status == "unavailable"


@pytest.mark.integration  # a canned HTTP server
@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: y\r\n" % n for n in range(150)) + b"\r\n{}",    # 150 headers
    b"HTTP/1.1 200 OK\r\nX-Long: " + b"y" * 70000 + b"\r\n\r\n{}",                            # a 70 KB header line
    b"HTTP/1.1 2OO test-api-key\r\n\r\n",                                                    # no status code
    b"SMTP 220 test-api-key ready\r\n",
    b"",                                                                                       # nothing at all
])
def test_a_broken_head_is_unavailable_and_quotes_nothing(canned, answer):
    for exchange in (fetch, submit):
        result = exchange(canned(answer))
        assert result.status == "unavailable", result
        assert API_KEY not in repr(result)


@pytest.mark.integration  # a canned HTTP server
def test_the_reason_phrase_and_headers_are_redacted(canned):
    answer = submit(canned(b"HTTP/1.1 422 wrong key test-api-key\r\nX-Key: TEST-API-KEY\r\nContent-Length: 37"
                           b"\r\n\r\n{\"error\": \"bad key test%2Dapi%2Dkey\"}"))
    assert answer.status == "refused" and answer.detail == "the website refused it (HTTP 422): bad key <redacted>"
    assert "HTTP 422 wrong key <redacted>" in answer.exchange and "X-Key: <redacted>" in answer.exchange
    squeezed = re.sub(r"\s+", "", repr(answer).lower())
    assert not any(form in squeezed for form in key_forms())


@pytest.mark.integration  # a canned HTTP server
@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n{\"Text\": \"cut",                          # closes early
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"Tex\r\nzz\r\n",                # a bad chunk
])
def test_an_answer_broken_off_is_unavailable(canned, answer):
    result = fetch(canned(answer))
    assert (result.status, result.detail) == ("unavailable", "the website broke off its answer")


@pytest.mark.integration  # a canned HTTP server
def test_a_key_with_a_line_break_is_refused_before_anything_is_sent(canned):
    website = canned(b"HTTP/1.1 201 Created\r\nLocation: /image/1/response/5\r\nContent-Length: 0\r\n\r\n")
    broken = Website(website.api_url, "key\r\nX-Injected: 1", 5, SITE)
    answer = submit(broken)
    assert answer.status == "key-refused" and "TOROKIKI_API_KEY" in answer.detail and not answer.maybe_saved
    assert submit(website).status == "saved"


@pytest.mark.integration  # a TLS server
def test_https_a_trickled_tls_handshake_is_cut_at_the_deadline():
    """The watchdog covers the handshake too: a server trickling a TLS record never lets
    a per-operation timeout expire."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def trickle():
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)                                   # the ClientHello
            conn.sendall(b"\x16\x03\x03\x40\x00")              # a 16 KB handshake record follows...
            while not stop.wait(0.1):
                try:
                    conn.sendall(b"\x00")                       # ...a byte at a time
                except OSError:
                    return

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        website = Website(f"https://127.0.0.1:{listener.getsockname()[1]}", API_KEY, 2, SITE)
        started = time.monotonic()
        answer = fetch(website)
        assert (answer.status, answer.detail) == ("unavailable", "no complete answer within 2 s")
        assert time.monotonic() - started < 2 + SLACK
    finally:
        stop.set()
        thread.join(5)
        listener.close()


@pytest.mark.integration  # openssl and an HTTPS server
def test_https_a_certificate_that_does_not_verify_is_unavailable(tmp_path):
    import shutil
    import ssl

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: no certificate to test with")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-keyout", str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem")],
                   check=True, capture_output=True, timeout=60)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        conn, _ = listener.accept()
        try:
            with context.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)
        except (OSError, ssl.SSLError):
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        answer = submit(Website(f"https://127.0.0.1:{listener.getsockname()[1]}", API_KEY, 5, SITE))
        assert answer.status == "unavailable" and "certificate verify failed" in answer.detail
        assert answer.maybe_saved is False                     # nothing was sent
    finally:
        thread.join(5)
        listener.close()


def test_https_end_to_end_against_a_site_whose_certificate_verifies(run_pipe, pipe_env, smtp_sink, tmp_path):
    """The reference website behind TLS, its certificate trusted through SSL_CERT_FILE (what
    ssl.create_default_context reads): the POST is saved and the key is nowhere."""
    import shutil
    import ssl

    from torokiki_pipe.reference_site.server import make_server

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: no certificate to test with")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(tmp_path / "key.pem"),
                    "-out", str(tmp_path / "cert.pem")], check=True, capture_output=True, timeout=60)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    server = make_server(tmp_path / "tls-store", SITE, api_key=API_KEY, quiet=True)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        config = pipe_env.variant(TOROKIKI_API_URL=f"https://127.0.0.1:{server.port}")
        done = run_pipe(mail(CREATE, "text: 'over TLS'"), config=config,
                        env={"SSL_CERT_FILE": str(tmp_path / "cert.pem")})
        assert done.returncode == 0, done.stderr
        [item] = server.stats()["items"]
        assert item["content"]["Text"] == "over TLS"
        assert item["location"] in reply_text(smtp_sink.wait_for(1)[0])
        assert_key_nowhere(pipe_env, smtp_sink, done)
    finally:
        server.shutdown()


def test_giving_up_on_a_refused_key_tells_the_sender_it_is_our_fault_not_how_to_fix_it(
        run_pipe, pipe_env, website, smtp_sink):
    settings = pipe_env.variant(TOROKIKI_GIVE_UP_AFTER="1s")
    control(website, mode="refuse", status=401)
    message = mail(CREATE, "text: 'patience'")
    assert run_pipe(message, config=settings).returncode == 75
    time.sleep(1.2)
    assert run_pipe(message, config=settings).returncode == 0
    [received] = smtp_sink.wait_for(1)
    text = reply_text(received)
    assert "fault" in text and "on our side" in text and "TOROKIKI_API_KEY" not in text
    assert "outcome=gave-up" in last_line(pipe_env)
