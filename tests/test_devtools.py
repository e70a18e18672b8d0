"""The development tools: the reference website, the outbox stand-in, the demo and the SMTP sink."""

from __future__ import annotations

import base64
import datetime
import email
import email.message
import email.policy
import json
import os
import random
import re
import select
import shlex
import shutil
import smtplib
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from torokiki_pipe.devtools import browser, demo, outbox, smtpsink
from torokiki_pipe.reference_site.contract import is_base64
from torokiki_pipe.reference_site.server import serve_in_thread
from torokiki_pipe.reference_site.store import make_png
from torokiki_pipe.adapters.sendmail import Sendmail

SITE = "http://torokiki.net"
KEY = "test-api-key"
PNG = make_png(4, 3, lambda x, y: (x * 60, y * 80, 100))


def post(website, seed, content, key=KEY, idem=None, timeout=10):
    headers = {"X-API-Key": key} if key is not None else {}
    if idem is not None:
        headers["Idempotency-Key"] = idem
    return requests.post(f"{website.url}/image/{seed}/response", json=content, headers=headers,
                         allow_redirects=False, timeout=timeout)


def text_response(seed=1, rid=None, **extra):
    inspired = f"{SITE}/image/{seed}/response" + (f"/{rid}" if rid else "")
    return {"Submitter": "Kiri Tane <kiri@example.net>", "InspiredBy": inspired,
            "Text": "These routes are now plied by a petrol based bus service.", **extra}


# --------------------------------------------------------------------------- website

def test_seeds_are_served_with_a_valid_png(website):
    answer = requests.get(f"{website.url}/image/1/response", headers={"Accept": "application/json"}, timeout=10)
    assert answer.status_code == 200
    seed = answer.json()
    assert "Wellington" in seed["Text"]
    assert seed["Attachment"]["name"] == "lambton-quay-1910.png"
    assert base64.b64decode(seed["Attachment"]["data"]).startswith(b"\x89PNG\r\n\x1a\n")
    for seed_id in (2, 3):
        assert requests.get(f"{website.url}/image/{seed_id}/response", timeout=10).status_code == 200
    assert requests.get(f"{website.url}/image/4/response", timeout=10).status_code == 404
    assert requests.get(f"{website.url}/image/1/response/999", timeout=10).status_code == 404


def test_post_stores_and_answers_201_with_the_public_location(website):
    answer = post(website, 1, text_response(Tags=["lambtonquay", "bus"], Location="123 Lambton Quay"))
    assert answer.status_code == 201, answer.text
    location = answer.headers["Location"]
    assert location.startswith(f"{SITE}/image/1/response/")
    rid = location.rsplit("/", 1)[1]
    fetched = requests.get(f"{website.url}/image/1/response/{rid}", timeout=10)
    assert fetched.status_code == 200
    assert fetched.json()["Tags"] == ["lambtonquay", "bus"]
    # a response to that response, with an attachment
    media = {"InspiredBy": location, "Attachment": {"name": "bus.png", "data": base64.b64encode(PNG).decode()}}
    assert post(website, 1, media).status_code == 201
    # the same id under another seed does not exist
    assert requests.get(f"{website.url}/image/2/response/{rid}", timeout=10).status_code == 404
    stats = website.stats()
    assert (stats["posts"], stats["stored"]) == (2, 2)
    assert [item["seed"] for item in stats["items"]] == [1, 1]
    assert stats["items"][1]["content"]["Attachment"] == {"name": "bus.png", "bytes": len(PNG)}


@pytest.mark.parametrize("content, why", [
    ({"Text": "no InspiredBy"}, "InspiredBy"),
    (text_response(seed=2), "InspiredBy"),                       # names another seed
    (text_response(rid=999), "no response"),
    ({**text_response(), "InspiredBy": SITE + "/image/1/response/"}, "canonical"),
    ({**text_response(), "InspiredBy": "http://evil.example/image/1/response"}, "InspiredBy"),
    ({"InspiredBy": SITE + "/image/1/response"}, "exactly one"),
    ({**text_response(), "Attachment": {"name": "a.png", "data": "aGk="}}, "exactly one"),
    ({"InspiredBy": SITE + "/image/1/response", "Attachment": {"name": "a.png", "data": "not base64!"}}, "base64"),
    ({"InspiredBy": SITE + "/image/1/response", "Attachment": {"name": "a.png", "data": "aGVs\nbG8="}}, "base64"),
    ({"InspiredBy": SITE + "/image/1/response", "Attachment": {"name": "a.png", "data": "aGVsbG8"}}, "base64"),
    ({"InspiredBy": SITE + "/image/1/response", "Attachment": {"name": "a.png", "data": "=="}}, "empty"),
    ({"InspiredBy": SITE + "/image/1/response", "Attachment": {"data": "aGk="}}, "Attachment"),
    (text_response(Tags="bus, tram"), "Tags"),
    (text_response(Tags=["bus", 3]), "Tags"),
    (text_response(Colour="sepia"), "unknown"),
    (["not", "an", "object"], "object"),
])
def test_invalid_content_is_refused_with_400(website, content, why):
    answer = post(website, 1, content)
    assert answer.status_code == 400
    assert why in answer.json()["error"]
    assert website.stats()["stored"] == 0


@pytest.mark.parametrize("text, valid", [
    ("aGVsbG8=", True), ("aGk=", True), ("aA==", True), ("aGVs", True), ("+/+/", True),
    ("aGVsbG8", False),            # not whole quanta
    ("aA===", False), ("a===", False), ("aG=s", False),
    ("aGVs\nbG8=", False), ("aGVs bG8=", False), ("aGVs-_8=", False),   # breaks, spaces, URL-safe
    ("aGVsbG\u00e9=", False),
])
def test_the_reference_website_checks_base64_without_decoding_it(text, valid):
    assert is_base64(text) is valid
    if valid:
        base64.b64decode(text, validate=True)


def test_not_json_and_unknown_seed_are_4xx(website):
    raw = requests.post(f"{website.url}/image/1/response", data=b"{nope", timeout=10,
                        headers={"X-API-Key": KEY, "Content-Type": "application/json"})
    assert raw.status_code == 400 and "JSON" in raw.json()["error"]
    form = requests.post(f"{website.url}/image/1/response", data={"Text": "x"}, timeout=10,
                         headers={"X-API-Key": KEY})
    assert form.status_code == 415
    assert post(website, 9, text_response(seed=9)).status_code == 404
    assert requests.get(f"{website.url}/nowhere", timeout=10).status_code == 404


def test_api_key_is_required_when_configured(website):
    assert post(website, 1, text_response(), key=None).status_code == 401
    assert post(website, 1, text_response(), key="wrong").status_code == 401
    assert post(website, 1, text_response()).status_code == 201
    stats = website.stats()
    assert stats["unauthorized"] == 2 and stats["stored"] == 1
    # fetching needs no key
    assert requests.get(f"{website.url}/image/1/response", timeout=10).status_code == 200


@pytest.mark.integration  # a website server
def test_no_key_needed_when_the_server_has_none(tmp_path):
    server, url = serve_in_thread(tmp_path / "store", SITE)
    try:
        answer = requests.post(f"{url}/image/3/response", json=text_response(seed=3), timeout=10)
        assert answer.status_code == 201
    finally:
        server.shutdown()


def test_idempotency_key_stores_once(website):
    first = post(website, 1, text_response(), idem="msgid-abc@example.net")
    again = post(website, 1, text_response(), idem="msgid-abc@example.net")
    other = post(website, 1, text_response(), idem="msgid-def@example.net")
    assert first.status_code == again.status_code == other.status_code == 201
    assert first.headers["Location"] == again.headers["Location"] != other.headers["Location"]
    stats = website.stats()
    assert (stats["posts"], stats["stored"], stats["duplicates"]) == (3, 2, 1)
    assert [item["idempotency_key"] for item in stats["items"]] == ["msgid-abc@example.net",
                                                                     "msgid-def@example.net"]


def test_concurrent_duplicates_store_once(website):
    results = []

    def submit():
        results.append(post(website, 2, text_response(seed=2), idem="same-key").headers["Location"])

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(set(results)) == 1 and len(results) == 8
    assert website.stats()["stored"] == 1


@pytest.mark.integration  # two website servers
def test_store_survives_a_restart(tmp_path):
    store = tmp_path / "store"
    server, url = serve_in_thread(store, SITE, api_key=KEY)
    try:
        answer = requests.post(f"{url}/image/1/response", json=text_response(), timeout=10,
                               headers={"X-API-Key": KEY, "Idempotency-Key": "k1"})
        location = answer.headers["Location"]
    finally:
        server.shutdown()
    assert not [p for p in store.rglob("*") if p.name.startswith(".tmp-")]
    server, url = serve_in_thread(store, SITE, api_key=KEY)
    try:
        again = requests.post(f"{url}/image/1/response", json=text_response(), timeout=10,
                              headers={"X-API-Key": KEY, "Idempotency-Key": "k1"})
        assert again.headers["Location"] == location
        rid = location.rsplit("/", 1)[1]
        assert requests.get(f"{url}/image/1/response/{rid}", timeout=10).status_code == 200
    finally:
        server.shutdown()


@pytest.mark.parametrize("mode, status, expected", [
    ("down", None, 503), ("down", 502, 502), ("refuse", None, 403), ("refuse", 422, 422),
])
def test_fault_modes_answer_the_status(website, mode, status, expected):
    website.control(mode, status=status)
    assert post(website, 1, text_response()).status_code == expected
    assert requests.get(f"{website.url}/image/1/response", timeout=10).status_code == expected
    assert website.stats()["stored"] == 0
    website.control("ok")
    assert post(website, 1, text_response()).status_code == 201


def test_flaky_fails_every_other_request(website):
    website.control("flaky")
    codes = [post(website, 1, text_response(), idem="flaky-key").status_code for _ in range(4)]
    assert codes == [503, 201, 503, 201]
    stats = website.stats()
    assert (stats["stored"], stats["duplicates"], stats["faults"]) == (1, 1, 2)


def test_slow_mode_delays_and_times_out_clients(website):
    website.control("slow", delay=1.5)
    with pytest.raises(requests.Timeout):
        post(website, 1, text_response(), timeout=0.3)
    started = time.monotonic()
    assert post(website, 1, text_response(), timeout=10).status_code == 201
    assert time.monotonic() - started >= 1.4


def test_control_rejects_bad_values(website):
    for body in ({"mode": "sideways"}, {"mode": "slow", "delay": -1}, {"mode": "refuse", "status": 99}):
        answer = requests.post(f"{website.url}/_control", json=body, timeout=10)
        assert answer.status_code == 400
    assert requests.get(f"{website.url}/_control", timeout=10).json()["mode"] == "ok"


def control(website, **body) -> dict:
    """POST /_control with any of the fields (the conftest helper knows only mode, delay, status)."""
    answer = requests.post(f"{website.url}/_control", json=body, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def raw_exchange(website, request: bytes, timeout: float = 10):
    """A raw socket to the website with `request` sent: the tests read what comes back as it comes."""
    host, port = website.server.server_address[:2]
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.sendall(request)
    return sock


def get_request(path: str = "/image/1/response") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\n\r\n".encode()


@pytest.mark.parametrize("mode, status", [
    ("refuse", 401), ("refuse", 403), ("refuse", 407), ("down", 408), ("down", 429),
])
def test_fault_modes_answer_the_key_and_rate_statuses(website, mode, status):
    website.control(mode, status=status)
    assert post(website, 1, text_response()).status_code == status
    assert website.stats()["stored"] == 0


def test_echo_key_quotes_the_sent_key_in_error_text_and_header(website):
    control(website, mode="echo-key")
    answer = post(website, 1, text_response(), key="sent-key-12345")
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert "sent-key-12345" in error and "SENT-KEY-12345" in error
    assert "%73%65%6E%74" in error                                        # URL-encoded, every byte
    assert "sent-ke\ny-12345" in error                                    # split by a line break
    assert base64.b64encode(b"sent-key-12345").decode() in error
    assert "\\u0073\\u0065" in answer.text                                # JSON escapes in the raw body
    assert answer.headers["X-Echo-Key"] == "sent-key-12345"
    assert website.stats()["stored"] == 0


def test_echo_key_with_201_stores_and_echoes_in_location_and_header(website):
    control(website, mode="echo-key", status=201)
    answer = post(website, 1, text_response())
    assert answer.status_code == 201
    assert answer.headers["Location"].endswith(f"?api_key={KEY}")
    assert answer.headers["X-Echo-Key"] == KEY and answer.json()["key"] == KEY
    assert website.stats()["stored"] == 1


def test_echo_key_get_puts_the_servers_key_in_text_and_file(website):
    control(website, mode="echo-key")
    answer = requests.get(f"{website.url}/image/1/response", timeout=10)     # no key sent: its own
    assert answer.status_code == 200 and answer.headers["X-Echo-Key"] == KEY
    content = answer.json()
    assert KEY in content["Text"]
    data = base64.b64decode(content["Attachment"]["data"])
    assert data.startswith(b"\x89PNG") and data.endswith(f"api_key={KEY}".encode())


@pytest.mark.parametrize("length", [True, False])
def test_huge_get_is_valid_content_of_the_size_given(website, length):
    size = 3 * 1024 * 1024 + 17
    control(website, mode="huge", size=size, length=length)
    answer = requests.get(f"{website.url}/image/1/response", timeout=30)
    assert answer.status_code == 200
    assert ("Content-Length" in answer.headers) == length
    assert size - 4 <= len(answer.content) <= size
    content = answer.json()
    assert is_base64(content["Attachment"]["data"]) and content["Attachment"]["name"] == "huge.bin"


def test_huge_post_stores_and_pads_its_answer(website):
    control(website, mode="huge", size=1024 * 1024)
    answer = post(website, 1, text_response())
    assert answer.status_code == 201 and "Location" in answer.headers
    assert len(answer.content) == 1024 * 1024 and answer.json()["padding"].startswith("xxx")
    assert website.stats()["stored"] == 1
    control(website, mode="huge", size=1000, status=500)
    answer = post(website, 1, text_response())
    assert answer.status_code == 500 and "Location" not in answer.headers     # 5xx after storing
    assert website.stats()["stored"] == 2


def _writers() -> set:
    """The reference website's request threads alive now (named after their target since 3.10)."""
    return {t for t in threading.enumerate() if "process_request" in t.name and t.is_alive()}


def _wait_for(condition, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_endless_body_never_ends_and_stops_when_the_client_goes(website):
    control(website, mode="endless")
    before = _writers()
    sock = raw_exchange(website, get_request())
    got = b""
    while len(got) < 3 * 1024 * 1024:          # far more than any answer: it goes on
        chunk = sock.recv(1 << 16)
        assert chunk, "the endless body ended"
        got += chunk
    assert b"Transfer-Encoding: chunked" in got[:1000]
    writers = _writers() - before
    assert writers                                  # its writer, while it writes
    sock.close()
    assert _wait_for(lambda: not any(t.is_alive() for t in writers)), "the writer outlived its client"


@pytest.mark.integration  # a website server
def test_endless_and_trickle_writers_stop_when_the_server_shuts_down(tmp_path):
    server, url = serve_in_thread(tmp_path / "store", SITE, api_key=KEY)
    sockets = []
    try:
        for body in ({"mode": "endless"}, {"mode": "trickle", "delay": 30}):
            requests.post(f"{url}/_control", json=body, timeout=10)
            sock = socket.create_connection(server.server_address[:2], timeout=10)
            sock.sendall(get_request())
            sock.recv(100)                          # the writer is running
            sockets.append(sock)
    finally:
        server.shutdown()
    for sock in sockets:                            # each answer ends: EOF (or a reset), not a hang
        sock.settimeout(15)
        try:
            while sock.recv(1 << 16):
                pass
        except ConnectionResetError:
            pass
        sock.close()


def test_trickle_writes_the_body_a_byte_at_a_time(website):
    control(website, mode="trickle", delay=0.2)
    sock = raw_exchange(website, get_request())
    head = b""
    while b"\r\n\r\n" not in head:               # the head comes at once
        head += sock.recv(1 << 16)
    assert head.startswith(b"HTTP/1.1 200") and b"Content-Length:" in head
    assert head.endswith(b"\r\n\r\n")            # and no body with it
    assert len(sock.recv(1 << 16)) == 1            # then the body, one byte per write
    assert len(sock.recv(1 << 16)) == 1
    sock.close()


def test_trickle_head_writes_even_the_status_line_slowly(website):
    control(website, mode="trickle", delay=0.2, part="head")
    sock = raw_exchange(website, get_request())
    assert sock.recv(1 << 16) == b"H"
    sock.close()


def test_a_trickled_answer_holds_no_lock_others_wait_for(website):
    control(website, mode="trickle", delay=30)
    body = json.dumps(text_response()).encode()
    request = (f"POST /image/1/response HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\nIdempotency-Key: same\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    first, replayed = raw_exchange(website, request), raw_exchange(website, request)   # stored; a duplicate
    for sock in (first, replayed):
        assert sock.recv(1 << 16).startswith(b"HTTP/1.1 201")      # both are trickling their bodies now
    control(website, mode="ok")
    assert post(website, 1, text_response(), idem="other", timeout=5).status_code == 201
    assert (website.stats()["stored"], website.stats()["duplicates"]) == (2, 1)
    first.close()
    replayed.close()


@pytest.mark.parametrize("location", ["javascript:alert(1)", "//evil.example/x", None])
def test_foreign_location_stores_and_answers_the_location_given(website, location):
    control(website, mode="foreign-location", location=location)
    answer = post(website, 1, text_response())
    assert answer.status_code == 201
    assert answer.headers.get("Location") == location
    assert website.stats()["stored"] == 1


def test_hostile_control_values_are_checked(website):
    for body in ({"mode": "huge", "size": 0}, {"mode": "huge", "size": "big"}, {"mode": "trickle", "part": "tail"},
                 {"mode": "foreign-location", "location": "x\r\nSet-Cookie: a"}, {"mode": "huge", "length": 1}):
        assert requests.post(f"{website.url}/_control", json=body, timeout=10).status_code == 400, body
    assert requests.get(f"{website.url}/_control", timeout=10).json()["mode"] == "ok"


def _start_site(command: list, tmp_path: Path, env: dict | None = None) -> subprocess.Popen:
    environ = {k: v for k, v in os.environ.items() if k != "TOROKIKI_REFERENCE_API_KEY"}
    return subprocess.Popen([*command, "--store", str(tmp_path / "store"), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**environ, **(env or {})})


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    assert process.wait(timeout=10) == 0
    assert "Traceback" not in process.stderr.read()


@pytest.mark.integration  # the website's command line, as a process
def test_command_line_server_prints_its_port_and_the_env_file_lines(tmp_path):
    port_file = tmp_path / "port"
    process = _start_site([sys.executable, "-m", "torokiki_pipe.reference_site", "--port", "0",
                           "--port-file", str(port_file), "--api-key", "k-7f3e9a"], tmp_path)
    try:
        line = process.stdout.readline()
        port = int(port_file.read_text())
        assert line.startswith(f"listening on http://127.0.0.1:{port}; ")
        assert f" TOROKIKI_API_URL=http://127.0.0.1:{port} " in line
        assert "TOROKIKI_API_KEY=(the key given with --api-key)" in line and "k-7f3e9a" not in line
        assert line.rstrip().endswith("TOROKIKI_SITE_URL=http://torokiki.net")
        seed = requests.get(f"http://127.0.0.1:{port}/image/2/response", timeout=10).json()
        assert seed["Attachment"]["name"].endswith(".png")
    finally:
        _stop(process)


@pytest.mark.integration  # the installed command, as a process
def test_reference_site_subcommand_takes_its_key_from_the_variable_and_never_prints_it(pipe_program, tmp_path):
    with socket.socket() as probe:            # a port that is free now, as an administrator would pick
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = _start_site([pipe_program, "reference-site", "--port", str(port)], tmp_path,
                          env={"TOROKIKI_REFERENCE_API_KEY": "s3cret-staging-key"})
    try:
        line = process.stdout.readline()
        assert f"TOROKIKI_API_URL=http://127.0.0.1:{port} " in line
        assert "TOROKIKI_API_KEY=(the key in $TOROKIKI_REFERENCE_API_KEY)" in line
        assert "s3cret" not in line
        url = f"http://127.0.0.1:{port}/image/1/response"
        content = text_response()
        assert requests.post(url, json=content, headers={"X-API-Key": "wrong"}, timeout=10).status_code == 401
        saved = requests.post(url, json=content, headers={"X-API-Key": "s3cret-staging-key"}, timeout=10)
        assert saved.status_code == 201
    finally:
        _stop(process)


@pytest.mark.integration  # the website's command line, as a process
def test_reference_site_says_in_one_line_that_its_port_is_in_use(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "torokiki_pipe.reference_site", "--port", str(port),
                               "--store", str(tmp_path / "store")], capture_output=True, text=True, timeout=30)
    assert done.returncode == os.EX_UNAVAILABLE
    assert done.stdout == "" and done.stderr.count("\n") == 1
    assert f"port {port} on 127.0.0.1 is in use" in done.stderr


@pytest.mark.integration  # the website's command line, as a process
def test_reference_site_says_in_one_line_that_its_store_cannot_be_written(tmp_path):
    (tmp_path / "file").write_text("not a folder\n")
    done = subprocess.run([sys.executable, "-m", "torokiki_pipe.reference_site", "--port", "0",
                           "--store", str(tmp_path / "file" / "store")], capture_output=True, text=True, timeout=30)
    assert done.returncode == os.EX_CANTCREAT
    assert done.stdout == "" and done.stderr.count("\n") == 1
    assert f"cannot write the store {tmp_path / 'file' / 'store'}" in done.stderr


@pytest.mark.integration  # the website's command line, as a process
@pytest.mark.parametrize("argv, code", [(["--port", "0", "--host", "no-such-host.invalid"], os.EX_USAGE),
                                        (["--no-such-option"], os.EX_USAGE)])
def test_reference_site_wrong_usage_is_ex_usage_without_a_traceback(tmp_path, argv, code):
    done = subprocess.run([sys.executable, "-m", "torokiki_pipe.reference_site", "--store", str(tmp_path / "s"),
                           *argv], capture_output=True, text=True, timeout=30)
    assert done.returncode == code and "Traceback" not in done.stderr and done.stderr.strip()


@pytest.mark.integration  # the installed commands, the reference site as a process, msmtp and the SMTP sink
def test_the_try_it_path_with_the_installed_commands_saves_and_answers(pipe_program, msmtp, smtp_sink, tmp_path):
    # postfix/README.md's "Try it", the pipe fed directly instead of through Postfix: the
    # reference site started as an administrator would, the env file from the line it prints,
    # an installed example mail sent as the administrator's own.
    key = "try-it-" + os.urandom(8).hex()
    site = _start_site([pipe_program, "reference-site", "--port", "0"], tmp_path,
                       env={"TOROKIKI_REFERENCE_API_KEY": key})
    try:
        told = dict(word.split("=", 1) for word in site.stdout.readline().split("env file: ", 1)[1].split()
                    if word.startswith("TOROKIKI_") and not word.startswith("TOROKIKI_API_KEY="))
        env_file = tmp_path / "torokiki.env"
        env_file.write_text("".join(f"{k}={v}\n" for k, v in {
            **told, "TOROKIKI_API_KEY": key, "TOROKIKI_GATEWAY_ADDRESS": "gateway@torokiki.net",
            "TOROKIKI_SENDMAIL": msmtp.command, "TOROKIKI_LOG_DIR": str(tmp_path / "logs")}.items()))
        env_file.chmod(0o600)
        environ = {k: v for k, v in os.environ.items() if not k.startswith("TOROKIKI_")}
        mail = subprocess.run([pipe_program, "example", "03-text-response", "--from", "Ana <ana@example.org>"],
                              capture_output=True, timeout=60, env=environ, check=True).stdout
        done = subprocess.run([pipe_program, "--config", str(env_file)], input=mail, capture_output=True,
                              timeout=60, env=environ)
        assert done.returncode == 0, done.stderr
    finally:
        _stop(site)
    stored = [json.loads(p.read_text()) for p in (tmp_path / "store" / "image" / "1" / "responses").glob("*.json")]
    assert [item["content"]["Submitter"] for item in stored] == ["Ana <ana@example.org>"]
    reply = smtp_sink.wait_for(1)[0]
    assert reply.rcpt_tos == ("ana@example.org",)
    assert stored[0]["location"] in reply.message().get_body(("plain",)).get_content()


def test_reference_site_help_documents_the_key_variable_and_the_env_file(capsys):
    from torokiki_pipe.reference_site.__main__ import main as site_main

    assert site_main(["--help"]) == os.EX_OK
    text = capsys.readouterr().out
    assert "$TOROKIKI_REFERENCE_API_KEY" in text and "TOROKIKI_API_URL=http://127.0.0.1:8080" in text
    assert "default: 8080" in text


# --------------------------------------------------------------------------- outbox

@pytest.mark.integration  # the outbox, as a process
def test_outbox_stores_each_message_with_its_envelope(tmp_path):
    box = tmp_path / "box"
    message = b"From: gateway@torokiki.net\nTo: kiri@example.net\nSubject: hi\n\nKia ora\n"
    for n in range(2):
        done = subprocess.run([sys.executable, "-m", "torokiki_pipe.devtools.outbox", str(box),
                               "-i", "-oi", "-f", "<>", "--", "kiri@example.net"],
                              input=message, capture_output=True, timeout=30)
        assert done.returncode == 0, done.stderr
    stored = outbox.messages(box)
    assert len(stored) == 2 and all(p.suffix == ".eml" for p in stored)
    parsed = email.message_from_bytes(stored[0].read_bytes(), policy=email.policy.default)
    assert parsed["X-Outbox-Envelope-To"] == "kiri@example.net"
    assert parsed["X-Outbox-Envelope-From"] == "<>"
    assert parsed["Subject"] == "hi" and parsed.get_content() == "Kia ora\n"
    assert not [p for p in box.iterdir() if p.name.startswith(".tmp-")]


def test_outbox_arguments():
    assert outbox.parse_args(["-i", "-f", "gw@torokiki.net", "--", "a@x", "b@y"]) == ("gw@torokiki.net", ["a@x", "b@y"])
    assert outbox.parse_args(["-oi", "-fgw@torokiki.net", "a@x"]) == ("gw@torokiki.net", ["a@x"])
    assert outbox.parse_args(["-i"]) == (None, [])


@pytest.mark.integration  # the outbox, as a process
def test_outbox_without_recipient_is_a_usage_error(tmp_path):
    done = subprocess.run([sys.executable, "-m", "torokiki_pipe.devtools.outbox", str(tmp_path), "-i"],
                          input=b"x", capture_output=True, timeout=30)
    assert done.returncode == 64
    assert outbox.messages(tmp_path) == []


@pytest.mark.integration  # the outbox, as a process
def test_outbox_unwritable_folder_is_temporary(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    done = subprocess.run([sys.executable, "-m", "torokiki_pipe.devtools.outbox", str(blocker / "box"),
                           "--", "a@x"], input=b"x", capture_output=True, timeout=30)
    assert done.returncode == 75


# --------------------------------------------------------------------------- the demo

SEED_URL = f"{SITE}/image/1/response"
OURS_ID = "<torokiki.image.1.0123456789abcdef@torokiki.net>"


def our_content_mail() -> email.message.EmailMessage:
    """A content mail as the gateway sends it, for the demo's phone to reply to."""
    ours = email.message.EmailMessage()
    ours["From"] = "Torokiki <gateway@torokiki.net>"
    ours["To"] = "Kiri Tane <kiri@example.net>"
    ours["Subject"] = f"Torokiki content: {SEED_URL}"
    ours["Date"] = "Tue, 14 May 2024 08:05:40 +1200"
    ours["Message-ID"] = OURS_ID
    ours["References"] = "<get-1@example.net>"
    ours.set_content(f"Kia ora Kiri,\n\nHere is the Torokiki content you asked for:\n  {SEED_URL}\n")
    ours.add_alternative("<p>Kia ora Kiri,</p>", subtype="html")
    return ours


def test_the_demo_phone_replies_as_iphone_mail_does():
    now = datetime.datetime(2024, 5, 14, 8, 30, tzinfo=datetime.timezone.utc)
    ours = our_content_mail()
    photo = email.message_from_bytes(demo.photo_reply(ours, PNG, now), policy=email.policy.default)
    assert photo["Subject"] == f"Re: Torokiki content: {SEED_URL}"
    assert photo["In-Reply-To"] == OURS_ID
    assert photo["References"].split() == ["<get-1@example.net>", OURS_ID]
    assert demo.structure(photo) == ("multipart/alternative [text/plain, multipart/related "
                                     f"[text/html, image/png {demo.PHOTO_NAME} {len(PNG)} bytes inline]]")
    assert b"\r\n" not in demo.photo_reply(ours, PNG, now)        # as Postfix's pipe hands it over
    text, related = photo.get_payload()
    page, image = related.get_payload()
    assert image.get_content() == PNG
    assert f'src="cid:{image["Content-ID"].strip("<>")}"' in page.get_content()
    assert '<blockquote type="cite">' in page.get_content()
    assert text.get_content().startswith("\n\nSent from my iPhone\n\n> On 14 May 2024, at 08:05, "
                                         "Torokiki <gateway@torokiki.net> wrote:\n>\n> Kia ora Kiri,\n")
    words = email.message_from_bytes(demo.words_reply(ours, "Same corner today.", now), policy=email.policy.default)
    assert (words["Subject"], words["In-Reply-To"]) == (photo["Subject"], OURS_ID)
    assert words.get_content_type() == "text/plain"
    assert words.get_content().startswith("Same corner today.\n\nSent from my iPhone\n\n> On 14 May 2024")
    assert f">   {SEED_URL}\n" in words.get_content()


def test_the_demo_without_chromium_says_so_in_one_line_and_still_writes_the_pages(tmp_path, capsys):
    reply = email.message.EmailMessage()
    reply["Subject"] = "Torokiki by email: how to use it"
    reply.set_content("Kia ora,\n")
    reply.add_alternative("<p>Kia ora,</p>", subtype="html")
    (tmp_path / "reply.eml").write_bytes(reply.as_bytes())
    demo.show_html([("01-help", tmp_path / "reply.eml")], tmp_path / "out", None)
    assert (tmp_path / "out" / "01-help.html").read_text() == "<p>Kia ora,</p>\n"
    assert not list((tmp_path / "out").glob("*.png"))
    said = [line for line in capsys.readouterr().out.splitlines() if "screenshot" in line.lower()]
    assert said == ["No screenshots: chromium is not installed (apt-get install chromium; "
                    "`make deps` does it as root)."]


def _section(text: str, start: str, end: str) -> str:
    assert start in text, f"{start!r} is not in the demo's output"
    return text.split(start, 1)[1].split(end, 1)[0]


@pytest.mark.integration  # the demo: the reference website, the installed pipe, chromium when installed
def test_demo_shows_the_reply_flow_answering_what_the_gateway_sent(pipe_program, tmp_path):
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "torokiki_pipe.devtools.demo", "--pipe", pipe_program,
                           "--out", str(out), "--keep"], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    kept = re.search(r"^Kept (\S+):", done.stdout, re.MULTILINE)
    try:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr
        assert kept, "the demo did not say where it kept its folder"
        sent_replies = {}
        for path in outbox.messages(Path(kept[1]) / "outbox"):
            reply = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            sent_replies[reply["Message-ID"]] = reply
    finally:
        if kept:
            shutil.rmtree(kept[1], ignore_errors=True)
    output = done.stdout
    for example_mail in sorted(p.name for p in (Path(__file__).parent.parent / "examples").glob("*.eml")):
        assert f"{example_mail}   Subject: " in output
    steps = [_section(output, f"Step {n} of 3: ", f"Step {n + 1} of 3: " if n < 3 else "=" * 72)
             for n in (1, 2, 3)]

    def sent(step: str, header: str) -> str:
        found = re.search(rf"^    \| {header}:\s+(.+)$", _section(step, "  sent:\n", "  exit "), re.MULTILINE)
        assert found, f"no {header} in what step sent:\n{step}"
        return found[1]

    def answered(step: str) -> email.message.EmailMessage:
        found = re.search(r"^    \| Message-ID:\s+(<\S+>)$", _section(step, "  reply:\n", "the website stored"),
                          re.MULTILINE)
        assert found and found[1] in sent_replies, f"step's reply is not in the outbox:\n{step}"
        return sent_replies[found[1]]

    def stored(step: str) -> str:
        return _section(step, "  the website stored:", "\n-----")

    # 1. a get: the content mail, threaded by its Message-ID, nothing stored
    content_mail = answered(steps[0])
    assert content_mail["Subject"] == f"Torokiki content: {SEED_URL}"
    assert content_mail["Message-ID"].startswith("<torokiki.image.1.")
    assert stored(steps[0]).strip() == "nothing"
    # 2. Reply pressed on that mail, a photo inline: it answers the mail the outbox holds
    assert sent(steps[1], "Subject") == f"Re: {content_mail['Subject']}"
    assert sent(steps[1], "In-Reply-To") == content_mail["Message-ID"]
    assert "multipart/related [text/html, image/png IMG_0417.PNG" in sent(steps[1], "Parts")
    saved_mail = answered(steps[1])
    assert saved_mail["Subject"] == f"Saved: your response to {SEED_URL}"
    photo_stored = stored(steps[1])
    assert f"InspiredBy: {SEED_URL}\n" in photo_stored
    assert "Attachment: IMG_0417.PNG (" in photo_stored and "Text:" not in photo_stored
    # 3. Reply pressed on the saved mail, a few words: another response, only the words posted
    assert sent(steps[2], "Subject") == f"Re: {saved_mail['Subject']}"
    assert sent(steps[2], "In-Reply-To") == saved_mail["Message-ID"]
    assert answered(steps[2])["Subject"] == f"Saved: your response to {SEED_URL}"
    words_stored = stored(steps[2])
    assert [line.strip() for line in words_stored.strip().splitlines()][1:] == [
        f"InspiredBy: {SEED_URL}", "Submitter: Kiri Tane <kiri@example.net>",
        "Text: The tram stop was right outside the bank. My nana waited there every morning.",
        "Tags: lambtonquay, tram, nana"]
    # the HTML replies, and their screenshots when chromium is there
    assert (out / "01-help.html").is_file()
    if browser.find_chromium():
        assert (out / "01-help.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
        assert "01-help.html  ->  01-help.png" in output
    else:
        assert "No screenshots: chromium is not installed" in output


# --------------------------------------------------------------------------- SMTP sink (stdlib)

@pytest.fixture
def sink(tmp_path):
    """The standard-library SMTP sink, also writing each message into tmp_path/"sink"."""
    server = smtpsink.serve_in_thread(tmp_path / "sink")
    try:
        yield server
    finally:
        server.shutdown()


@pytest.fixture
def sink_msmtp(sink, tmp_path):
    """The TOROKIKI_SENDMAIL value for the real msmtp delivering to `sink` (as conftest's msmtp)."""
    path = shutil.which("msmtp")
    if path is None:
        pytest.skip("msmtp is not installed (apt-get install msmtp; `make deps` does it)")
    rc = tmp_path / "msmtprc-sink"
    rc.write_text("\n".join([
        "defaults", "auth off", "tls off", "syslog off", "logfile", "timeout 15", "",
        "account sink", f"host {sink.host}", f"port {sink.port}", "from gateway@torokiki.net", "",
        "account default : sink", "",
    ]))
    rc.chmod(0o600)                     # msmtp refuses a config others can read
    return shlex.join([path, "-C", str(rc)])


def send_as_the_gateway(command: str, message: bytes, recipient: str = "kiri@example.net"):
    """Run the mailer with exactly the argv the gateway builds (null sender, `-- recipient`)."""
    argv = Sendmail(tuple(shlex.split(command))).argv(recipient)
    return subprocess.run(argv, input=message, capture_output=True, timeout=60)


# Date and Message-ID present, so that msmtp adds no header and the bytes can be compared.
HEAD = (b"From: Torokiki <gateway@torokiki.net>\nTo: kiri@example.net\nSubject: sink\n"
        b"Date: Tue, 14 May 2024 08:02:05 +1200\nMessage-ID: <sink-test@torokiki.net>\n\n")


@pytest.mark.integration  # msmtp and the SMTP sink
def test_msmtp_delivers_a_reply_with_the_null_sender(sink, sink_msmtp):
    done = send_as_the_gateway(sink_msmtp, HEAD + b"Kia ora\n")
    assert done.returncode == 0, done.stderr
    [received] = sink.wait_for(1, timeout=10)
    assert received.mail_from == "<>"
    assert received.rcpt_tos == ("kiri@example.net",)
    assert received.data == (HEAD + b"Kia ora\n").replace(b"\n", b"\r\n")
    assert email.message_from_bytes(received.data, policy=email.policy.default)["Subject"] == "sink"


@pytest.mark.integration  # msmtp and the SMTP sink
def test_msmtp_dot_stuffing_is_undone(sink, sink_msmtp):
    body = b".a line that starts with a dot\n..two dots\n.\nthe line above is a lone dot\n"
    done = send_as_the_gateway(sink_msmtp, HEAD + body)
    assert done.returncode == 0, done.stderr
    assert sink.wait_for(1)[0].data == (HEAD + body).replace(b"\n", b"\r\n")


@pytest.mark.integration  # msmtp and the SMTP sink
def test_msmtp_a_5mb_message_arrives_byte_exact(sink, sink_msmtp):
    rng = random.Random(5)
    lines = [base64.b64encode(rng.randbytes(57)) for _ in range(5 * 1024 * 1024 // 78)]
    lines[1::1000] = [b"." + line for line in lines[1::1000]]
    message = HEAD + b"\n".join(lines) + b"\n"
    done = send_as_the_gateway(sink_msmtp, message)
    assert done.returncode == 0, done.stderr
    [received] = sink.wait_for(1)
    assert len(received.data) > 5 * 1024 * 1024
    assert received.data == message.replace(b"\n", b"\r\n")


@pytest.mark.integration  # msmtp and the SMTP sink
def test_msmtp_messages_are_written_into_the_folder(sink, sink_msmtp, tmp_path):
    for n in range(3):
        done = send_as_the_gateway(sink_msmtp, HEAD + f"message {n}\n".encode())
        assert done.returncode == 0, done.stderr
    assert sink.count() == 3
    files = sorted((tmp_path / "sink").iterdir())
    assert [p.suffix for p in files] == [".eml"] * 3          # no temporary file left
    parsed = email.message_from_bytes(files[2].read_bytes(), policy=email.policy.default)
    assert parsed["X-Sink-Envelope-From"] == "<>"
    assert parsed["X-Sink-Envelope-To"] == "kiri@example.net"
    assert files[2].read_bytes().endswith(b"\r\n\r\nmessage 2\r\n")
    sink.clear()
    assert sink.count() == 0 and sink.messages == []


@pytest.mark.integration  # an SMTP sink server
def test_sink_speaks_enough_smtp(sink):
    with smtplib.SMTP(sink.host, sink.port, timeout=10) as client:
        code, features = client.ehlo("bench.example.net")
        assert code == 250 and b"8BITMIME" in features and b"SIZE" in features
        assert b"PIPELINING" not in features
        assert client.noop()[0] == 250
        assert client.docmd("VRFY", "kiri")[0] == 502
        assert client.docmd("DATA")[0] == 503                  # no MAIL, no RCPT yet
        assert client.docmd("RCPT TO:<kiri@example.net>")[0] == 503
        assert client.docmd("MAIL FROM:<> SIZE=120 BODY=8BITMIME")[0] == 250
        assert client.docmd("MAIL FROM:<> SIZE=120")[0] == 503   # nested
        assert client.docmd("RCPT TO:<>")[0] == 501
        assert client.docmd("RCPT TO:<kiri@example.net>")[0] == 250
        assert client.rset()[0] == 250
        assert client.docmd("RCPT TO:<kiri@example.net>")[0] == 503   # RSET forgot MAIL
        client.sendmail("gw@torokiki.net", ["a@example.net", "b@example.net"], b"Subject: x\r\n\r\n.hi\r\n")
        assert client.docmd(f"MAIL FROM:<gw@torokiki.net> SIZE={smtpsink.DEFAULT_MAX_SIZE + 1}")[0] == 552
        assert client.helo()[0] == 250
    [received] = sink.wait_for(1)
    assert received == smtpsink.Received("gw@torokiki.net", ("a@example.net", "b@example.net"),
                                         b"Subject: x\r\n\r\n.hi\r\n")


@pytest.mark.integration  # an SMTP sink server
def test_sink_refuses_data_above_its_limit_and_goes_on(tmp_path):
    small = smtpsink.serve_in_thread(max_size=10_000)
    try:
        with smtplib.SMTP(small.host, small.port, timeout=10) as client:
            for command in ("MAIL FROM:<gw@torokiki.net>", "RCPT TO:<kiri@example.net>", "DATA"):
                client.putcmd(command)
                assert client.getreply()[0] in (250, 354)
            client.send((b"y" * 76 + b"\r\n") * 500 + b".\r\n")      # 39 KB, no SIZE= announced
            assert client.getreply()[0] == 552
            # the session goes on: an empty message (the final "." right after 354) is kept
            for command in ("MAIL FROM:<>", "RCPT TO:<kiri@example.net>", "DATA"):
                client.putcmd(command)
                assert client.getreply()[0] in (250, 354)
            client.send(b".\r\n")
            assert client.getreply()[0] == 250
        assert small.wait_for(1) == [smtpsink.Received("<>", ("kiri@example.net",), b"")]
        with pytest.raises(TimeoutError):
            small.wait_for(2, timeout=0.2)
    finally:
        small.shutdown()


@pytest.mark.integration  # the SMTP sink, as a process
def test_sink_command_line_prints_its_port_and_writes_messages(tmp_path):
    process = subprocess.Popen([sys.executable, "-m", "torokiki_pipe.devtools.smtpsink", "--port", "0",
                                str(tmp_path / "box")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        assert select.select([process.stdout], [], [], 10)[0], "the sink printed nothing within 10 s"
        line = process.stdout.readline()
        assert line.startswith("listening on 127.0.0.1:")
        port = int(line.strip().rsplit(":", 1)[1])
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.sendmail("", ["kiri@example.net"], b"Subject: cli\r\n\r\nhello\r\n")
        [stored] = list((tmp_path / "box").iterdir())
        assert stored.read_bytes().endswith(b"Subject: cli\r\n\r\nhello\r\n")
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
    assert "1 message(s) received" in process.stderr.read()


# --------------------------------------------------------------------------- fixtures

def test_smtp_sink_and_msmtp_deliver(msmtp, smtp_sink):
    message = b"From: gateway@torokiki.net\r\nTo: kiri@example.net\r\nSubject: test\r\n\r\nhello\r\n"
    done = subprocess.run([msmtp.path, "-C", str(msmtp.rc), "-f", "gateway@torokiki.net", "--",
                           "kiri@example.net"], input=message, capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr
    received = smtp_sink.wait_for(1)
    assert received[0].rcpt_tos == ("kiri@example.net",)
    assert received[0].mail_from == "gateway@torokiki.net"
    assert received[0].message()["Subject"] == "test"
    assert oct(os.stat(msmtp.rc).st_mode & 0o777) == "0o600"


def test_pipe_env_is_private_and_complete(pipe_env, website):
    assert oct(os.stat(pipe_env).st_mode & 0o777) == "0o600"
    text = pipe_env.path.read_text()
    assert f"TOROKIKI_API_URL={website.url}\n" in text
    variant = pipe_env.variant(TOROKIKI_HTTP_TIMEOUT="1")
    assert "TOROKIKI_HTTP_TIMEOUT=1\n" in variant.read_text()
    assert json.dumps(pipe_env.values)  # plain strings only
