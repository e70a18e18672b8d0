"""Debian's real OpenDKIM and OpenDMARC in front of the gateway, without real DNS.

Contract: a private Postfix (the one tests/test_postfix.py starts: its own
configuration, queue and log in a temporary folder, smtpd on a free loopback
port, relaying nothing, the `torokiki` pipe entry of postfix/master.cf) runs
OpenDKIM then OpenDMARC as smtpd milters.  What they write reaches the gateway:

- a mail from someone@sender.test that the sender's own key signs gets
  `dkim=pass` and `dmarc=pass` from our authserv-id;
- the same From: unsigned gets `dmarc=fail` (the domain says p=reject);
- an `Authentication-Results:` with our id that the sender wrote itself:
  OpenDKIM removes one that claims a dkim result, nobody removes one that
  claims dmarc=pass; it arrives below what the milters wrote (and below
  Postfix's Received:), so only the topmost dmarc result of our id is ours;
- with TOROKIKI_AUTHSERV_ID set, the passing mail is saved with auth=authenticated, the failing ones are held
  in logs/held/ with outcome=forged, not posted and not answered.

SPF is not evaluated (OpenDMARC's SPFSelfValidate off): libspf2 passes every
loopback client, so on 127.0.0.0/8 only DKIM can make DMARC pass.

DNS without DNS: the answers sender.test needs (its DMARC record and its
DKIM key; NXDOMAIN for anything else) come from a stub in this process on
127.53.0.1:53, an address of the loopback no resolver uses.  OpenDMARC (libspf2
and libresolv) only reads /etc/resolv.conf, so each milter runs in a private
mount namespace (`unshare --mount`) where a resolv.conf naming the stub is
bind-mounted over /etc/resolv.conf; OpenDKIM (libunbound) reads the key from
its TestPublicKeys file and is pointed at the stub by Nameservers too.  The
host's own resolv.conf and DNS are never touched; everything lives in a
temporary folder removed after the module.  No network namespace: the gateway
must reach the website and the SMTP sink on the host's loopback.

The mail comes from 127.0.0.2, not 127.0.0.1: both milters leave 127.0.0.1
alone by default (OpenDKIM signs for it, OpenDMARC ignores it).

Skips (saying why) when not root, or when Postfix, the milters or unshare are
missing (`make test` installs them).
"""
from __future__ import annotations

import base64
import hashlib
import os
import pwd
import re
import shutil
import signal
import smtplib
import socket
import struct
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from email import message_from_bytes
from email.policy import compat32
from pathlib import Path

import pytest

from helpers import (PRIVATE_MASTER_CF, PipeUserGateway, example_settings, free_port, private_settings,
                     processes_in, program_for, torokiki_service, wait_until)

pytestmark = pytest.mark.integration  # a Postfix, two milters and a DNS stub of its own

GATEWAY = "gateway@torokiki.net"
CAPTURE = "capture@torokiki.net"        # gets a copy of each mail to the gateway, as the gateway got it
AUTHSERV_ID = "mx.torokiki.test"        # Postfix's myhostname, the milters' default too
SENDER_DOMAIN = "sender.test"
SELECTOR = "sel"
SENDER = f"someone@{SENDER_DOMAIN}"
CLIENT_IP = "127.0.0.2"                 # the sending host: neither "internal" nor ignored
DNS_IP = "127.53.0.1"
PIPE_USER = "nobody"
SBIN = Path("/usr/sbin")
ADMIN_ENV = {"PATH": "/usr/sbin:/usr/bin:/bin", "LANG": "C"}
NEEDED = ("/usr/sbin/postfix", "/usr/sbin/opendkim", "/usr/sbin/opendmarc", "/usr/sbin/opendkim-genkey",
          "/usr/bin/unshare", "/usr/bin/openssl")


def _skip_unless_all_can_run() -> None:
    missing = [p for p in NEEDED if not os.access(p, os.X_OK)]
    if missing:
        pytest.skip(f"missing {', '.join(missing)} "
                    "(apt-get install postfix opendkim opendkim-tools opendmarc openssl; `make test` does it)")
    if os.geteuid() != 0:
        pytest.skip("a private Postfix and milters in a private mount namespace need root")
    for account in ("postfix", PIPE_USER, "opendkim", "opendmarc"):
        try:
            pwd.getpwnam(account)
        except KeyError:
            pytest.skip(f"there is no {account!r} account")


# --------------------------------------------------------------------------- DNS stub

class DnsStub:
    """Answers TXT queries from `records` over UDP; NODATA for other names in
    `zone`, NXDOMAIN (authoritative) for the rest, so no lookup ever leaves."""

    def __init__(self, address: str, records: dict[str, list[str]], zone: str):
        self.records = {k.lower().rstrip("."): v for k, v in records.items()}
        self.zone = zone.lower()
        self.queries: list[tuple[str, int]] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((address, 53))
        self.sock.settimeout(0.2)
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.running:
            try:
                packet, peer = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                self.sock.sendto(self._answer(packet), peer)
            except (ValueError, IndexError, struct.error, OSError):
                continue        # a packet we cannot parse gets no answer

    def _answer(self, packet: bytes) -> bytes:
        qid, flags = struct.unpack("!HH", packet[:4])
        labels, at = [], 12
        while packet[at]:
            labels.append(packet[at + 1:at + 1 + packet[at]].decode("ascii", "replace"))
            at += 1 + packet[at]
        qtype, _ = struct.unpack("!HH", packet[at + 1:at + 5])
        question = packet[12:at + 5]
        name = ".".join(labels).lower()
        self.queries.append((name, qtype))
        answers = b""
        count = 0
        rcode = 0
        if name in self.records and qtype in (16, 255):        # TXT or ANY
            for text in self.records[name]:
                raw = text.encode()
                rdata = b"".join(bytes([len(raw[i:i + 255])]) + raw[i:i + 255] for i in range(0, len(raw), 255))
                answers += struct.pack("!HHHIH", 0xC00C, 16, 1, 60, len(rdata)) + rdata
                count += 1
        elif not (name == self.zone or name.endswith("." + self.zone)):
            rcode = 3           # NXDOMAIN
        # QR, AA, the query's RD, RA.
        reply_flags = 0x8000 | 0x0400 | (flags & 0x0100) | 0x0080 | rcode
        return struct.pack("!HHHHHH", qid, reply_flags, 1, count, 0, 0) + question + answers

    def close(self) -> None:
        self.running = False
        self.thread.join(timeout=2)
        self.sock.close()


# --------------------------------------------------------------------------- DKIM signing (the sender's side)

def _relaxed_header(name: str, value: str) -> str:
    value = re.sub(r"\r\n(?=[ \t])", "", value)
    return name.lower().strip() + ":" + re.sub(r"[ \t]+", " ", value).strip()


def dkim_sign(message: bytes, key: Path, domain: str, selector: str) -> bytes:
    """`message` (CRLF) with a DKIM-Signature (rsa-sha256, relaxed/simple) made with openssl.

    The sender's side is not under test, only what Debian's OpenDKIM makes of it.
    """
    head, _, body = message.partition(b"\r\n\r\n")
    body = body.rstrip(b"\r\n") + b"\r\n" if body.strip(b"\r\n") else b"\r\n"
    fields = [(f.split(":", 1)[0], f.split(":", 1)[1])
              for f in re.split(r"\r\n(?![ \t])", head.decode())]
    signed = [(n, v) for n, v in fields if n.lower() in ("from", "to", "subject", "date", "message-id")]
    names = ":".join(n for n, _ in signed)
    bh = base64.b64encode(hashlib.sha256(body).digest()).decode()
    value = (f" v=1; a=rsa-sha256; c=relaxed/simple; d={domain}; s={selector};"
             f" t={int(time.time())}; h={names}; bh={bh}; b=")
    data = "".join(_relaxed_header(n, v) + "\r\n" for n, v in signed) + _relaxed_header("DKIM-Signature", value)
    signature = subprocess.run(["/usr/bin/openssl", "dgst", "-sha256", "-sign", str(key)], input=data.encode(),
                               capture_output=True, check=True, timeout=30).stdout
    b = base64.b64encode(signature).decode()
    folded = "\r\n\t".join(b[i:i + 64] for i in range(0, len(b), 64))
    return f"DKIM-Signature:{value}\r\n\t{folded}\r\n".encode() + message


COMMAND = "create-response-to: 'http://torokiki.net/image/1/response'"


def mail(msgid: str, *headers: str, sender: str = SENDER) -> bytes:
    """A response to seed 1 that the gateway saves when nothing stops it."""
    lines = [f"From: Some One <{sender}>", f"To: {GATEWAY}", f"Subject: {COMMAND}", f"Message-ID: {msgid}",
             "Date: Tue, 14 May 2024 08:12:24 +1200", *headers]
    return ("\r\n".join(lines) + "\r\n\r\ntext: 'Trams ran here until 1964'\r\n").encode()


# --------------------------------------------------------------------------- the milters and Postfix

OPENDKIM_CONF = """\
# Verify only; keys from a file instead of DNS (TestPublicKeys), the stub as the only nameserver.
Mode                  v
AuthservID            {authserv_id}
Socket                local:{run}/opendkim/opendkim.sock
PidFile               {run}/opendkim/opendkim.pid
UMask                 000
UserID                opendkim
Syslog                no
Canonicalization      relaxed/simple
TestPublicKeys        {keys}
Nameservers           {dns}
"""

OPENDMARC_CONF = """\
# DKIM results read from OpenDKIM's header.  No SPF: libspf2 passes every loopback client
# ("localhost is always allowed"), so here only DKIM can make DMARC pass; SPF results
# in the mail's header (Received-SPF) are the sender's word and ignored.
AuthservID            {authserv_id}
TrustedAuthservIDs    {authserv_id}
Socket                local:{run}/opendmarc/opendmarc.sock
PidFile               {run}/opendmarc/opendmarc.pid
UMask                 000
UserID                opendmarc
Syslog                no
SPFSelfValidate       false
SPFIgnoreResults      true
RejectFailures        false
FailureReports        false
PublicSuffixList      /usr/share/publicsuffix/public_suffix_list.dat
"""

# The milters' /etc/resolv.conf is this file, in their own mount namespace only.
IN_OWN_NAMESPACE = ["/usr/bin/unshare", "--mount", "--propagation", "private", "--",
                    "/bin/sh", "-c", 'mount --bind "$0" /etc/resolv.conf && exec "$@"']


@dataclass
class MailHost:
    base: Path
    config: Path
    home: Path
    captured: Path
    dns: DnsStub
    port: int = 0
    milters: list = field(default_factory=list)

    def command(self, name: str, *args: str, check: bool = True) -> str:
        done = subprocess.run([str(SBIN / name), "-c", str(self.config), *args], capture_output=True,
                              text=True, timeout=30, env=ADMIN_ENV)
        if check and done.returncode != 0:
            raise AssertionError(f"{name} {' '.join(args)} exited {done.returncode}: {done.stderr}\n{self.maillog()}")
        return done.stdout

    def maillog(self) -> str:
        try:
            return "--- maillog:\n" + "\n".join((self.base / "maillog").read_text(errors="replace").splitlines()[-30:])
        except OSError:
            return "--- no maillog"

    def submit(self, message: bytes, sender: str = SENDER) -> None:
        with smtplib.SMTP("127.0.0.1", self.port, timeout=30, local_hostname="mail.sender.test",
                          source_address=(CLIENT_IP, 0)) as smtp:
            smtp.sendmail(sender, [GATEWAY], message)

    def queue_is_empty(self) -> bool:
        return self.command("postqueue", "-j").strip() == ""

    def copy_of(self, msgid: str, timeout: float = 20) -> bytes:
        """The mail with `msgid` as Postfix handed it to the gateway (the capture recipient's copy)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for path in self.captured.glob("*.eml"):
                data = path.read_bytes()
                if f"Message-ID: {msgid}".encode() in data:
                    return data
            time.sleep(0.1)
        raise AssertionError(f"no copy of {msgid} within {timeout}s\n{self.maillog()}")


def _start_milter(host: MailHost, argv: list[str], socket_path: Path, resolv: Path) -> None:
    process = subprocess.Popen([*IN_OWN_NAMESPACE, str(resolv), *argv], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, start_new_session=True)
    host.milters.append(process)
    deadline = time.monotonic() + 15
    while not socket_path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"{argv[0]} did not open {socket_path}: exit {process.poll()}, "
                                 f"{process.stderr.read().decode(errors='replace') if process.poll() is not None else ''}")
        time.sleep(0.05)


def _stop_milters(host: MailHost) -> None:
    for process in host.milters:
        if process.poll() is None:
            process.terminate()
    for process in host.milters:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)




def _stop_postfix(host: MailHost) -> None:
    pid_file = host.base / "spool" / "pid" / "master.pid"
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        pid = None
    subprocess.run([str(SBIN / "postfix"), "-c", str(host.config), "stop"], capture_output=True, timeout=30,
                   env=ADMIN_ENV)
    deadline = time.monotonic() + 15
    while pid is not None and Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        try:
            if os.readlink(f"/proc/{pid}/cwd") != str(host.base / "spool"):
                break
        except OSError:
            break
        time.sleep(0.1)
    for pid in processes_in(host.base):    # a gateway run outliving the master
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _dkim_key(folder: Path) -> str:
    """A fresh key pair for sender.test; the public key's TXT record text."""
    subprocess.run(["/usr/sbin/opendkim-genkey", "-b", "2048", "-D", str(folder), "-d", SENDER_DOMAIN,
                    "-s", SELECTOR], check=True, capture_output=True, timeout=60)
    zone = (folder / f"{SELECTOR}.txt").read_text()
    return "".join(re.findall(r'"([^"]*)"', zone))


@pytest.fixture(scope="module")
def mail_host(pipe_program):
    """A private Postfix with OpenDKIM and OpenDMARC as milters, and the DNS stub they ask."""
    _skip_unless_all_can_run()
    user = pwd.getpwnam(PIPE_USER)
    base = Path(tempfile.mkdtemp(prefix="torokiki-milters-", dir="/tmp"))
    base.chmod(0o755)
    keys, run = base / "keys", base / "run"
    for folder in (keys, run):
        folder.mkdir(mode=0o755)
    key_record = _dkim_key(keys)
    (keys / "public").write_text(f"{SELECTOR}._domainkey.{SENDER_DOMAIN} {key_record}\n")
    (keys / "public").chmod(0o644)
    dns = DnsStub(DNS_IP, {f"_dmarc.{SENDER_DOMAIN}": ["v=DMARC1; p=reject"],
                           f"{SELECTOR}._domainkey.{SENDER_DOMAIN}": [key_record]}, SENDER_DOMAIN)
    host = MailHost(base=base, config=base / "etc", home=base / "pipe", captured=base / "captured", dns=dns)
    try:
        (base / "resolv.conf").write_text(f"nameserver {DNS_IP}\noptions attempts:1 timeout:2\n")
        (base / "opendkim.conf").write_text(OPENDKIM_CONF.format(authserv_id=AUTHSERV_ID, run=run,
                                                                 keys=keys / "public", dns=DNS_IP))
        (base / "opendmarc.conf").write_text(OPENDMARC_CONF.format(authserv_id=AUTHSERV_ID, run=run))
        for milter in ("opendkim", "opendmarc"):    # each opens its socket as its own user, as on Debian
            (run / milter).mkdir(mode=0o755)
            account = pwd.getpwnam(milter)
            os.chown(run / milter, account.pw_uid, account.pw_gid)
        _start_milter(host, ["/usr/sbin/opendkim", "-f", "-x", str(base / "opendkim.conf")],
                      run / "opendkim" / "opendkim.sock", base / "resolv.conf")
        _start_milter(host, ["/usr/sbin/opendmarc", "-f", "-c", str(base / "opendmarc.conf")],
                      run / "opendmarc" / "opendmarc.sock", base / "resolv.conf")

        host.config.mkdir(mode=0o755)
        (base / "spool").mkdir(mode=0o755)
        for folder in (host.home, host.captured):
            folder.mkdir(mode=0o700)
            os.chown(folder, user.pw_uid, user.pw_gid)
        program = program_for(PIPE_USER, pipe_program, base)
        (host.config / "transport").write_text(
            (Path(__file__).resolve().parent.parent / "postfix" / "transport").read_text()
            + f"{CAPTURE} capture:\n")
        (host.config / "bcc").write_text(f"{GATEWAY} {CAPTURE}\n")
        settings = {
            "compatibility_level": "3.6", **private_settings(base), **example_settings(host.config),
            "mydestination": "torokiki.net",
            "local_recipient_maps": f"proxy:unix:passwd.byname hash:{host.config}/transport",
            "recipient_bcc_maps": f"hash:{host.config}/bcc",
            # OpenDKIM first: OpenDMARC reads its dkim= result.  A milter down means try later, never unfiltered.
            "smtpd_milters": f"unix:{run}/opendkim/opendkim.sock, unix:{run}/opendmarc/opendmarc.sock",
            "milter_default_action": "tempfail",
        }
        (host.config / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in settings.items()))
        for table in ("transport", "bcc"):
            host.command("postmap", f"hash:{host.config}/{table}")
        capture = (f"capture   unix  -       n       n       -       -       pipe\n"
                   f"  user={PIPE_USER} argv=/bin/dd of={host.captured}/${{queue_id}}.eml status=none\n")
        service = torokiki_service(program, host.home / "torokiki-pipe.env", host.home, PIPE_USER)
        for _ in range(3):
            host.port = free_port()
            (host.config / "master.cf").write_text(PRIVATE_MASTER_CF.format(port=host.port) + service + capture)
            started = subprocess.run([str(SBIN / "postfix"), "-c", str(host.config), "start"],
                                     capture_output=True, text=True, timeout=60, env=ADMIN_ENV)
            if started.returncode == 0:
                break
            if "Address already in use" not in host.maillog():
                raise AssertionError(f"postfix start failed: {started.stderr}\n{host.maillog()}")
        yield host
    finally:
        try:
            _stop_postfix(host)
        finally:
            _stop_milters(host)
            dns.close()
            shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def gateway(mail_host, pipe_env, msmtp):
    """The pipe user's env file (trusting our authserv-id) and msmtprc."""
    gateway = PipeUserGateway(mail_host.home, pipe_env, msmtp, PIPE_USER, TOROKIKI_AUTHSERV_ID=AUTHSERV_ID)
    try:
        yield gateway
    finally:
        mail_host.command("postsuper", "-d", "ALL", check=False)
        shutil.rmtree(gateway.log_dir, ignore_errors=True)
        for path in mail_host.captured.glob("*.eml"):
            path.unlink()


def auth_results(message: bytes) -> list[str]:
    """The Authentication-Results fields of `message`, top first, unfolded."""
    parsed = message_from_bytes(message, policy=compat32)
    return [re.sub(r"\s+", " ", str(v)).strip() for v in parsed.get_all("Authentication-Results", [])]



# --------------------------------------------------------------------------- the tests

CLAIMS = (f"Authentication-Results: {AUTHSERV_ID}; dkim=pass header.d={SENDER_DOMAIN} header.i=@{SENDER_DOMAIN}",
          f"Authentication-Results: {AUTHSERV_ID}; dmarc=pass header.from={SENDER_DOMAIN}")


def _three_mails(host: MailHost) -> None:
    """(a) signed by sender.test's key, (b) unsigned, (c) unsigned with the sender's own claims of our id."""
    key = host.base / "keys" / f"{SELECTOR}.private"
    host.submit(dkim_sign(mail("<signed@sender.test>"), key, SENDER_DOMAIN, SELECTOR))
    host.submit(mail("<forged@sender.test>"))
    host.submit(mail("<claims@sender.test>", *CLAIMS))


def ours(results: list[str], method: str) -> list[str]:
    return [r for r in results if r.startswith(f"{AUTHSERV_ID};") and f" {method}=" in r]


def test_the_milters_results_reach_the_gateway_and_a_senders_own_claims_stay_below_them(
        mail_host, gateway, website):
    _three_mails(mail_host)

    signed = auth_results(mail_host.copy_of("<signed@sender.test>"))
    [dkim] = ours(signed, "dkim")
    assert f"dkim=pass (2048-bit key) header.d={SENDER_DOMAIN} header.i=@{SENDER_DOMAIN}" in dkim, signed
    assert ours(signed, "dmarc") == [f"{AUTHSERV_ID}; dmarc=pass (p=reject dis=none) header.from={SENDER_DOMAIN}"]
    assert signed[0] == ours(signed, "dmarc")[0]          # OpenDMARC's, the last milter, is on top

    forged = auth_results(mail_host.copy_of("<forged@sender.test>"))
    assert forged == [f"{AUTHSERV_ID}; dmarc=fail (p=reject dis=none) header.from={SENDER_DOMAIN}"]

    # OpenDKIM removes a field of our id that claims a dkim result; OpenDMARC removes nothing, so the
    # sender's dmarc=pass arrives, below what the milters wrote and below Postfix's Received: only the
    # topmost dmarc result of our id is this host's.
    copy = mail_host.copy_of("<claims@sender.test>")
    claims = auth_results(copy)
    assert claims == [f"{AUTHSERV_ID}; dmarc=fail (p=reject dis=none) header.from={SENDER_DOMAIN}",
                      f"{AUTHSERV_ID}; dmarc=pass header.from={SENDER_DOMAIN}"], claims
    head = copy.split(b"\r\n\r\n")[0].split(b"\n\n")[0].decode()
    assert head.index("dmarc=fail") < head.index("Received:") < head.index("dmarc=pass")

    # The DMARC record came from the stub, through the namespace's resolv.conf.
    assert (f"_dmarc.{SENDER_DOMAIN}", 16) in mail_host.dns.queries
    # All three went on to the gateway through the torokiki pipe (what it makes of them: the next test).
    wait_until(lambda: len(gateway.log_lines()) == 3, "three gateway log lines", mail_host)
    assert all("exit=0" in line for line in gateway.log_lines()), gateway.log_lines()


def test_the_gateway_saves_what_dmarc_passes_and_holds_what_it_fails(mail_host, gateway, website, smtp_sink):
    _three_mails(mail_host)
    wait_until(lambda: len(gateway.log_lines()) == 3, "three gateway log lines", mail_host)
    wait_until(lambda: mail_host.queue_is_empty(), "an empty queue", mail_host)
    def line_of(msgid: str) -> str:
        [line] = [line for line in gateway.log_lines() if f"message-id={msgid}" in line]
        return line

    signed = line_of("<signed@sender.test>")
    assert "outcome=saved" in signed and "auth=authenticated" in signed, signed
    for msgid in ("<forged@sender.test>", "<claims@sender.test>"):
        line = line_of(msgid)
        assert "outcome=forged" in line and "auth=forged" in line, line
    assert len(gateway.kept("held")) == 2
    held = b"".join(p.read_bytes() for p in gateway.kept("held"))
    assert b"<forged@sender.test>" in held and b"<claims@sender.test>" in held
    stats = website.stats()
    assert stats["stored"] == 1 and stats["items"][0]["content"]["Text"] == "Trams ran here until 1964"
    smtp_sink.wait_for(1)
    time.sleep(0.5)                         # a second reply would be on its way by now
    assert [list(m.rcpt_tos) for m in smtp_sink.messages] == [[SENDER]]
