"""A real Postfix end to end.

SMTP in, the `torokiki` pipe transport exactly as postfix/master.cf defines it
(only the paths and the user swapped), the installed torokiki-pipe running as
an unprivileged user, the reference website, the reply through msmtp into the
SMTP sink, and Postfix's own queue when the website is down.

The instance is private: its own configuration, queue and data directories in
a temporary folder, smtpd on a free loopback port only, its own syslog name
and log file (maillog_file), and it relays nothing (default_transport and
relay_transport are `error`), so it neither needs nor disturbs a system
Postfix on port 25.  It is stopped and removed after the module, also when a
test fails.
"""
from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import signal
import smtplib
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import (POSTFIX_EXAMPLES, PRIVATE_MASTER_CF, PipeUserGateway, example_settings, free_port,
                     processes_in, program_for, torokiki_service, wait_until)

pytestmark = pytest.mark.integration  # a Postfix of its own

GATEWAY = "gateway@torokiki.net"
SENDER = "kiri@example.net"
PIPE_USER = "nobody"        # any unprivileged account will do; pipe(8) refuses root and postfix
SBIN = Path("/usr/sbin")
# What Postfix's commands run with: nothing of the test runner's environment.
ADMIN_ENV = {"PATH": "/usr/sbin:/usr/bin:/bin", "LANG": "C"}


# What this instance needs besides the settings of postfix/main.cf.
TEST_MAIN_CF = """\
# Written by tests/test_postfix.py: a private instance that relays nothing.
compatibility_level = 3.6
queue_directory = {base}/spool
data_directory = {base}/data
multi_instance_name = postfix-torokiki-test
syslog_name = postfix-torokiki-test
maillog_file = {base}/maillog
maillog_file_prefixes = {base}
myhostname = mx.torokiki.test
mydomain = torokiki.test
myorigin = $myhostname
mydestination = torokiki.net
local_recipient_maps = proxy:unix:passwd.byname $alias_maps hash:{config}/transport
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost =
relay_domains =
default_transport = error:5.7.1 this test instance relays nothing
relay_transport = error:5.7.1 this test instance relays nothing
local_transport = error:5.1.1 no local delivery on this test instance
smtpd_relay_restrictions = reject_unauth_destination
smtpd_peername_lookup = no
biff = no
notify_classes =
# Only the test retries (postqueue -f): no automatic queue run gets in between.
queue_run_delay = 3600s
minimal_backoff_time = 3600s
maximal_backoff_time = 7200s
# Nothing from the test runner's environment reaches the pipe: the master
# imports only what Postfix needs, and the pipe gets TZ and a UTF-8 locale,
# not even MAIL_CONFIG (a sendmail it ran would use the system's Postfix).
import_environment = MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ LANG=C POSTLOG_SERVICE POSTLOG_HOSTNAME
export_environment = TZ LANG=C.UTF-8
"""



def _skip_unless_postfix_can_run():
    if not (SBIN / "postfix").is_file() or not shutil.which("postconf", path=str(SBIN)):
        pytest.skip("Postfix is not installed (apt-get install postfix; `make test` does it)")
    if os.geteuid() != 0:
        pytest.skip("a private Postfix instance needs root (its master runs as root, the pipe switches users)")
    for account in ("postfix", PIPE_USER):
        try:
            pwd.getpwnam(account)
        except KeyError:
            pytest.skip(f"there is no {account!r} account for Postfix")
    daemons = subprocess.run([str(SBIN / "postconf"), "-dh", "daemon_directory"],
                             capture_output=True, text=True).stdout.strip()
    if not (Path(daemons) / "pipe").is_file():
        pytest.skip(f"Postfix's pipe(8) is missing from {daemons}")





def _example_main_cf(config: Path) -> str:
    settings = example_settings(config)
    assert "torokiki_destination_recipient_limit" in settings
    return "".join(f"{name} = {value}\n" for name, value in settings.items())


@dataclass
class Postfix:
    base: Path
    config: Path
    home: Path          # the pipe user's folder: env file, msmtprc, logs/
    port: int = 0
    log_mark: int = 0   # where the current test's part of the maillog starts

    def command(self, name: str, *args: str, check: bool = True, timeout: float = 30) -> str:
        done = subprocess.run([str(SBIN / name), "-c", str(self.config), *args], capture_output=True,
                              text=True, timeout=timeout, env=ADMIN_ENV)
        if check and done.returncode != 0:
            raise AssertionError(f"{name} {' '.join(args)} exited {done.returncode}: {done.stderr}"
                                 f"\n--- maillog:\n{self.maillog()}")
        return done.stdout

    def _maillog_bytes(self) -> bytes:
        try:
            return (self.base / "maillog").read_bytes()
        except OSError:
            return b""

    def maillog(self, last: int = 40) -> str:
        """The end of the instance's log, for messages of failed assertions."""
        return "\n".join(self._maillog_bytes().decode(errors="replace").splitlines()[-last:]) or "(empty)"

    def mark_log(self) -> None:
        self.log_mark = len(self._maillog_bytes())

    def new_log(self) -> str:
        """What Postfix logged since `mark_log()`."""
        return self._maillog_bytes()[self.log_mark:].decode(errors="replace")

    def queue(self) -> list[dict]:
        """The queued messages as `postqueue -j` reports them."""
        return [json.loads(line) for line in self.command("postqueue", "-j").splitlines() if line.strip()]

    def submit(self, message: bytes, sender: str = SENDER, recipient: str = GATEWAY) -> None:
        with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as smtp:
            smtp.sendmail(sender, [recipient], message)

    def master_pid(self) -> int | None:
        try:
            return int((self.base / "spool" / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None


def _our_master(pid: int, instance: Postfix) -> bool:
    """Is `pid` still this instance's master (running, in its queue directory)?"""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        where = os.readlink(f"/proc/{pid}/cwd")
    except (OSError, IndexError):
        return False
    return state != "Z" and Path(where) == instance.base / "spool"



def _let_runs_finish(folder: Path, timeout: float = 15) -> None:
    """A pipe's command outlives a stopped Postfix; wait for it, and end it if it hangs."""
    deadline = time.monotonic() + timeout
    while processes_in(folder) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in processes_in(folder):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _start(instance: Postfix, service: str) -> None:
    """Start the instance; a free port taken meanwhile by someone else means another try."""
    for _ in range(3):
        instance.port = free_port()
        # Postfix's own services, then the torokiki entry of postfix/master.cf.
        (instance.config / "master.cf").write_text(PRIVATE_MASTER_CF.format(port=instance.port) + service)
        started = subprocess.run([str(SBIN / "postfix"), "-c", str(instance.config), "start"],
                                 capture_output=True, text=True, timeout=60,
                                 env=ADMIN_ENV)
        if started.returncode == 0:
            return
        if "Address already in use" not in instance.maillog():
            break
    raise AssertionError(f"postfix start failed: {started.stderr}\n--- maillog:\n{instance.maillog()}")


def _stop(instance: Postfix) -> None:
    pid = instance.master_pid()
    subprocess.run([str(SBIN / "postfix"), "-c", str(instance.config), "stop"], capture_output=True,
                   timeout=30, env=ADMIN_ENV)
    deadline = time.monotonic() + 15
    while pid is not None and _our_master(pid, instance) and time.monotonic() < deadline:
        time.sleep(0.1)
    if pid is not None and _our_master(pid, instance):
        os.kill(pid, signal.SIGKILL)
    _let_runs_finish(instance.home)


@pytest.fixture(scope="module")
def postfix(pipe_program):
    """A private, running Postfix whose gateway address goes to the `torokiki` pipe transport."""
    _skip_unless_postfix_can_run()
    user = pwd.getpwnam(PIPE_USER)
    base = Path(tempfile.mkdtemp(prefix="torokiki-postfix-", dir="/tmp"))
    instance = Postfix(base=base, config=base / "etc", home=base / "pipe")
    try:
        base.chmod(0o755)                   # postfix and the pipe user pass through
        instance.config.mkdir(mode=0o755)
        (base / "spool").mkdir(mode=0o755)  # root-owned; Postfix creates what is inside
        instance.home.mkdir(mode=0o700)
        os.chown(instance.home, user.pw_uid, user.pw_gid)
        program = program_for(PIPE_USER, pipe_program, base)
        (instance.config / "main.cf").write_text(
            TEST_MAIN_CF.format(base=base, config=instance.config) + _example_main_cf(instance.config))
        shutil.copy(POSTFIX_EXAMPLES / "transport", instance.config / "transport")
        instance.command("postmap", f"hash:{instance.config}/transport")
        service = torokiki_service(program, instance.home / "torokiki-pipe.env", instance.home, PIPE_USER)
        _start(instance, service)
        yield instance
    finally:
        try:
            _stop(instance)
        finally:
            shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def gateway(postfix, pipe_env, msmtp):
    """The pipe user's env file and msmtprc for this test's website and SMTP sink."""
    gateway = PipeUserGateway(postfix.home, pipe_env, msmtp, PIPE_USER)
    postfix.mark_log()
    try:
        yield gateway
    finally:                                # nothing left for the next test
        postfix.command("postsuper", "-d", "ALL", check=False)
        _let_runs_finish(postfix.home)
        shutil.rmtree(gateway.log_dir, ignore_errors=True)


def mail(subject: str, body: str = "", msgid: str = "<pf-1@example.net>") -> bytes:
    return (f"From: Kiri Tane <{SENDER}>\r\nTo: {GATEWAY}\r\nSubject: {subject}\r\n"
            f"Message-ID: {msgid}\r\nDate: Tue, 14 May 2024 08:12:24 +1200\r\n\r\n{body}").encode()



def replies_to(sink, msgid: str) -> list:
    return [m for m in sink.messages if m.message()["In-Reply-To"] == msgid]


def test_postfix_hands_mail_to_the_gateway_and_keeps_it_while_the_website_is_down(
        postfix, gateway, website, smtp_sink):
    # 1. Website up: SMTP -> pipe transport -> torokiki-pipe -> website, reply -> msmtp -> sink.
    postfix.submit(mail("create-response-to: 'http://torokiki.net/image/1/response'",
                        "text: 'Trams ran here until 1964'\r\n", msgid="<pf-1@example.net>"))
    wait_until(lambda: replies_to(smtp_sink, "<pf-1@example.net>"), "the first reply", postfix)
    wait_until(lambda: postfix.queue() == [], "an empty queue after delivery", postfix)
    [item] = website.stats()["items"]
    assert item["content"]["Text"] == "Trams ran here until 1964"
    [reply] = smtp_sink.messages
    assert list(reply.rcpt_tos) == [SENDER]
    assert item["location"] in reply.message().get_body(("plain",)).get_content()
    assert re.search(r"to=<gateway@torokiki\.net>, relay=torokiki, .*status=sent", postfix.new_log())
    [line] = gateway.log_lines()
    assert "outcome=saved" in line and "exit=0" in line and f"sender={SENDER}" in line

    # 2. Website down: the gateway exits 75, Postfix keeps the message deferred, nobody is answered.
    website.control("down")
    postfix.submit(mail("create-response-to: 'http://torokiki.net/image/1/response'",
                        "text: 'The bank on the corner'\r\n", msgid="<pf-2@example.net>"))
    [queued] = wait_until(lambda: [q for q in postfix.queue() if q["queue_name"] == "deferred"],
                          "the message deferred in Postfix's queue", postfix)
    [recipient] = queued["recipients"]
    assert recipient["address"] == GATEWAY and "website-unavailable" in recipient["delay_reason"]
    assert re.search(r"relay=torokiki, .*dsn=4\.4\.2, status=deferred", postfix.new_log())
    assert "outcome=website-unavailable" in gateway.log_lines()[-1] and "exit=75" in gateway.log_lines()[-1]
    stats = website.stats()
    assert stats["stored"] == 1 and stats["faults"] >= 1
    assert len(smtp_sink.messages) == 1
    # The kept copy shows what the D and R flags of master.cf prepend.
    [kept] = [p for p in gateway.kept("failed_https") if p.suffix == ".eml"]
    head = kept.read_bytes().split(b"\n\n")[0]
    assert b"\nDelivered-To: gateway@torokiki.net\n" in b"\n" + head
    assert b"\nReturn-Path: <kiri@example.net>\n" in b"\n" + head

    # 3. Website back, queue flushed: saved once, answered once, queue empty.
    website.control("ok")
    postfix.command("postqueue", "-f")
    wait_until(lambda: replies_to(smtp_sink, "<pf-2@example.net>"), "the reply after the flush", postfix)
    wait_until(lambda: postfix.queue() == [], "an empty queue after the retry", postfix)
    stats = website.stats()
    assert stats["stored"] == 2 and stats["duplicates"] == 0
    assert sorted(i["content"]["Text"] for i in stats["items"]) == ["The bank on the corner",
                                                                    "Trams ran here until 1964"]
    assert len(replies_to(smtp_sink, "<pf-2@example.net>")) == 1 and len(smtp_sink.messages) == 2
    assert "outcome=saved" in gateway.log_lines()[-1]


def test_a_bounce_reaches_the_gateway_with_an_empty_sender_and_is_not_answered(
        postfix, gateway, website, smtp_sink):
    postfix.submit(mail("help", msgid="<bounce-1@example.net>"), sender="")
    wait_until(gateway.log_lines, "the gateway's log line", postfix)
    wait_until(lambda: postfix.queue() == [], "an empty queue", postfix)
    [line] = gateway.log_lines()
    # null_sender= (empty) in master.cf: the gateway gets --sender "" rather than MAILER-DAEMON.
    assert "outcome=ignored" in line and "null envelope sender" in line and "exit=0" in line
    [kept] = gateway.kept("ignored")
    assert b"Return-Path: <>" in kept.read_bytes()
    assert re.search(r"to=<gateway@torokiki\.net>, relay=torokiki, .*status=sent", postfix.new_log())
    assert smtp_sink.messages == [] and website.stats()["posts"] == 0


def test_the_same_mail_delivered_twice_is_saved_and_answered_once(postfix, gateway, website, smtp_sink):
    # What a sender's server does when the connection drops after the data was sent: it sends again.
    message = mail("create-response-to: 'http://torokiki.net/image/1/response'", "text: 'Twice'\r\n",
                   msgid="<twice@example.net>")
    postfix.submit(message)
    wait_until(lambda: len(gateway.log_lines()) == 1, "the first delivery", postfix)
    postfix.submit(message)
    wait_until(lambda: len(gateway.log_lines()) == 2, "the second delivery", postfix)
    wait_until(lambda: postfix.queue() == [], "an empty queue", postfix)
    assert "outcome=duplicate" in gateway.log_lines()[-1]
    assert website.stats()["stored"] == 1
    assert len(smtp_sink.messages) == 1


def test_a_reply_to_a_sub_address_reaches_the_gateway_as_a_response(postfix, gateway, website, smtp_sink):
    # postfix/README.md: recipient_delimiter = + makes gateway+image.1.response@ reach the pipe
    # (transport_maps and the local recipient check look the address up without its extension).
    env = postfix.home / "torokiki-pipe.env"
    env.write_text(env.read_text() + "TOROKIKI_REPLY_SUBADDRESS=+\n")
    postfix.command("postconf", "-e", "recipient_delimiter = +")
    postfix.command("postfix", "reload")
    try:
        postfix.submit(mail("get: 'http://torokiki.net/image/1/response'", msgid="<pf-sub-1@example.net>"))
        [content] = wait_until(lambda: replies_to(smtp_sink, "<pf-sub-1@example.net>"), "the content mail", postfix)
        address = content.message()["Reply-To"]
        assert address == "gateway+image.1.response@torokiki.net"
        # The phone's reply: to the Reply-To, a subject the person wrote, no In-Reply-To.
        reply = mail("a tram", "Trams ran on Lambton Quay until 1964.\r\n", msgid="<pf-sub-2@example.net>")
        for attempt in range(20):       # an smtpd started before the reload may still answer once
            try:
                postfix.submit(reply, recipient=address)
                break
            except smtplib.SMTPRecipientsRefused:
                time.sleep(0.5)
        else:
            raise AssertionError(f"{address} refused after the reload\n--- maillog:\n{postfix.maillog()}")
        wait_until(lambda: website.stats()["items"], "the response saved", postfix)
        wait_until(lambda: postfix.queue() == [], "an empty queue", postfix)
        [item] = website.stats()["items"]
        assert item["content"]["InspiredBy"] == "http://torokiki.net/image/1/response"
        assert item["content"]["Text"] == "Trams ran on Lambton Quay until 1964."
        assert re.search(r"to=<gateway\+image\.1\.response@torokiki\.net>, relay=torokiki, .*status=sent",
                         postfix.new_log())
        assert "outcome=saved" in gateway.log_lines()[-1] and "command=create-response-to" in gateway.log_lines()[-1]
    finally:
        postfix.command("postconf", "-X", "recipient_delimiter")
        postfix.command("postfix", "reload")
