"""contrib/procmail/procmailrc with the real procmail: exit 0 when handled, 75 when the website is down.

The rcfile is used as shipped; only its two installation paths are replaced by
the installed torokiki-pipe and this test's env file (website fixture, msmtp
into the SMTP sink).
"""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration  # procmail and the installed pipe

RCFILE = Path(__file__).resolve().parent.parent / "contrib" / "procmail" / "procmailrc"
INSTALLED_PROGRAM = "/opt/torokiki-pipe/bin/torokiki-pipe"
INSTALLED_CONFIG = "/etc/torokiki-pipe/torokiki-pipe.env"
SENDER = "kiri@example.net"


@pytest.fixture
def procmail(pipe_program, pipe_env, tmp_path):
    """procmail(message) -> CompletedProcess of `procmail -m RCFILE` with the message on stdin."""
    path = shutil.which("procmail") or shutil.which("procmail", path="/usr/bin:/bin")
    if path is None:
        pytest.skip("procmail is not installed (apt-get install procmail; `make test` does it)")
    text = RCFILE.read_text()
    for installed in (INSTALLED_PROGRAM, INSTALLED_CONFIG):
        assert installed in text, f"contrib/procmail/procmailrc no longer mentions {installed}"
    rcfile = tmp_path / "procmailrc"
    rcfile.write_text(text.replace(INSTALLED_PROGRAM, pipe_program)
                      .replace(INSTALLED_CONFIG, os.fspath(pipe_env)))
    rcfile.chmod(0o644)
    # TOROKIKI_* variables would override the env file; procmail passes the environment on.
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TOROKIKI_")}

    def run(message: bytes) -> subprocess.CompletedProcess:
        return subprocess.run([path, "-m", str(rcfile)], input=message, capture_output=True,
                              timeout=60, env=environ, cwd=tmp_path)

    return run


def mail(subject, body="", msgid="<pm-1@example.net>"):
    return (f"From: Kiri Tane <{SENDER}>\nTo: gateway@torokiki.net\nSubject: {subject}\n"
            f"Message-ID: {msgid}\nDate: Tue, 14 May 2024 08:12:24 +1200\n\n{body}").encode()


def log_lines(pipe_env):
    path = pipe_env.log_dir / "torokiki-pipe.log"
    return path.read_text().splitlines() if path.exists() else []


def test_handled_mail_exits_0_and_is_answered(procmail, pipe_env, website, smtp_sink):
    done = procmail(mail("create-response-to: 'http://torokiki.net/image/1/response'", "text: 'Cable car'\n"))
    assert done.returncode == 0, done.stderr
    [item] = website.stats()["items"]
    assert item["content"]["Text"] == "Cable car"
    [received] = smtp_sink.wait_for(1)
    assert list(received.rcpt_tos) == [SENDER]
    assert received.message()["In-Reply-To"] == "<pm-1@example.net>"
    [line] = log_lines(pipe_env)
    assert "outcome=saved" in line and "exit=0" in line


def test_website_down_makes_procmail_exit_75_without_a_reply(procmail, pipe_env, website, smtp_sink):
    website.control("down")
    done = procmail(mail("create-response-to: 'http://torokiki.net/image/1/response'", "text: 'Cable car'\n"))
    assert done.returncode == 75, done.stderr
    assert b"4.4.2 website-unavailable" in done.stderr and b"Traceback" not in done.stderr
    [line] = log_lines(pipe_env)
    assert "outcome=website-unavailable" in line and "exit=75" in line
    assert website.stats()["stored"] == 0
    assert smtp_sink.messages == []
    # Retried once the website is back, the same message is saved and answered.
    website.control("ok")
    assert procmail(mail("create-response-to: 'http://torokiki.net/image/1/response'",
                         "text: 'Cable car'\n")).returncode == 0
    assert website.stats()["stored"] == 1
    smtp_sink.wait_for(1)
