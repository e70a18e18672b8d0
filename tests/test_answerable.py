"""Nobody left without an answer who can be answered (issue 14, section 4).

- A From header whose display name is unsafe (an encoded line break, an
  unquoted @, control characters) but whose address is one well-formed
  address: the address is answered, the name dropped, and the log says so.
  Only an absent, ambiguous (several addresses, a group) or malformed address
  stays unanswered; the reply never gains a header or a recipient.
- An internationalised address (SMTPUTF8) is answered, with UTF-8 headers,
  when the sendmail command can carry it (TOROKIKI_SMTPUTF8, or Postfix's
  sendmail with smtputf8_enable = yes); otherwise it stays unanswered and the
  log says why.  msmtp cannot (it never asks for SMTPUTF8).
- A problem list says each line once.
"""

from __future__ import annotations

import email
import email.policy
import re
import shutil
from datetime import datetime, timezone
from pathlib import Path

import pytest

from torokiki_pipe.adapters.sendmail import Sendmail, detect_smtputf8
from torokiki_pipe.config import Config
from torokiki_pipe.outcome import Outcome
from torokiki_pipe.pipeline import Envelope, process
from torokiki_pipe.stages.s1_read import RawMail
from torokiki_pipe.stages.s2_headers import read_head
from torokiki_pipe.stages.s3_guard import Sender, reason_to_ignore, reply_sender
from torokiki_pipe.stages.s5_understand.command import Problem
from torokiki_pipe.stages.s7_reply import Reply, ReplyContext, build, problems_text

from fakes import FakeMailer, Fakes
from helpers import GATEWAY, SITE_URL, log_lines, mail

NOW = datetime(2024, 5, 14, 8, 12, tzinfo=timezone.utc)
CONFIG = Config(site_url=SITE_URL, api_url="http://127.0.0.1:9", api_key="test-api-key",
                gateway_address=GATEWAY, sendmail=("/usr/sbin/sendmail",), log_dir=Path("/nonexistent"),
                http_timeout=5, max_message_bytes=1024 * 1024)
IDN = "jdöe@mächine.example"


# --------------------------------------------------------------------------- the address, not the name

@pytest.mark.parametrize("from_header, why", [
    ("=?utf-8?q?Kiri=0ABcc:_victim@example.org?= <kiri@example.net>", "an encoded line break in it"),
    ("=?utf-8?q?Kiri=0D=0ABcc:_victim@example.org?= <kiri@example.net>", "an encoded line break in it"),
    ("kiri@home <kiri@example.net>", "an unquoted @ in it"),
    ("kiri@example.net <kiri@example.net>", "an unquoted @ in it"),
    ("Kiri\x00 Tane <kiri@example.net>", "control characters in it"),
    ("Kiri\x1b[2J Tane <kiri@example.net>", "control characters in it"),
    ("\u202eKiri <kiri@example.net>", "control characters in it"),
    ('"kiri@home" <kiri@example.net>', "an @ in it"),
    ("=?utf-8?q?evil@attacker.example,_?= <kiri@example.net>", "an @ in it"),
])
def test_an_unsafe_display_name_is_dropped_and_the_address_answered(from_header, why):
    assert reply_sender(from_header) == Sender("", "kiri@example.net", f"display name dropped ({why})")


def test_a_safe_display_name_is_kept_without_a_note():
    assert reply_sender('"Tane, Kiri" <kiri@example.net>') == Sender("Tane, Kiri", "kiri@example.net", "")
    assert reply_sender("Kiri. Tane <kiri@example.net>").display_name == "Kiri. Tane"   # obsolete, harmless


@pytest.mark.parametrize("from_header", [
    "",                                                         # absent
    "   ",
    "Kiri Tane",                                                # no address
    "a@example.net, b@example.net",                             # several
    "Kiri, Tane <kiri@example.net>",                            # several, or a name: a guess
    "<a@example.net> <b@example.net>",
    "=?utf-8?q?x=0A?= <a@example.net>, b@example.net",
    "=?utf-8?q?x=0A?= <a@example.net> <b@example.net>",
    "undisclosed: kiri@example.net;",                           # group syntax
    "Kiri Bcc: victim@example.org <kiri@example.net>",
    "Kiri; Tane <kiri@example.net>",
    "Kiri (home <kiri@example.net>",                            # malformed
    "Kiri Tane <kiri@example.net",
    "Kiri <kiri@@example.net>",
    "Kiri <ki\x00ri@example.net>",
    "Kiri <-oQ/tmp/x@example.net>",
    "Kiri <kiri@example..net>",
    "Kiri <kiri@exa mple.net>",
    "kiri@example.net\nBcc: victim@example.org",
])
def test_an_absent_ambiguous_or_malformed_address_stays_unanswered(from_header):
    assert isinstance(reply_sender(from_header), str)


def _reply(sender: Sender, **context) -> bytes:
    values = dict(to=sender, gateway_address=GATEWAY, site_url=SITE_URL, message_id="<m1@example.net>",
                  references="", original_subject="help", now=NOW)
    return build(Reply("help.txt", html_template="help.html"), ReplyContext(**{**values, **context}))


@pytest.mark.parametrize("from_header", [
    "=?utf-8?q?Kiri=0D=0ABcc:_victim@example.org?= <kiri@example.net>",
    "Kiri\x00 Tane <kiri@example.net>",
    "evil@attacker.example <kiri@example.net>",
])
def test_the_reply_goes_to_the_address_alone_and_gains_no_header(from_header):
    data = _reply(reply_sender(from_header))
    head = data.split(b"\n\n", 1)[0]
    assert b"\r" not in head and b"victim" not in data and b"attacker" not in data
    assert not re.search(rb"[\x00-\x08\x0b-\x1f\x7f]", head)
    reply = email.message_from_bytes(data, policy=email.policy.default)
    assert str(reply["To"]) == "kiri@example.net" and reply.get_all("Bcc") is None and reply.get_all("Cc") is None


def test_the_loop_guard_reads_the_address_as_the_reply_would():
    # Mail from our own address is ours, however its name is spoiled.
    spoiled = read_head(mail("help", sender="=?utf-8?q?x=0D=0A?= <Gateway@torokiki.net>"))
    assert "own address" in reason_to_ignore(spoiled, None, GATEWAY)
    spoiled = read_head(mail("help", sender="evil@attacker.example <mailer-daemon@example.net>"))
    assert "mail system" in reason_to_ignore(spoiled, None, GATEWAY)


def test_the_log_says_the_name_was_dropped():
    fakes = Fakes()
    done = process(RawMail(mail("help", sender="kiri@home <kiri@example.net>"), False), Envelope(), CONFIG, fakes.effects())
    assert done.outcome is Outcome.ANSWERED and done.detail.endswith("; display name dropped (an unquoted @ in it)")
    [sent] = fakes.mailer.sent
    assert sent.recipient == "kiri@example.net"


# --------------------------------------------------------------------------- SMTPUTF8

def test_an_internationalised_address_needs_a_mailer_that_carries_it():
    refused = reply_sender(f"Jöhn <{IDN}>")
    assert isinstance(refused, str) and "SMTPUTF8" in refused
    assert reply_sender(f"Jöhn <{IDN}>", smtputf8=True) == Sender("Jöhn", IDN)
    for malformed in ("jdöe@mä chine.example", "jd\u200böe@mächine.example", "jdöe@-mächine.example"):
        assert isinstance(reply_sender(malformed, smtputf8=True), str), malformed


@pytest.mark.parametrize("from_header, sent_to", [
    ("kiri@mächine.example", "kiri@xn--mchine-bua.example"),
    ("Kiri <kiri@MÄCHINE.example>", "kiri@xn--mchine-bua.example"),
    ("kiri@xn--mchine-bua.example", "kiri@xn--mchine-bua.example"),
])
def test_an_ascii_local_part_at_an_international_domain_needs_no_smtputf8(from_header, sent_to):
    assert reply_sender(from_header).address == sent_to


def test_a_domain_idna_2003_would_change_is_not_rewritten():
    # Python's codec maps faß.de to fass.de: another domain under IDNA 2008.
    assert "SMTPUTF8" in reply_sender("kiri@faß.de")
    assert reply_sender("kiri@faß.de", smtputf8=True).address == "kiri@faß.de"


def test_the_reply_to_an_internationalised_address_has_utf8_headers():
    data = _reply(Sender("Jöhn", IDN))
    head = data.split(b"\n\n", 1)[0].decode("utf-8")
    assert f"To: Jöhn <{IDN}>" in head.splitlines()
    assert "=?" not in head.partition("\nTo:")[2].splitlines()[0]
    reply = email.message_from_string(data.decode("utf-8"), policy=email.policy.default)  # RFC 6532: UTF-8
    assert [a.addr_spec for a in reply["To"].addresses] == [IDN]
    assert _reply(Sender("Kiri", "kiri@example.net")).isascii()     # ASCII replies stay 7-bit headers


@pytest.mark.parametrize("carries, outcome", [(True, Outcome.ANSWERED), (False, Outcome.UNANSWERABLE)])
def test_the_pipeline_asks_the_mailer_about_smtputf8(carries, outcome):
    fakes = Fakes(mailer=FakeMailer(smtputf8=carries))
    done = process(RawMail(mail("help", sender=f"Jöhn <{IDN}>"), False), Envelope(), CONFIG, fakes.effects())
    assert done.outcome is outcome
    if carries:
        assert [a.recipient for a in fakes.mailer.sent] == [IDN]
    else:
        assert "SMTPUTF8" in done.detail and "the fake mailer's setting" in done.detail
        assert fakes.mailer.attempts == []


def test_without_smtputf8_an_international_domain_is_answered_at_its_a_label():
    fakes = Fakes(mailer=FakeMailer(smtputf8=False))
    done = process(RawMail(mail("help", sender="Kiri <kiri@mächine.example>"), False), Envelope(), CONFIG,
                   fakes.effects())
    assert done.outcome is Outcome.ANSWERED
    [sent] = fakes.mailer.sent
    assert sent.recipient == "kiri@xn--mchine-bua.example" and sent.message.isascii()
    fakes = Fakes(mailer=FakeMailer(smtputf8=True))
    process(RawMail(mail("help", sender="Kiri <kiri@mächine.example>"), False), Envelope(), CONFIG, fakes.effects())
    assert [a.recipient for a in fakes.mailer.sent] == ["kiri@mächine.example"]


def test_the_setting_decides_when_it_says_yes_or_no():
    assert Sendmail(("/usr/sbin/sendmail",), smtputf8="yes").smtputf8() == (True, "TOROKIKI_SMTPUTF8=yes")
    assert Sendmail(("/usr/sbin/sendmail",), smtputf8="no").smtputf8() == (False, "TOROKIKI_SMTPUTF8=no")


def test_msmtp_is_known_not_to_ask_for_smtputf8():
    carries, why = detect_smtputf8(("/usr/bin/msmtp", "-C", "/dev/null"))
    assert not carries and "msmtp sends no SMTPUTF8 request" in why


@pytest.mark.integration    # runs postconf
@pytest.mark.skipif(shutil.which("postconf", path="/usr/sbin:/usr/bin") is None, reason="no Postfix")
def test_postfix_sendmail_carries_it_when_postconf_says_smtputf8_enable(tmp_path):
    carries, why = detect_smtputf8(("/usr/sbin/sendmail", "-i"))
    assert why.startswith("Postfix's sendmail, smtputf8_enable = ") and carries == why.endswith("= yes")
    (tmp_path / "main.cf").write_text("smtputf8_enable = no\n")
    assert detect_smtputf8(("/usr/sbin/sendmail", "-C", str(tmp_path), "-i")) == (
        False, "Postfix's sendmail, smtputf8_enable = no")
    carries, why = detect_smtputf8(("/bin/cat",))
    assert not carries and "not Postfix's sendmail" in why


# --------------------------------------------------------------------------- through the installed pipe

def test_an_encoded_line_break_in_the_name_is_answered_without_it(run_pipe, pipe_env, smtp_sink, website):
    sender = "=?utf-8?q?Kiri=0D=0ABcc:_victim@example.org?= <kiri@example.net>"
    assert run_pipe(mail("help", sender=sender)).returncode == 0
    [received] = smtp_sink.wait_for(1)
    assert received.rcpt_tos == ("kiri@example.net",) and b"victim" not in received.data
    assert received.message()["To"] == "kiri@example.net"
    [line] = log_lines(pipe_env)
    assert "outcome=answered" in line and "display name dropped (an encoded line break in it)" in line


def test_msmtp_keeps_an_internationalised_address_unanswered_and_says_why(run_pipe, pipe_env, smtp_sink):
    assert run_pipe(mail("help", sender=f"Jöhn <{IDN}>")).returncode == 0
    [line] = log_lines(pipe_env)
    assert "outcome=unanswerable" in line and "SMTPUTF8" in line and "msmtp sends no SMTPUTF8 request" in line
    assert smtp_sink.messages == []


def test_smtputf8_yes_answers_an_internationalised_address(run_pipe, pipe_env, smtp_sink):
    # msmtp hands the UTF-8 address over as it is; the sink (aiosmtpd, SMTPUTF8 on) takes it.
    config = pipe_env.variant(TOROKIKI_SMTPUTF8="yes")
    assert run_pipe(mail("help", sender=f"Jöhn <{IDN}>"), config=config).returncode == 0
    [received] = smtp_sink.wait_for(1)
    assert received.rcpt_tos == (IDN,)
    assert f"To: Jöhn <{IDN}>".encode() in received.data
    reply = email.message_from_string(received.data.decode("utf-8"), policy=email.policy.default)
    assert [a.addr_spec for a in reply["To"].addresses] == [IDN]


def test_a_problem_list_says_each_line_once():
    text = problems_text([Problem("unknown tag 'colour'; the tags are: location, objective, tags, text", 3),
                          Problem("the subject is empty")])
    assert text.count("line 3") == 1 and "line 3 of your mail: unknown tag 'colour';" in text


def test_every_body_problem_names_its_line_once(run_pipe, pipe_env, smtp_sink, website):
    body = ("colour: 'red'\ntags: 'a' and more\ntext: 'a'\nTEXT: 'b'\nobjective:\n"
            "location: 'never closed\n")
    assert run_pipe(mail("create-response-to: 'http://torokiki.net/image/1/response'", body)).returncode == 0
    [received] = smtp_sink.wait_for(1)
    text = received.message().get_body(("plain",)).get_content()
    problems = [line for line in text.splitlines() if line.startswith("  * line ")]
    assert len(problems) >= 5, text
    for problem in problems:
        number = re.match(r"  \* line (\d+) of your mail: ", problem)[1]
        assert problem.count(f"line {number}") == 1, problem


def test_check_says_whether_the_sendmail_command_carries_smtputf8(pipe_program, pipe_env, website):
    import os
    import subprocess

    def check(config) -> str:
        done = subprocess.run([pipe_program, "check", "--config", os.fspath(config)], capture_output=True, text=True,
                              timeout=60, env={"PATH": "/usr/bin:/bin"})
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert ("note: internationalised (non-ASCII, SMTPUTF8) addresses are not answered: msmtp sends no SMTPUTF8"
            in check(pipe_env))
    assert ("ok: internationalised addresses (SMTPUTF8) are answered: TOROKIKI_SMTPUTF8=yes"
            in check(pipe_env.variant(TOROKIKI_SMTPUTF8="yes")))


@pytest.mark.integration    # msmtp into the standard-library sink
@pytest.mark.skipif(shutil.which("msmtp") is None, reason="msmtp is not installed")
def test_msmtp_passes_utf8_through_without_asking_for_smtputf8(tmp_path):
    # What TOROKIKI_SMTPUTF8=auto's "no" for msmtp rests on: offered SMTPUTF8, msmtp 1.8.23
    # still sends MAIL FROM without the parameter RFC 6531 asks for (and the raw UTF-8 RCPT).
    from torokiki_pipe.devtools import smtpsink

    sink = smtpsink.serve_in_thread()
    try:
        rc = tmp_path / "msmtprc"
        rc.write_text(f"account default\nhost 127.0.0.1\nport {sink.port}\nauth off\ntls off\n"
                      f"from {GATEWAY}\nsyslog off\nlogfile\ntimeout 15\n")
        rc.chmod(0o600)
        sent = Sendmail((shutil.which("msmtp"), "-C", str(rc))).send(_reply(Sender("Jöhn", IDN)), IDN)
        assert sent.sent, sent.detail
        [received] = sink.wait_for(1)
        assert received.rcpt_tos == (IDN,) and received.mail_from == "<>"
        assert received.smtputf8 is False
    finally:
        sink.shutdown()


@pytest.mark.integration    # a server thread
def test_the_sink_offers_smtputf8_and_says_who_asked_for_it():
    import smtplib

    from torokiki_pipe.devtools import smtpsink

    sink = smtpsink.serve_in_thread()
    try:
        with smtplib.SMTP("127.0.0.1", sink.port, timeout=10) as client:
            client.ehlo()
            assert client.has_extn("smtputf8")
            client.sendmail("<>", [IDN], f"To: {IDN}\r\n\r\nkia ora\r\n".encode(), mail_options=["SMTPUTF8"])
            client.sendmail("<>", ["kiri@example.net"], b"To: kiri@example.net\r\n\r\nkia ora\r\n")
        asked, plain = sink.wait_for(2)
        assert (asked.rcpt_tos, asked.smtputf8) == ((IDN,), True)
        assert (plain.rcpt_tos, plain.smtputf8) == (("kiri@example.net",), False)
    finally:
        sink.shutdown()


def test_a_kept_reply_to_an_internationalised_address_can_be_replayed():
    from torokiki_pipe.admin.replay import reply_recipient

    assert reply_recipient(_reply(Sender("Jöhn", IDN)), GATEWAY) == (IDN, "")
    assert reply_recipient(_reply(Sender("Kiri", "kiri@example.net")), GATEWAY) == ("kiri@example.net", "")
