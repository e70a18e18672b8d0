"""End to end: the installed torokiki-pipe, a real loopback website, real msmtp, a real SMTP sink."""
import base64
import os
import stat

import pytest

from helpers import GATEWAY, files_in, log_lines, mail

pytestmark = pytest.mark.integration  # the installed pipe, end to end


def test_help_by_subject(run_pipe, smtp_sink, pipe_env, website):
    done = run_pipe(mail("  HELP "))
    assert done.returncode == 0, done.stderr
    [received] = smtp_sink.wait_for(1)
    reply = received.message()
    assert list(received.rcpt_tos) == ["kiri@example.net"]
    assert reply["To"].addresses[0].addr_spec == "kiri@example.net"
    assert reply["From"].addresses[0].addr_spec == GATEWAY
    assert reply["Auto-Submitted"] == "auto-replied"
    assert reply["In-Reply-To"] == "<m1@example.net>"
    assert reply["Message-ID"] and reply["Date"]
    assert {p.get_content_type() for p in reply.walk()} >= {"text/plain", "text/html"}
    assert "create-response-to" in reply.get_body(("plain",)).get_content()
    assert website.stats()["posts"] == 0
    [line] = log_lines(pipe_env)
    assert "message-id=<m1@example.net>" in line and "outcome=answered" in line and "exit=0" in line


def test_help_in_the_body_of_a_mail_without_subject(run_pipe, smtp_sink):
    assert run_pipe(mail("", "help\n\nSent from my iPhone\n")).returncode == 0
    [received] = smtp_sink.wait_for(1)
    assert "create-response-to" in received.message().get_body(("plain",)).get_content()


def test_text_response_from_an_iphone(run_pipe, smtp_sink, website, example_mail):
    done = run_pipe(example_mail("03-text-response.eml"))
    assert done.returncode == 0, done.stderr
    [item] = website.stats()["items"]
    content = item["content"]
    assert content["InspiredBy"] == "http://torokiki.net/image/1/response"
    assert content["Text"].startswith("These routes are now plied")
    assert content["Tags"] == ["lambtonquay", "transport", "bus"]
    assert content["Location"] == "123 Lambton Quay"
    assert content["Submitter"] == "Kiri Tane <kiri@example.net>"
    assert "Attachment" not in content
    [received] = smtp_sink.wait_for(1)
    assert item["location"] in received.message().get_body(("plain",)).get_content()


def test_media_response_sends_the_one_attachment(run_pipe, smtp_sink, website):
    picture = bytes(range(256)) * 40
    body = ("--b\nContent-Type: text/plain\n\ntags: 'tram'\nobjective: 'What do people wear?'\n"
            "--b\nContent-Type: image/png; name=\"=?utf-8?q?tram_=C4=81.png?=\"\n"
            "Content-Transfer-Encoding: base64\nContent-Disposition: inline\n\n"
            + base64.encodebytes(picture).decode() + "--b--\n")
    message = mail("create-response-to: http://torokiki.net/image/2/response/", body,
                   "MIME-Version: 1.0", "Content-Type: multipart/mixed; boundary=b")
    assert run_pipe(message).returncode == 0
    [item] = website.stats()["items"]
    stored = website.store  # the attachment itself is checked through the API
    import requests
    content = requests.get(website.url + item["location"].split("torokiki.net")[1], timeout=5).json()
    assert base64.b64decode(content["Attachment"]["data"]) == picture
    assert content["Attachment"]["name"] == "tram \u0101.png"
    assert content["Objective"] == "What do people wear?" and "Text" not in content
    assert stored.exists()
    smtp_sink.wait_for(1)


def test_get_mails_the_content_back_as_a_real_attachment(run_pipe, smtp_sink, example_mail):
    assert run_pipe(example_mail("02-get.eml")).returncode == 0
    [received] = smtp_sink.wait_for(1)
    reply = received.message()
    [attachment] = list(reply.iter_attachments())
    assert attachment.get_content_type() == "image/png"
    assert attachment.get_filename().endswith(".png")
    assert attachment.get_content().startswith(b"\x89PNG")


def test_get_of_missing_content_says_so(run_pipe, smtp_sink, pipe_env):
    assert run_pipe(mail("get: 'http://torokiki.net/image/999/response'")).returncode == 0
    [received] = smtp_sink.wait_for(1)
    assert "There is no Torokiki content" in received.message().get_body(("plain",)).get_content()


def test_invalid_mail_gets_every_problem_with_its_line(run_pipe, smtp_sink, pipe_env, website):
    body = "Hi!\ncolour: 'red'\ntext: 'never closed\n"
    assert run_pipe(mail("create-response-to: 'http://evil.example/image/1/response'", body)).returncode == 0
    [received] = smtp_sink.wait_for(1)
    text = received.message().get_body(("plain",)).get_content()
    assert "evil.example" in text and "line 2" in text and "line 3" in text and "help" in text
    assert website.stats()["posts"] == 0
    [kept] = files_in(pipe_env.log_dir / "erroneous_emails")
    assert kept.read_bytes() == mail("create-response-to: 'http://evil.example/image/1/response'", body)


def test_refused_submission_is_answered_and_kept_without_the_key(run_pipe, smtp_sink, pipe_env, website):
    website.control("refuse", status=422)
    done = run_pipe(mail("create-response-to: 'http://torokiki.net/image/1/response'", "text: 'hi'"))
    assert done.returncode == 0
    [received] = smtp_sink.wait_for(1)
    assert "did not accept" in received.message().get_body(("plain",)).get_content()
    kept = files_in(pipe_env.log_dir / "failed_https")
    assert [p.suffix for p in kept] == [".eml", ".txt"]
    exchange = kept[1].read_text()
    assert "HTTP 422" in exchange and "Idempotency-Key" in exchange
    assert website.api_key not in exchange and "<redacted>" in exchange


@pytest.mark.parametrize("mode", ["down", "slow"])
def test_website_unavailable_defers_without_reply(run_pipe, smtp_sink, pipe_env, website, mode):
    if mode == "slow":
        config = pipe_env.variant(TOROKIKI_HTTP_TIMEOUT="1")
        website.control("slow", delay=3)
    else:
        config = pipe_env
        website.control("down")
    done = run_pipe(mail("create-response-to: 'http://torokiki.net/image/1/response'", "text: 'hi'"),
                    config=config)
    assert done.returncode == 75
    assert done.stderr.decode().startswith("4.4.2 ") and b"Traceback" not in done.stderr
    assert len(done.stderr.decode().strip().splitlines()) == 1
    assert smtp_sink.messages == []
    assert files_in(pipe_env.log_dir / "failed_https")


def test_connection_refused_defers(run_pipe, smtp_sink, pipe_env):
    config = pipe_env.variant(TOROKIKI_API_URL="http://127.0.0.1:9")
    done = run_pipe(mail("get: 'http://torokiki.net/image/1/response'"), config=config)
    assert done.returncode == 75 and done.stderr.startswith(b"4.4.2")


def test_missing_configuration_defers_with_one_line(run_pipe, pipe_env, smtp_sink):
    config = pipe_env.variant(TOROKIKI_API_KEY=None)
    done = run_pipe(mail("help"), config=config)
    assert done.returncode == 75
    assert done.stderr.decode().startswith("4.3.5 ") and "TOROKIKI_API_KEY" in done.stderr.decode()
    assert smtp_sink.messages == []


@pytest.mark.parametrize("headers, envelope", [
    (("Auto-Submitted: auto-replied",), []),
    (("Precedence: bulk",), []),
    (("List-Id: <x.example.net>",), []),
    ((), ["--sender", ""]),
    ((), ["--sender", "MAILER-DAEMON@example.net"]),
])
def test_mail_that_must_not_be_answered_is_kept_and_exits_0(run_pipe, smtp_sink, pipe_env, headers, envelope):
    done = run_pipe(mail("help", "", *headers), *envelope)
    assert done.returncode == 0
    assert files_in(pipe_env.log_dir / "ignored")
    assert "outcome=ignored" in log_lines(pipe_env)[0]
    assert smtp_sink.messages == []


def test_mail_from_the_gateway_itself_is_not_answered(run_pipe, smtp_sink):
    assert run_pipe(mail("help", sender=f"Torokiki <{GATEWAY}>")).returncode == 0
    assert smtp_sink.messages == []


def test_no_usable_from_address_is_kept_not_answered(run_pipe, smtp_sink, pipe_env):
    assert run_pipe(mail("help", sender="a@example.net, b@example.net")).returncode == 0
    assert smtp_sink.messages == [] and files_in(pipe_env.log_dir / "erroneous_emails")


def test_oversize_mail_gets_a_short_reply_and_no_post(run_pipe, smtp_sink, pipe_env, website):
    config = pipe_env.variant(TOROKIKI_MAX_MESSAGE_BYTES="2000")
    done = run_pipe(mail("create-response-to: 'http://torokiki.net/image/1/response'", "x" * 50000),
                    config=config)
    assert done.returncode == 0
    [received] = smtp_sink.wait_for(1)
    assert "larger than" in received.message().get_body(("plain",)).get_content()
    assert website.stats()["posts"] == 0


def test_postfix_local_delivery_format_and_crlf(run_pipe, smtp_sink):
    message = b"From kiri@example.net  Tue May 14 08:12:24 2024\r\n" \
              b"Return-Path: <kiri@example.net>\r\nDelivered-To: gateway@torokiki.net\r\n" + \
              mail("help").replace(b"\n", b"\r\n")
    assert run_pipe(message).returncode == 0
    smtp_sink.wait_for(1)


def test_reply_refused_for_good_is_kept_ready_to_send(run_pipe, pipe_env, tmp_path):
    failing = tmp_path / "failing-sendmail"
    failing.write_text("#!/bin/sh\ncat >/dev/null\necho 'no such user' >&2\nexit 67\n")
    failing.chmod(0o755)
    done = run_pipe(mail("help"), config=pipe_env.variant(TOROKIKI_SENDMAIL=str(failing)))
    assert done.returncode == 0
    [kept] = files_in(pipe_env.log_dir / "failed_sends")
    assert b"Auto-Submitted: auto-replied" in kept.read_bytes()
    assert "outcome=reply-failed" in log_lines(pipe_env)[0]


@pytest.mark.parametrize("code", [75, 69, 71, 74])
def test_temporary_sendmail_failure_defers(run_pipe, pipe_env, tmp_path, code):
    failing = tmp_path / "busy-sendmail"
    failing.write_text(f"#!/bin/sh\ncat >/dev/null\nexit {code}\n")
    failing.chmod(0o755)
    done = run_pipe(mail("help"), config=pipe_env.variant(TOROKIKI_SENDMAIL=str(failing)))
    assert done.returncode == 75 and done.stderr.startswith(b"4.")


def test_dry_run_changes_nothing(run_pipe, smtp_sink, pipe_env, website):
    done = run_pipe(mail("create-response-to: 'http://torokiki.net/image/1/response'", "text: 'hi'"),
                    "--dry-run")
    assert done.returncode == 0, done.stderr
    out = done.stdout.decode()
    assert "POST " in out and "<redacted>" in out and website.api_key not in out
    assert "Auto-Submitted: auto-replied" in out
    assert website.stats()["posts"] == 0 and smtp_sink.messages == []
    assert list(pipe_env.log_dir.iterdir()) == []


def test_logs_are_private(run_pipe, pipe_env, smtp_sink):
    run_pipe(mail("bogus"))
    for path in pipe_env.log_dir.rglob("*"):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), path


def test_file_argument_usage_version_and_help(run_pipe, pipe_program, tmp_path, smtp_sink, pipe_env):
    message = tmp_path / "m.eml"
    message.write_bytes(mail("help"))
    assert run_pipe(b"", str(message)).returncode == 0
    assert run_pipe(b"", "--no-such-option").returncode == os.EX_USAGE
    assert run_pipe(b"", "--version").stdout.startswith(b"torokiki-pipe ")
    assert b"--dry-run" in run_pipe(b"", "--help").stdout


def test_configuration_error_still_reads_all_input(pipe_program, tmp_path):
    # The MTA writes the whole message; exiting unread would break its pipe.
    import subprocess

    big = mail("help", "x" * 300_000)
    process = subprocess.Popen([pipe_program, "--config", str(tmp_path / "absent.env")],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdin.write(big)        # BrokenPipeError here if the pipe exits unread (300 KB > pipe buffer)
    process.stdin.close()
    err = process.stderr.read()
    assert process.wait(timeout=60) == 75 and err.startswith(b"4.3.5")


def test_a_big_photo_reaches_the_website_byte_for_byte(run_pipe, smtp_sink, website):
    import requests

    picture = bytes(range(256)) * 2000          # 500 KB: taken from the mail's own base64
    body = ("--b\nContent-Type: text/plain\n\ntags: 'big'\n--b\nContent-Type: image/jpeg; name=big.jpg\n"
            "Content-Transfer-Encoding: base64\n\n" + base64.encodebytes(picture).decode() + "--b--\n")
    message = mail("create-response-to: 'http://torokiki.net/image/1/response'", body,
                   "MIME-Version: 1.0", "Content-Type: multipart/mixed; boundary=b")
    assert run_pipe(message).returncode == 0
    [item] = website.stats()["items"]
    content = requests.get(website.url + item["location"].split("torokiki.net")[1], timeout=5).json()
    assert base64.b64decode(content["Attachment"]["data"], validate=True) == picture
    smtp_sink.wait_for(1)
