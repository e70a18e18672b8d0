"""Who really sent it: the receiving MTA's DMARC/DKIM verdict (stages/s3_auth.py, issue 16).

The header shapes are those OpenDKIM, OpenDMARC, rspamd, Gmail and Microsoft
365 write (folded, with comments, several methods, several headers), and RFC
8601's own examples.  Through the installed pipe against the reference
website: what was stored, what was answered, what was kept in logs/held/.
"""

from __future__ import annotations

import json
import os
import random
import re
import time

import pytest

from torokiki_pipe.config import ConfigError, _build
from torokiki_pipe.stages.s2_headers import read_head
from torokiki_pipe.stages.s3_auth import (AUTHENTICATED, FORGED, UNKNOWN, Held, Verdict, domain_of, held, parse,
                                          verdict)

from helpers import (API_KEY, GATEWAY, SEED, deliver_until_handled, files_in, finish, log_lines, mail,
                     one_status_line, start)

ID = "mx.torokiki.net"

# --------------------------------------------------------------------------- real shapes
# OpenDKIM's and OpenDMARC's as Debian 12's opendkim 2.11 and opendmarc 1.4.2 write them behind
# Postfix (tests/test_milters.py runs them), with example.net for the test's sender.test.

OPENDKIM_PASS = (f"Authentication-Results: {ID};\n"
                 "\tdkim=pass (2048-bit key) header.d=example.net header.i=@example.net header.a=rsa-sha256"
                 " header.s=sel header.b=IUucQQsA;\n"
                 "\tdkim-atps=neutral")
# OpenDKIM writes nothing for an unsigned mail; other checkers write dkim=none.
DKIM_NONE = f"Authentication-Results: {ID}; dkim=none"
OPENDMARC_PASS = f"Authentication-Results: {ID}; dmarc=pass (p=reject dis=none) header.from=example.net"
OPENDMARC_FAIL = f"Authentication-Results: {ID}; dmarc=fail (p=reject dis=none) header.from=example.net"
OPENDMARC_NONE = f"Authentication-Results: {ID}; dmarc=none (p=none dis=none) header.from=example.net"
OPENDMARC_SPF = f"Authentication-Results: {ID}; spf=fail smtp.mailfrom=example.net"
RSPAMD_PASS = (f"Authentication-Results: {ID};\n"
               "\tdkim=pass header.d=example.net header.s=dkim header.b=hUmQCXDp;\n"
               "\tdmarc=pass (policy=reject) header.from=example.net;\n"
               f"\tspf=pass ({ID}: domain of \"kiri@example.net\" designates 192.0.2.10 as permitted sender)"
               " smtp.mailfrom=\"kiri@example.net\"")
RSPAMD_FAIL = (f"Authentication-Results: {ID};\n"
               "\tdkim=none;\n"
               "\tdmarc=fail reason=\"No valid SPF, No valid DKIM\" header.from=example.net (policy=reject);\n"
               f"\tspf=fail ({ID}: domain of \"kiri@example.net\" does not designate 203.0.113.9 as permitted"
               " sender) smtp.mailfrom=\"kiri@example.net\"")
GMAIL_PASS = ("Authentication-Results: mx.google.com;\n"
              "       dkim=pass header.i=@example.net header.s=20230601 header.b=kR5f8mXo;\n"
              "       spf=pass (google.com: domain of kiri@example.net designates 209.85.220.41 as permitted"
              " sender) smtp.mailfrom=kiri@example.net;\n"
              "       dmarc=pass (p=NONE sp=NONE dis=NONE) header.from=example.net")
MICROSOFT_PASS = ("Authentication-Results: spf=pass (sender IP is 209.85.221.44)\n"
                  " smtp.mailfrom=example.net; dkim=pass (signature was verified)\n"
                  " header.d=example.net;dmarc=pass action=none header.from=example.net;compauth=pass\n"
                  " reason=100")
# A sender may write any header, our id included: an MTA that strips it never lets it reach us,
# but one that does not must still not let it hide the MTA's own fail.
SENDER_CLAIMS_PASS = f"Authentication-Results: {ID}; dmarc=pass header.from=example.net; dkim=pass header.d=example.net"


def head_of(*headers: str, sender: str = "Kiri Tane <kiri@example.net>"):
    return read_head(mail("help", "", *headers, sender=sender))


def judged(*headers: str, sender: str = "kiri@example.net", ids=(ID,)) -> Verdict:
    return verdict(head_of(*headers).auth_results, domain_of(sender), ids)


@pytest.mark.parametrize("headers, kind", [
    ((OPENDKIM_PASS, OPENDMARC_PASS), AUTHENTICATED),
    ((DKIM_NONE, OPENDMARC_FAIL), FORGED),
    ((OPENDMARC_NONE, OPENDKIM_PASS), AUTHENTICATED),     # no DMARC policy: the From's own signature proves it
    ((OPENDMARC_NONE, DKIM_NONE), UNKNOWN),
    ((OPENDKIM_PASS,), AUTHENTICATED),                    # OpenDKIM alone, aligned
    ((OPENDMARC_SPF,), UNKNOWN),                          # SPF alone says nothing of the From
    ((RSPAMD_PASS,), AUTHENTICATED),
    ((RSPAMD_FAIL,), FORGED),
    # The MTA prepends its header: the sender's copy sits below it, and loses.
    ((RSPAMD_FAIL, SENDER_CLAIMS_PASS), FORGED),
    ((SENDER_CLAIMS_PASS, OPENDMARC_FAIL), FORGED),
    ((GMAIL_PASS,), UNKNOWN),                             # another id's pass is anyone's word
    ((MICROSOFT_PASS,), UNKNOWN),                         # Microsoft 365 writes no authserv-id at all
    ((), UNKNOWN),
])
def test_the_verdict_of_real_header_shapes(headers, kind):
    assert judged(*headers).kind == kind


def test_each_verdict_says_what_decided_and_by_whom():
    assert judged(DKIM_NONE, OPENDMARC_FAIL).reason == \
        f"dmarc=fail (p=reject dis=none) header.from=example.net by {ID}"
    assert judged(OPENDKIM_PASS).reason.startswith("dkim=pass (2048-bit key) header.d=example.net")
    assert judged(GMAIL_PASS).reason == f"no Authentication-Results by {ID}"
    assert judged(OPENDMARC_SPF).reason == f"no dmarc or dkim result by {ID}"


def test_the_trusted_id_is_the_configured_one_whatever_its_case_or_job_id():
    header = "Authentication-Results: MX.Torokiki.NET/4ZK2p1Hq7z; dmarc=fail header.from=example.net"
    assert judged(header).kind == FORGED
    assert judged(header, ids=("mx2.torokiki.net", "mx.torokiki.net")).kind == FORGED
    assert judged(header, ids=("torokiki.net",)).kind == UNKNOWN           # no suffix match
    assert judged(f"Authentication-Results: evil.{ID}; dmarc=fail").kind == UNKNOWN


@pytest.mark.parametrize("sender, kind", [
    ("kiri@example.net", AUTHENTICATED),
    ("kiri@mail.example.net", AUTHENTICATED),      # signed by the parent domain
    ("kiri@EXAMPLE.NET", AUTHENTICATED),
    ("kiri@example.org", UNKNOWN),                 # an ESP's or a list's signature is not the From's
    ("kiri@notexample.net", UNKNOWN),
])
def test_dkim_counts_only_for_the_from_domain_or_under_it(sender, kind):
    assert judged(OPENDKIM_PASS, sender=sender).kind == kind


def test_a_dkim_signature_by_a_subdomain_or_a_bare_top_level_name_does_not_count():
    sub = f"Authentication-Results: {ID}; dkim=pass header.d=mail.example.net"
    tld = f"Authentication-Results: {ID}; dkim=pass header.d=net"
    assert judged(sub).kind == UNKNOWN and judged(tld).kind == UNKNOWN


def test_dmarc_pass_for_another_from_domain_does_not_count():
    other = f"Authentication-Results: {ID}; dmarc=pass header.from=example.org"
    assert judged(other).kind == UNKNOWN
    assert judged(f"Authentication-Results: {ID}; dmarc=fail header.from=example.org").kind == FORGED


@pytest.mark.parametrize("result", ["none", "temperror", "permerror", "neutral", "policy"])
def test_dmarc_results_other_than_pass_and_fail_prove_nothing(result):
    assert judged(f"Authentication-Results: {ID}; dmarc={result} header.from=example.net").kind == UNKNOWN


# --------------------------------------------------------------------------- RFC 8601's grammar

def test_rfc_8601_appendix_b_examples():
    assert parse("example.org 1; none") == ("example.org", ())
    [spf] = parse("example.com; spf=pass smtp.mailfrom=example.net").results
    assert (spf.method, spf.result, spf.get("smtp.mailfrom")) == ("spf", "pass", "example.net")
    auth, spf = parse("example.com;\n  auth=pass (cram-md5) smtp.auth=sender@example.net;\n"
                      "  spf=pass smtp.mailfrom=example.net").results
    assert auth.comment == "cram-md5" and auth.get("smtp.auth") == "sender@example.net"
    passed, failed = parse('example.com;\n  dkim=pass reason="good signature"\n    header.i=@mail-router.example.net;\n'
                           '  dkim=fail reason="bad signature"\n    header.i=@newyork.example.com').results
    assert passed.reason == "good signature" and failed.get("header.i") == "@newyork.example.com"


def test_comments_quoted_strings_and_white_space_anywhere():
    parsed = parse('"mx.torokiki.net" (our (nested) id) 1 ; dmarc (a) = (b) fail (p=reject) '
                   'header (c) . (d) from = example.net ; dkim/1=pass header.b="a;b(c)d"; dkim=neutral')
    assert parsed.authserv_id == "mx.torokiki.net"
    dmarc, dkim, neutral = parsed.results
    assert (dmarc.method, dmarc.result, dmarc.get("header.from")) == ("dmarc", "fail", "example.net")
    assert "p=reject" in dmarc.comment
    assert dkim.get("header.b") == "a;b(c)d" and neutral.result == "neutral"


@pytest.mark.parametrize("value", ["", " ", ";", "(((", ")))", '"', "=;=;=", "a;;;;", "a; =pass",
                                   "a; dkim", "a; dkim=", "a; dkim=pass header.", "a; dkim=pass (unclosed",
                                   "\x00\x01", "a; dkim=pass header.d=\"unclosed", "a/b/c; x=y"])
def test_broken_values_never_raise(value):
    parse(value)
    verdict([value], "example.net", ("a",))


def test_many_headers_or_a_long_one_cost_little():
    padding = f"Authentication-Results: {ID}; " + "dkim=pass (" + "(" * 50_000 + ")" * 50_000 + ");" * 10
    many = [f"Authentication-Results: host{n}.example; dmarc=pass" for n in range(2000)]
    head = head_of(*many, padding, OPENDMARC_FAIL)
    # The MTA's header is among the first; past the bounds the rest is a sender's padding.
    assert verdict(head.auth_results, "example.net", (ID,)).kind == UNKNOWN
    assert judged(OPENDMARC_FAIL, *many).kind == FORGED


# --------------------------------------------------------------------------- what a verdict means

def test_what_each_verdict_means_for_the_mail():
    forged, unknown, good = Verdict(FORGED, "f"), Verdict(UNKNOWN, "u"), Verdict(AUTHENTICATED, "a")
    assert held(forged, "off", False) == Held(forged=True)
    assert held(unknown, "off", False) == Held()
    assert held(unknown, "create", False) == Held(unproven="u")
    assert held(good, "create", False) == Held()
    assert held(forged, "create", True).note.startswith("submitted although forged (replay --force)")


def config_with(**values):
    base = {"TOROKIKI_API_KEY": API_KEY, "TOROKIKI_GATEWAY_ADDRESS": GATEWAY}
    return _build({**base, **values}, None)


def test_the_settings():
    assert config_with().authserv_ids == () and config_with().require_auth == "off"
    assert config_with(TOROKIKI_AUTHSERV_ID="MX.Torokiki.net, mx2.torokiki.net").authserv_ids == \
        ("mx.torokiki.net", "mx2.torokiki.net")
    assert config_with(TOROKIKI_AUTHSERV_ID=ID, TOROKIKI_REQUIRE_AUTH="Create").require_auth == "create"
    with pytest.raises(ConfigError, match="TOROKIKI_AUTHSERV_ID is not set"):
        config_with(TOROKIKI_REQUIRE_AUTH="create")
    with pytest.raises(ConfigError, match="must be off or create"):
        config_with(TOROKIKI_AUTHSERV_ID=ID, TOROKIKI_REQUIRE_AUTH="all")
    for bad in ("mx torokiki", "mx;x", "@mx", "mx.torokiki.net;", ","):
        with pytest.raises(ConfigError, match="TOROKIKI_AUTHSERV_ID"):
            config_with(TOROKIKI_AUTHSERV_ID=bad)


# --------------------------------------------------------------------------- through the installed pipe

CREATE = f"create-response-to: '{SEED}'"


def held_mails(pipe_env) -> list:
    return [p for p in files_in(pipe_env.log_dir / "held") if p.name.endswith(".eml")]


@pytest.fixture
def checked(pipe_env):
    """An env file that trusts the MTA's Authentication-Results by mx.torokiki.net."""
    return pipe_env.variant("checked.env", TOROKIKI_AUTHSERV_ID=ID)


@pytest.mark.parametrize("headers", [(DKIM_NONE, OPENDMARC_FAIL), (RSPAMD_FAIL, SENDER_CLAIMS_PASS)])
def test_forged_mail_is_held_not_posted_nor_answered(run_pipe, pipe_env, checked, website, smtp_sink, headers):
    done = run_pipe(mail(CREATE, "text: 'I am Kiri, honest'", *headers, msgid="<forged@example.net>"),
                    config=checked)
    assert done.returncode == 0 and done.stderr == b""
    assert website.stats()["posts"] == 0 and smtp_sink.messages == []
    [kept] = held_mails(pipe_env)
    assert b"I am Kiri, honest" in kept.read_bytes()
    line = log_lines(pipe_env)[-1]
    assert "outcome=forged" in line and "auth=forged" in line and "dmarc=fail" in line and "held/" in line


def test_a_forged_help_is_not_answered_either(run_pipe, pipe_env, checked, website, smtp_sink):
    assert run_pipe(mail("help", "", OPENDMARC_FAIL), config=checked).returncode == 0
    assert smtp_sink.messages == [] and len(held_mails(pipe_env)) == 1


@pytest.mark.parametrize("headers, auth", [
    ((OPENDKIM_PASS, OPENDMARC_PASS), AUTHENTICATED),
    ((RSPAMD_PASS,), AUTHENTICATED),
    ((GMAIL_PASS,), UNKNOWN),
    ((MICROSOFT_PASS,), UNKNOWN),
    ((), UNKNOWN),
])
def test_authenticated_and_unknown_mail_is_saved_when_nothing_more_is_required(run_pipe, pipe_env, checked,
                                                                              website, smtp_sink, headers, auth):
    assert run_pipe(mail(CREATE, "text: 'A tram'", *headers), config=checked).returncode == 0
    [item] = website.stats()["items"]
    assert item["content"]["Submitter"] == "Kiri Tane <kiri@example.net>"
    assert smtp_sink.wait_for(1)[0].message()["Subject"].startswith("Saved:")
    assert f"auth={auth}" in log_lines(pipe_env)[-1] and held_mails(pipe_env) == []


def test_off_by_default_the_header_is_not_read(run_pipe, pipe_env, website, smtp_sink):
    assert run_pipe(mail(CREATE, "text: 'A tram'", OPENDMARC_FAIL)).returncode == 0
    assert website.stats()["stored"] == 1
    assert "auth=- " in log_lines(pipe_env)[-1]


@pytest.fixture
def strict(pipe_env):
    return pipe_env.variant("strict.env", TOROKIKI_AUTHSERV_ID=ID, TOROKIKI_REQUIRE_AUTH="create")


def test_required_an_unknown_senders_response_is_held_and_answered_once(run_pipe, pipe_env, strict, website,
                                                                        smtp_sink):
    unknown = mail(CREATE, "text: 'A tram'", GMAIL_PASS, msgid="<unknown@example.net>")
    assert run_pipe(unknown, config=strict).returncode == 0
    assert website.stats()["posts"] == 0 and len(held_mails(pipe_env)) == 1
    [note] = smtp_sink.wait_for(1)
    message = note.message()
    assert message["Subject"] == f"Not yet saved: {CREATE}" and message["To"] == "Kiri Tane <kiri@example.net>"
    words = " ".join(message.get_body(("plain",)).get_content().split())
    assert "could not confirm that it really comes from your address, so your response was not published" in words
    line = log_lines(pipe_env)[-1]
    assert "outcome=unverified" in line and "auth=unknown" in line
    # Delivered again (an MTA retry): nothing more is sent or kept.
    assert run_pipe(unknown, config=strict).returncode == 0
    assert "outcome=duplicate" in log_lines(pipe_env)[-1]
    assert len(smtp_sink.messages) == 1 and len(held_mails(pipe_env)) == 1


def test_required_a_response_made_by_replying_is_held_too(run_pipe, pipe_env, strict, website, smtp_sink):
    assert run_pipe(mail(f"get: '{SEED}'", msgid="<get-a@example.net>"), config=strict).returncode == 0
    [content] = smtp_sink.wait_for(1)
    ours = content.message()["Message-ID"]
    reply = mail(f"Re: {content.message()['Subject']}", "A tram on Lambton Quay.\n", f"In-Reply-To: {ours}",
                 msgid="<reply-a@example.net>")
    assert run_pipe(reply, config=strict).returncode == 0
    assert website.stats()["posts"] == 0 and len(held_mails(pipe_env)) == 1
    assert smtp_sink.wait_for(2)[1].message()["Subject"].startswith("Not yet saved:")
    assert "command=create-response-to" in log_lines(pipe_env)[-1]


def test_required_help_and_get_stay_open_and_a_proven_sender_is_saved(run_pipe, pipe_env, strict, website,
                                                                      smtp_sink):
    assert run_pipe(mail("help", msgid="<h@example.net>"), config=strict).returncode == 0
    assert run_pipe(mail(f"get: '{SEED}'", msgid="<g@example.net>"), config=strict).returncode == 0
    assert run_pipe(mail(CREATE, "text: 'A tram'", OPENDKIM_PASS, OPENDMARC_PASS, msgid="<c@example.net>"),
                    config=strict).returncode == 0
    subjects = [m.message()["Subject"] for m in smtp_sink.wait_for(3)]
    assert subjects[2].startswith("Saved:") and website.stats()["stored"] == 1 and held_mails(pipe_env) == []


def test_a_held_mail_is_replayed_only_with_force_then_saved_and_answered(admin, run_pipe, pipe_env,
                                                                         checked, website, smtp_sink):
    assert run_pipe(mail(CREATE, "text: 'really me'", OPENDMARC_FAIL, msgid="<f2@example.net>"),
                    config=checked).returncode == 0
    [kept] = held_mails(pipe_env)

    def replay(*args):
        return admin("replay", checked, *args)

    for target in (kept.parent, kept):
        plain = replay(target)
        assert plain.returncode == os.EX_USAGE and "replay --force" in plain.stderr
        assert kept.exists() and website.stats()["posts"] == 0
    forced = replay("--force", kept)
    assert forced.returncode == 0 and "outcome=saved" in forced.stdout, forced.stdout + forced.stderr
    assert website.stats()["stored"] == 1 and not kept.exists() and (kept.parent / "done" / kept.name).exists()
    assert smtp_sink.wait_for(1)[0].message()["Subject"].startswith("Saved:")
    line = log_lines(pipe_env)[-1]
    assert "auth=forged" in line and "submitted although forged (replay --force)" in line


def test_report_counts_the_verdicts_and_lists_the_held(admin, run_pipe, pipe_env, strict, website, smtp_sink):
    run_pipe(mail(CREATE, "text: 'a'", OPENDMARC_FAIL, msgid="<r1@example.net>"), config=strict)
    run_pipe(mail(CREATE, "text: 'b'", msgid="<r2@example.net>"), config=strict)
    run_pipe(mail(CREATE, "text: 'c'", OPENDMARC_PASS, msgid="<r3@example.net>"), config=strict)
    run_pipe(mail(CREATE, "text: 'd'", msgid="<r4@example.net>"))      # not checked
    report = json.loads(admin("report", pipe_env, "--json").stdout)
    assert report["verdicts"] == {"authenticated": 1, "forged": 1, "not checked": 1, "unknown": 1}
    assert report["outcomes"] == {"forged": 1, "saved": 2, "unverified": 1}
    assert report["stash"]["held"]["waiting"] == 2
    assert {row["outcome"] for row in report["last_errors"]} == {"forged", "unverified"}
    text = admin("report", pipe_env).stdout
    assert "By verdict on the From" in text and "held" in text


def test_a_wrong_setting_keeps_the_mail_queued_with_one_line(run_pipe, pipe_env):
    done = run_pipe(mail("help"), config=pipe_env.variant("bad.env", TOROKIKI_REQUIRE_AUTH="create"))
    assert done.returncode == os.EX_TEMPFAIL
    [line] = done.stderr.decode().splitlines()
    assert line.startswith("4.3.5 config-error: TOROKIKI_REQUIRE_AUTH is create, but TOROKIKI_AUTHSERV_ID")


# --------------------------------------------------------------------------- attacks: races and kills

def test_racing_deliveries_of_a_forged_mail_keep_it_once_and_answer_nothing(pipe_program, pipe_env, checked,
                                                                             website, smtp_sink):
    data = mail(CREATE, "text: 'x'", OPENDMARC_FAIL, msgid="<race-f@example.net>")
    results = [finish(child) for child in [start(pipe_program, checked, data) for _ in range(4)]]
    assert [r.returncode for r in results] == [0] * 4 and all(r.stderr == b"" for r in results)
    assert len(held_mails(pipe_env)) == 1 and website.stats()["posts"] == 0 and smtp_sink.messages == []
    assert [line.count("outcome=forged") for line in log_lines(pipe_env)] == [1] * 4


def test_racing_deliveries_of_an_unverified_response_answer_once(pipe_program, run_pipe, pipe_env, strict,
                                                                 website, smtp_sink):
    data = mail(CREATE, "text: 'x'", msgid="<race-u@example.net>")
    results = [finish(child) for child in [start(pipe_program, strict, data) for _ in range(4)]]
    for done in results:
        one_status_line(done)
    for done in results:
        if done.returncode:            # "busy": the MTA delivers it again later
            deliver_until_handled(run_pipe, data, strict)
    assert len(held_mails(pipe_env)) == 1 and website.stats()["posts"] == 0
    assert len(smtp_sink.wait_for(1)) == 1
    outcomes = sorted(re.search(r"outcome=(\S+)", line)[1] for line in log_lines(pipe_env))
    assert outcomes.count("unverified") == 1 and set(outcomes) <= {"unverified", "duplicate", "busy"}


def test_killed_at_random_moments_an_unverified_response_is_held_once_and_answered_alike(
        pipe_program, run_pipe, pipe_env, strict, website, smtp_sink):
    rng = random.Random(16)
    sent = {}
    for n in range(6):
        data = mail(CREATE, f"text: 'kill {n}'", GMAIL_PASS, msgid=f"<kill{n}@example.net>")
        sent[f"<kill{n}@example.net>"] = data
        child = start(pipe_program, strict, data)
        time.sleep(rng.uniform(0.02, 0.6))
        child.kill()
        child.wait(30)
        deliver_until_handled(run_pipe, data, strict, attempts=8)
    time.sleep(1.5)                   # an msmtp that outlived a killed pipe finishes its delivery
    assert website.stats()["posts"] == 0
    assert len(held_mails(pipe_env)) == len(sent)
    answers: dict = {}
    for received in smtp_sink.messages:
        answers.setdefault(str(received.message()["In-Reply-To"]), set()).add(received.data)
    assert set(answers) == set(sent) and all(len(bodies) == 1 for bodies in answers.values())



def test_a_pass_the_sender_wrote_below_the_mtas_result_does_not_count():
    # What Debian's OpenDKIM and OpenDMARC let through (tests/test_milters.py): a sender's header
    # claiming our id and dmarc=pass, below the MTA's own; OpenDMARC strips none of them.
    sender_dmarc = f"Authentication-Results: {ID}; dmarc=pass header.from=example.net"
    sender_dkim = f"Authentication-Results: {ID}; dkim=pass header.d=example.net"
    assert judged(OPENDMARC_NONE, sender_dmarc).kind == UNKNOWN
    assert judged(OPENDMARC_NONE, DKIM_NONE, sender_dmarc, sender_dkim).kind == UNKNOWN
    assert judged(DKIM_NONE, sender_dkim).kind == UNKNOWN
    # Where the MTA writes no DMARC result at all, the topmost one is the sender's: check warns.
    assert judged(DKIM_NONE, sender_dmarc).kind == AUTHENTICATED


def test_an_unverified_response_replayed_with_force_is_saved_and_answered(admin, run_pipe, pipe_env, strict,
                                                                          website, smtp_sink):
    assert run_pipe(mail(CREATE, "text: 'me'", msgid="<u-force@example.net>"), config=strict).returncode == 0
    [kept] = held_mails(pipe_env)
    forced = admin("replay", strict, "--force", kept)
    assert forced.returncode == 0 and "outcome=saved" in forced.stdout, forced.stdout + forced.stderr
    assert website.stats()["stored"] == 1
    assert [m.message()["Subject"].split(":")[0] for m in smtp_sink.wait_for(2)] == ["Not yet saved", "Saved"]
    assert "submitted although unknown (replay --force)" in log_lines(pipe_env)[-1]
