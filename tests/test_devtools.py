"""The development tools: the reference website and the outbox stand-in."""

from __future__ import annotations

import base64
import email
import email.policy
import json
import os
import subprocess
import sys
import threading
import time

import pytest
import requests

from torokiki_pipe.devtools import outbox
from torokiki_pipe.devtools.website import make_png, serve_in_thread

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


def test_command_line_server_prints_its_port(tmp_path):
    port_file = tmp_path / "port"
    process = subprocess.Popen(
        [sys.executable, "-m", "torokiki_pipe.devtools.website", "--port", "0", "--store",
         str(tmp_path / "store"), "--port-file", str(port_file), "--api-key", "k", "--quiet"],
        stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith("listening on http://127.0.0.1:")
        port = int(port_file.read_text())
        assert line.strip().endswith(f":{port}")
        seed = requests.get(f"http://127.0.0.1:{port}/image/2/response", timeout=10).json()
        assert seed["Attachment"]["name"].endswith(".png")
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0


# --------------------------------------------------------------------------- outbox

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


def test_outbox_without_recipient_is_a_usage_error(tmp_path):
    done = subprocess.run([sys.executable, "-m", "torokiki_pipe.devtools.outbox", str(tmp_path), "-i"],
                          input=b"x", capture_output=True, timeout=30)
    assert done.returncode == 64
    assert outbox.messages(tmp_path) == []


def test_outbox_unwritable_folder_is_temporary(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    done = subprocess.run([sys.executable, "-m", "torokiki_pipe.devtools.outbox", str(blocker / "box"),
                           "--", "a@x"], input=b"x", capture_output=True, timeout=30)
    assert done.returncode == 75


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
