"""Answer by replying, by address: TOROKIKI_REPLY_SUBADDRESS (issue 14, section 1).

With the setting (off by default; e.g. ``+``), every reply about content says
``Reply-To: gateway+image.1.response@torokiki.net``: the content's path, "."
for "/", a dot-atom local part.  A mail to such an address (the envelope
recipient, else Delivered-To, else X-Original-To) is a create-response-to for
that content, as one whose In-Reply-To names our reply is.  Mail from one of
those addresses is ours, and never answered.
"""

from __future__ import annotations

import base64
import email
import email.policy
import re
from datetime import datetime, timezone

import pytest

from torokiki_pipe.config import ConfigError, _build
from torokiki_pipe.stages.s2_headers import read_head
from torokiki_pipe.stages.s3_guard import Sender, reason_to_ignore
from torokiki_pipe.stages.s5_understand.command import read_subject, replying_to
from torokiki_pipe.stages.s5_understand.urls import ContentUrl, content_of_subaddress, subaddress_about
from torokiki_pipe.stages.s7_reply import Reply, ReplyContext, build

from helpers import API_KEY, GATEWAY, PHOTO, SEED, SITE_URL, log_lines, mail, photo_reply

# RFC 5322 dot-atom: what a local part may be without quotes.
DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")


# --------------------------------------------------------------------------- the encoding

@pytest.mark.parametrize("url, local", [
    (ContentUrl("image", 1, None), "gateway+image.1.response"),
    (ContentUrl("image", 123, 4), "gateway+image.123.response.4"),
    (ContentUrl("image", 10 ** 17, 10 ** 17 + 1), f"gateway+image.{10 ** 17}.response.{10 ** 17 + 1}"),
])
def test_a_sub_address_is_a_dot_atom_that_round_trips(url, local):
    address = subaddress_about(url, GATEWAY, "+")
    assert address == f"{local}@torokiki.net" and DOT_ATOM.fullmatch(address.partition("@")[0])
    assert content_of_subaddress(address, GATEWAY, "+") == url
    assert content_of_subaddress(address.upper(), GATEWAY, "+") == url          # MTAs may change case
    assert content_of_subaddress(f"<{address}>", GATEWAY, "+") == url
    # A virtual alias (postfix/virtual) keeps the extension and changes the domain.
    assert content_of_subaddress(address.replace("torokiki.net", "torokiki-pipe.invalid"), GATEWAY, "+") == url


@pytest.mark.parametrize("address", [
    "gateway@torokiki.net", "gateway+@torokiki.net", "gateway+help@torokiki.net",
    "gateway+image.1@torokiki.net", "gateway+image.x.response@torokiki.net",
    "gateway+image.1.response.2.3@torokiki.net", "gateway+image/1/response@torokiki.net",
    "gateway-image.1.response@torokiki.net", "kiri+image.1.response@torokiki.net",
    "gateway+video.1.response@torokiki.net",
])
def test_other_addresses_name_no_content(address):
    assert content_of_subaddress(address, GATEWAY, "+") is None


def test_off_names_no_content():
    assert content_of_subaddress("gateway+image.1.response@torokiki.net", GATEWAY, "") is None


def route(subject: str, *recipients: str, in_reply_to: str = "", subaddress: str = "+"):
    return replying_to(read_subject(subject), in_reply_to, "", GATEWAY, SITE_URL,
                       recipients=recipients, subaddress=subaddress)


def test_a_mail_to_a_sub_address_is_a_create_response_to():
    line = route("Re: hello", "gateway+image.2.response.5@torokiki.net")
    assert (line.command, line.argument, line.implied) == ("create-response-to", f"{SITE_URL}/image/2/response/5",
                                                           True)
    # The first of our own addresses decides (the envelope's first): a plain gateway@ means none.
    assert route("Re: hello", "gateway@torokiki.net", "gateway+image.2.response@torokiki.net").command == "hello"
    assert route("Re: hello", "kiri@example.net", "gateway+image.2.response@torokiki.net").argument.endswith("/2/response")
    # A command written wins; sub-addresses off, the address says nothing.
    assert route(f"get: '{SEED}'", "gateway+image.2.response@torokiki.net").command == "get"
    assert route("Re: hello", "gateway+image.2.response@torokiki.net", subaddress="").command == "hello"


def test_the_sub_address_comes_before_in_reply_to():
    ours = "<torokiki.image.3.0123456789abcdef@torokiki.net>"
    assert route("Re: x", "gateway+image.2.response@torokiki.net", in_reply_to=ours).argument.endswith("/image/2/response")
    assert route("Re: x", in_reply_to=ours).argument.endswith("/image/3/response")


def _reply(reply: Reply, subaddress: str) -> email.message.EmailMessage:
    context = ReplyContext(to=Sender("Kiri", "kiri@example.net"), gateway_address=GATEWAY, site_url=SITE_URL,
                           message_id="<m1@example.net>", references="", original_subject="x",
                           now=datetime(2024, 5, 14, 8, 12, tzinfo=timezone.utc), subaddress=subaddress)
    return email.message_from_bytes(build(reply, context), policy=email.policy.default)


def test_only_replies_about_content_say_reply_to_and_only_when_on():
    about = Reply("saved.txt", {"url": f"{SEED}/7", "inspired_by": SEED, "unsaved_note": ""},
                  about=ContentUrl("image", 1, None))
    [reply_to] = _reply(about, "+").get_all("Reply-To")
    assert [a.addr_spec for a in reply_to.addresses] == ["gateway+image.1.response@torokiki.net"]
    assert _reply(about, "").get_all("Reply-To") is None
    assert _reply(Reply("help.txt", html_template="help.html"), "+").get_all("Reply-To") is None


def test_mail_from_one_of_our_sub_addresses_is_ours():
    head = read_head(mail("help", sender="Torokiki <gateway+image.1.response@torokiki.net>"))
    assert "own address" in reason_to_ignore(head, None, GATEWAY, subaddress="+")
    assert "own address" in reason_to_ignore(head, "gateway+image.1.response@torokiki.net", GATEWAY, subaddress="+")
    assert reason_to_ignore(read_head(mail("help")), None, GATEWAY, subaddress="+") is None


def test_an_automatic_answer_to_our_reply_to_address_is_ignored():
    # An out-of-office without RFC 3834 headers or In-Reply-To, sent to the Reply-To of our mail.
    away = read_head(mail("Automatic reply: hello", "I am away.\n"))
    to_us = "gateway+image.1.response@torokiki.net"
    assert "automatic answer" in reason_to_ignore(away, None, GATEWAY, subaddress="+", recipient=to_us)
    delivered = read_head(mail("Automatic reply: hello", "I am away.\n", f"Delivered-To: {to_us}"))
    assert "automatic answer" in reason_to_ignore(delivered, None, GATEWAY, subaddress="+")
    assert reason_to_ignore(away, None, GATEWAY, subaddress="+", recipient=GATEWAY) is None


BASE = {"TOROKIKI_API_KEY": API_KEY, "TOROKIKI_GATEWAY_ADDRESS": GATEWAY}


@pytest.mark.parametrize("value, read", [("", ""), ("off", ""), ("no", ""), ("+", "+"), ("-", "-"), ("=", "=")])
def test_the_setting(value, read):
    assert _build({**BASE, "TOROKIKI_REPLY_SUBADDRESS": value}, None).reply_subaddress == read
    assert _build(BASE, None).reply_subaddress == ""        # off by default


@pytest.mark.parametrize("value, gateway, words", [
    (".", GATEWAY, "must be off or one of"),
    ("++", GATEWAY, "must be off or one of"),
    ("@", GATEWAY, "must be off or one of"),
    ("-", "torokiki-gateway@torokiki.net", "part of the gateway's own local part"),
])
def test_an_unusable_delimiter_is_refused(value, gateway, words):
    with pytest.raises(ConfigError, match=words):
        _build({**BASE, "TOROKIKI_GATEWAY_ADDRESS": gateway, "TOROKIKI_REPLY_SUBADDRESS": value}, None)


# --------------------------------------------------------------------------- through the installed pipe


def test_get_then_reply_to_its_reply_to_address_with_a_photo(run_pipe, pipe_env, smtp_sink, website):
    config = pipe_env.variant(TOROKIKI_REPLY_SUBADDRESS="+")
    assert run_pipe(mail(f"get: '{SEED}'", msgid="<get-1@example.net>"), config=config).returncode == 0
    [content_mail] = smtp_sink.wait_for(1)
    reply_to = content_mail.message()["Reply-To"]
    assert reply_to == "gateway+image.1.response@torokiki.net"

    # The person edited the subject, and the client wrote no In-Reply-To: the address alone says it.
    reply = photo_reply("my tram photo", msgid="<sub-1@example.net>")
    done = run_pipe(reply, "--recipient", reply_to, config=config)
    assert done.returncode == 0, done.stderr
    [item] = website.stats()["items"]
    assert item["content"]["InspiredBy"] == SEED
    import requests     # the file itself, through the API

    stored = requests.get(website.url + item["location"].split("torokiki.net")[1], timeout=5).json()
    assert base64.b64decode(stored["Attachment"]["data"]) == PHOTO and "Text" not in stored
    saved = smtp_sink.wait_for(2)[1].message()
    assert saved["Subject"] == f"Saved: your response to {SEED}"
    assert saved["Reply-To"] == "gateway+image.1.response@torokiki.net"
    assert "command=create-response-to" in log_lines(pipe_env)[-1]


@pytest.mark.parametrize("header", ["Delivered-To", "X-Original-To"])
def test_the_sub_address_is_read_from_the_delivery_headers(run_pipe, pipe_env, smtp_sink, website, header):
    config = pipe_env.variant(TOROKIKI_REPLY_SUBADDRESS="+")
    words = mail("Re: hello", "A tram on Lambton Quay, 1962.\n",
                 f"{header}: gateway+image.2.response@torokiki.net", msgid="<sub-2@example.net>")
    assert run_pipe(words, config=config).returncode == 0
    [item] = website.stats()["items"]
    assert item["content"]["InspiredBy"] == f"{SITE_URL}/image/2/response"
    assert item["content"]["Text"] == "A tram on Lambton Quay, 1962."


def test_off_by_default_no_reply_to_and_the_address_says_nothing(run_pipe, pipe_env, smtp_sink, website):
    assert run_pipe(mail(f"get: '{SEED}'", msgid="<get-2@example.net>")).returncode == 0
    assert smtp_sink.wait_for(1)[0].message()["Reply-To"] is None
    words = mail("Re: hello", "A tram.\n", msgid="<sub-3@example.net>")
    assert run_pipe(words, "--recipient", "gateway+image.1.response@torokiki.net").returncode == 0
    assert website.stats()["items"] == []
    assert "outcome=invalid" in log_lines(pipe_env)[-1]


def test_mail_from_our_sub_address_is_not_answered(run_pipe, pipe_env, smtp_sink, website):
    config = pipe_env.variant(TOROKIKI_REPLY_SUBADDRESS="+")
    ours = mail("Re: hello", "A tram.\n", sender="gateway+image.1.response@torokiki.net", msgid="<sub-4@example.net>")
    assert run_pipe(ours, "--recipient", "gateway+image.1.response@torokiki.net", config=config).returncode == 0
    assert "outcome=ignored" in log_lines(pipe_env)[-1] and "own address" in log_lines(pipe_env)[-1]
    assert smtp_sink.messages == [] and website.stats()["items"] == []


def test_check_reminds_that_the_mta_must_deliver_sub_addresses(pipe_program, pipe_env, website):
    import os
    import subprocess

    config = pipe_env.variant(TOROKIKI_REPLY_SUBADDRESS="+")
    done = subprocess.run([pipe_program, "check", "--config", os.fspath(config)], capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert ("note: replies about content say Reply-To: gateway+image.1.response@torokiki.net; the MTA must "
            "deliver such sub-addresses to the pipe (Postfix: recipient_delimiter = +)") in done.stdout
