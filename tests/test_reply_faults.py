"""Answering by replying, under real faults: killed, stopped and raced, a reply is still stored once.

A reply to our content mail carries no command: the content is read from our
Message-ID, the subject or the sub-address, and the words from under the
quote.  These tests deliver such replies, in the shapes phones send them, to
the installed pipe while it is killed with SIGKILL at random moments and
while two deliveries of the same reply race, then count what the reference
website stored and what reached the SMTP sink:

- every reply is stored exactly once, as the writer's words or file, and no
  line of the quoted mail reaches the website;
- every reply is answered, and every answer to one reply is the same bytes
  (a second hand-over after a kill inside sendmail is the documented window).
"""

from __future__ import annotations

import base64
import random
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import pytest

from helpers import GATEWAY, SITE_URL, deliver_until_handled, mail, start

pytestmark = pytest.mark.integration  # the installed pipe, killed and raced

SEED = f"{SITE_URL}/image/1/response"
PHOTO = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==")


def _ours(smtp_sink, run_pipe, config) -> tuple[str, str, list[str]]:
    """Our content mail for SEED: its Message-ID, its subject and its text lines (what a reply quotes)."""
    before = len(smtp_sink.messages)
    done = run_pipe(mail(f"get: '{SEED}'", msgid="<get@example.net>"), config=config)
    assert done.returncode == 0, done.stderr
    reply = smtp_sink.wait_for(before + 1)[before].message()
    text = reply.get_body(("plain",)).get_content()
    return str(reply["Message-ID"]), str(reply["Subject"]), [line for line in text.splitlines() if len(line) > 12]


def _reply(n: int, shape: str, our_id: str, our_subject: str, quoted: list[str]) -> bytes:
    """Reply number n in one of three phone shapes, quoting our mail below the writer's words."""
    words = f"Reply {n}: my nana caught the tram here."
    quote = "\n".join("> " + line for line in quoted)
    attribution = f"On Tue, 14 May 2024 at 08:12, Torokiki <{GATEWAY}> wrote:"
    msgid = f"<reply{n}@example.net>"
    if shape == "words":          # Gmail on Android: text, attribution, quote
        return mail(f"Re: {our_subject}", f"{words}\n\n{attribution}\n{quote}\n", f"In-Reply-To: {our_id}",
                    msgid=msgid)
    if shape == "outlook":        # no In-Reply-To: routed by the subject alone
        block = "\n".join(quoted)
        body = (f"{words}\n\n________________________________\nFrom: Torokiki <{GATEWAY}>\n"
                f"Sent: Tuesday, 14 May 2024 08:12\nTo: kiri@example.net\nSubject: {our_subject}\n\n{block}\n")
        return mail(f"RE: {our_subject}", body, msgid=msgid)
    # iPhone: the photo inline in multipart/related, the quote in a blockquote
    html_quote = "".join(f"<div>{line}</div>" for line in quoted)
    body = ("--a\nContent-Type: multipart/related; boundary=r\n\n"
            "--r\nContent-Type: text/html; charset=utf-8\n\n"
            f'<html><body><div><img src="cid:p{n}@x"></div><div><br></div>'
            f'<blockquote type="cite"><div>{attribution}</div>{html_quote}</blockquote></body></html>\n'
            f"--r\nContent-Type: image/png; name=IMG_{n}.png\nContent-ID: <p{n}@x>\n"
            f"Content-Disposition: inline; filename=IMG_{n}.png\nContent-Transfer-Encoding: base64\n\n"
            f"{base64.encodebytes(PHOTO).decode()}--r--\n--a--\n")
    return mail(f"Re: {our_subject}", body, f"In-Reply-To: {our_id}", f"References: {our_id}", "MIME-Version: 1.0",
                "Content-Type: multipart/alternative; boundary=a", msgid=msgid)


def _check(website, smtp_sink, replies: dict[str, tuple[str, bytes]], quoted: list[str]) -> None:
    items = [item["content"] for item in website.stats()["items"]]
    by_text = [c["Text"] for c in items if c.get("Text")]
    files = [c["Attachment"]["name"] for c in items if c.get("Attachment")]
    expected_texts = sorted(f"Reply {n}: my nana caught the tram here." for n, (shape, _) in
                            enumerate(replies.values()) if shape != "photo")
    expected_files = sorted(f"IMG_{n}.png" for n, (shape, _) in enumerate(replies.values()) if shape == "photo")
    assert sorted(by_text) == expected_texts                 # each once, the words alone
    assert sorted(files) == expected_files
    for content in items:
        posted = " ".join(str(content.get(field, "")) for field in ("Text", "Tags", "Objective", "Location"))
        assert not [line for line in quoted if line.strip() in posted], content
    answers = defaultdict(set)
    for received in smtp_sink.messages:
        answers[str(received.message()["In-Reply-To"])].add(received.data)
    for msgid in replies:
        assert len(answers[msgid]) == 1, f"{msgid}: {len(answers[msgid])} different answers"


@pytest.mark.parametrize("subaddress", ["", "+"])
def test_replies_killed_at_random_moments_are_stored_once_and_answered_alike(
        subaddress, pipe_program, run_pipe, pipe_env, website, smtp_sink):
    config = pipe_env.variant(TOROKIKI_REPLY_LIMIT="off", TOROKIKI_REPLY_SUBADDRESS=subaddress or None)
    our_id, our_subject, quoted = _ours(smtp_sink, run_pipe, config)
    rng = random.Random(14)
    website.control("slow", delay=0.3)        # the kill lands inside the POST as often as not
    shapes = ["words", "outlook", "photo"]
    replies = {}
    for n in range(9):
        shape = shapes[n % 3]
        data = _reply(n, shape, our_id, our_subject, quoted)
        if subaddress:                        # what Postfix writes for gateway+image.1.response@
            data = b"Delivered-To: gateway+image.1.response@torokiki.net\n" + data
        replies[f"<reply{n}@example.net>"] = (shape, data)
        child = start(pipe_program, config, data)
        time.sleep(rng.uniform(0.05, 1.0))
        child.kill()
        child.wait(30)
        child.stderr.close()
        deliver_until_handled(run_pipe, data, config, attempts=8)
    time.sleep(1.5)                           # an msmtp that outlived a killed pipe finishes
    _check(website, smtp_sink, replies, quoted)


def test_two_deliveries_of_one_reply_racing_store_it_once(pipe_program, run_pipe, pipe_env, website, smtp_sink):
    config = pipe_env.variant(TOROKIKI_REPLY_LIMIT="off")
    our_id, our_subject, quoted = _ours(smtp_sink, run_pipe, config)
    website.control("slow", delay=0.3)        # the first still holds the reply when the second arrives
    replies = {f"<reply{n}@example.net>": (["words", "outlook", "photo"][n % 3],
                                           _reply(n, ["words", "outlook", "photo"][n % 3], our_id, our_subject,
                                                  quoted))
               for n in range(6)}
    deliveries = [data for _, data in replies.values() for _ in range(2)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        done = list(pool.map(lambda data: run_pipe(data, config=config), deliveries))
    for data, result in zip(deliveries, done):
        assert b"Traceback" not in result.stderr
        if result.returncode != 0:
            deliver_until_handled(run_pipe, data, config, attempts=8)
    _check(website, smtp_sink, replies, quoted)
