"""contrib/imapfilter/config.lua run by the real imapfilter against a real Dovecot on loopback.

Dovecot (Debian's dovecot-imapd) is started here with its own config in a
temporary folder: 127.0.0.1 on a free port, no SSL, plaintext login allowed,
one throwaway passwd-file user, maildir in the temporary folder, base_dir and
state_dir there too so that it never meets a system Dovecot.  The gateway is
the installed torokiki-pipe, wired to the reference website, msmtp and the SMTP
sink of conftest.py.  Skips when imapfilter or dovecot is not installed
(apt-get install imapfilter dovecot-imapd).
"""
from __future__ import annotations

import imaplib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration  # Dovecot and imapfilter

CONFIG_LUA = Path(__file__).resolve().parent.parent / "contrib" / "imapfilter" / "config.lua"
GATEWAY = "gateway@torokiki.net"
IMAP_USER = "gateway"
IMAP_PASSWORD = "throwaway-Secret-1"
IMAPFILTER_TIMEOUT = 60
START_TIMEOUT = 10


def mail(subject, body="", *, msgid, sender="Kiri Tane <kiri@example.net>"):
    lines = [f"From: {sender}", f"To: {GATEWAY}", f"Subject: {subject}", f"Message-ID: {msgid}",
             "Date: Tue, 14 May 2024 08:12:24 +1200"]
    return ("\r\n".join(lines) + "\r\n\r\n" + body.replace("\n", "\r\n")).encode()


HELP = mail("help", msgid="<help-1@example.net>")
RESPONSE = mail("create-response-to: 'http://torokiki.net/image/1/response'", "text: 'hi'\n",
                msgid="<response-1@example.net>")


# --------------------------------------------------------------------------- Dovecot

def _tool(name: str) -> str:
    found = shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}")
                                        if os.access(p, os.X_OK)), None)
    if found is None:
        pytest.skip(f"{name} is not installed (apt-get install imapfilter dovecot-imapd)")
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _user(*names: str) -> pwd.struct_passwd:
    for name in names:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    pytest.skip(f"none of the users {names} exists for Dovecot to run as")


def _dovecot_config(version: str, root: Path, port: int, mail_user: pwd.struct_passwd) -> str:
    internal, login = _user("dovecot", "nobody").pw_name, _user("dovenull", "nobody").pw_name
    common = f"""
protocols = imap
listen = 127.0.0.1
base_dir = {root}/run
state_dir = {root}/state
instance_name = torokiki-test-{port}
log_path = {root}/dovecot.log
ssl = no
auth_mechanisms = plain login
default_internal_user = {internal}
default_login_user = {login}
mail_uid = {mail_user.pw_uid}
mail_gid = {mail_user.pw_gid}
# Dovecot's own processes read the root-owned temporary folder: run them as root.
service auth {{
  user = root
}}
service auth-worker {{
  user = root
}}
service imap-login {{
  inet_listener imap {{
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"""
    if version.startswith("2.3") or version.startswith("2.2"):
        return f"""disable_plaintext_auth = no
mail_location = maildir:{root}/mail/%u
mail_home = {root}/home/%u
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {root}/passwd
}}
""" + common
    # Dovecot 2.4 (Debian 13) renamed and restructured these settings.
    return f"""dovecot_config_version = 2.4.0
dovecot_storage_version = 2.4.0
auth_allow_cleartext = yes
mail_driver = maildir
mail_path = {root}/mail/%{{user}}
mail_home = {root}/home/%{{user}}
passdb passwd-file {{
  passwd_file_path = {root}/passwd
}}
userdb passwd-file {{
  passwd_file_path = {root}/passwd
}}
""" + common


@dataclass
class Dovecot:
    port: int
    root: Path
    process: subprocess.Popen

    def connect(self) -> imaplib.IMAP4:
        client = imaplib.IMAP4("127.0.0.1", self.port, timeout=10)
        client.login(IMAP_USER, IMAP_PASSWORD)
        return client

    def append(self, *messages: bytes) -> None:
        client = self.connect()
        try:
            for message in messages:
                status, _ = client.append("INBOX", None, None, message)
                assert status == "OK"
        finally:
            client.logout()

    def inbox(self) -> dict[str, set[str]]:
        """Message-ID -> flags of every message in INBOX, \\Deleted ones included."""
        client = self.connect()
        try:
            client.select("INBOX", readonly=True)
            status, data = client.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
            assert status == "OK"
            found = {}
            for item in data:
                if isinstance(item, tuple):
                    flags = set(re.search(rb"FLAGS \(([^)]*)\)", item[0]).group(1).decode().split())
                    msgid = item[1].decode().split(":", 1)[1].strip()
                    found[msgid] = flags
            return found
        finally:
            client.logout()


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def _wait_for_greeting(process: subprocess.Popen, port: int) -> bool:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                if sock.recv(100).startswith(b"* OK"):
                    return True
        except OSError:
            time.sleep(0.1)
    return False


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)   # its own session: the master and its children
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@pytest.fixture
def dovecot():
    """A private Dovecot on 127.0.0.1 with user `gateway`; stopped and removed afterwards."""
    binary = _tool("dovecot")
    if not any(Path(p, "imap").exists() for p in ("/usr/lib/dovecot", "/usr/libexec/dovecot")):
        pytest.skip("Dovecot's IMAP server is not installed (apt-get install dovecot-imapd)")
    if os.geteuid() != 0:
        pytest.skip("the test's Dovecot runs as root (its mail user is nobody); run the tests as root")
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    mail_user = _user("nobody")
    # A short path of its own: Dovecot's unix sockets must fit in 108 bytes.
    root = Path(tempfile.mkdtemp(prefix="tk-dovecot-"))
    process = None
    try:
        root.chmod(0o711)   # the mail user (nobody) must reach mail/ and home/
        for name in ("run", "state"):
            (root / name).mkdir()
        for name in ("mail", "home"):
            (root / name).mkdir()
            os.chown(root / name, mail_user.pw_uid, mail_user.pw_gid)
        (root / "passwd").write_text(f"{IMAP_USER}:{{PLAIN}}{IMAP_PASSWORD}::::::\n")
        (root / "passwd").chmod(0o600)
        for _ in range(5):          # a free port can be taken between probe and bind
            port = _free_port()
            conf = root / "dovecot.conf"
            conf.write_text(_dovecot_config(version, root, port, mail_user))
            with open(root / "dovecot.stderr", "ab") as stderr:   # what comes before log_path is open
                process = subprocess.Popen([binary, "-F", "-c", str(conf)], stdin=subprocess.DEVNULL,
                                           stdout=stderr, stderr=subprocess.STDOUT, start_new_session=True)
            if _wait_for_greeting(process, port):
                break
            _stop(process)
            process = None
            said = _read(root / "dovecot.stderr") + _read(root / "dovecot.log")
            if "Address already in use" not in said:
                break
        if process is None:
            reason = f"Dovecot {version} did not start: {said.strip()[-800:] or '(nothing logged)'}"
            if version.startswith("2.3"):
                pytest.fail(reason)
            pytest.skip(reason + " (only Dovecot 2.3's configuration has been verified)")
        yield Dovecot(port, root, process)
    finally:
        if process is not None:
            _stop(process)
        shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------- imapfilter

@pytest.fixture
def imapfilter(dovecot, pipe_program, pipe_env, tmp_path):
    """imapfilter(**overrides) runs `imapfilter -c config.lua` once and returns the CompletedProcess.

    Settings come from a 0600 settings file, as installed; `overrides` become
    TOROKIKI_IMAP_* environment variables, which win over the file.
    """
    binary = _tool("imapfilter")
    home = tmp_path / "imapfilter-home"
    home.mkdir()
    password_file = tmp_path / "imap-password"
    password_file.write_text(IMAP_PASSWORD + "\n")
    password_file.chmod(0o600)
    settings = tmp_path / "imapfilter.env"
    settings.write_text("\n".join([
        "# the gateway mailbox",
        "TOROKIKI_IMAP_SERVER=127.0.0.1",
        "# wrong on purpose: TOROKIKI_IMAP_PORT in the environment wins",
        "TOROKIKI_IMAP_PORT=1",
        "TOROKIKI_IMAP_SSL=no",
        f"TOROKIKI_IMAP_USER={IMAP_USER}",
        f"TOROKIKI_IMAP_PASSWORD_FILE='{password_file}'",
        f'TOROKIKI_IMAP_PIPE="{pipe_program}"',
        f"TOROKIKI_IMAP_PIPE_CONFIG={os.fspath(pipe_env)}",
        "TOROKIKI_IMAP_PIPE_TIMEOUT=60",
        "TOROKIKI_IMAP_TIMEOUT=20",
        "",
    ]))
    settings.chmod(0o600)

    def run(**overrides: str) -> subprocess.CompletedProcess:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("TOROKIKI_")}
        environ.update(HOME=str(home), IMAPFILTER_HOME=str(home / ".imapfilter"),
                       TOROKIKI_IMAP_SETTINGS=str(settings), TOROKIKI_IMAP_PORT=str(dovecot.port))
        environ.update({f"TOROKIKI_IMAP_{k.upper()}": v for k, v in overrides.items()})
        done = subprocess.run([binary, "-c", str(CONFIG_LUA)], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, env=environ, timeout=IMAPFILTER_TIMEOUT)
        print(f"--- imapfilter exit {done.returncode}\n{done.stdout}{done.stderr}")
        return done

    return run


def test_handled_mail_is_deleted_and_deferred_mail_stays_until_the_website_is_back(
        dovecot, imapfilter, smtp_sink, website):
    dovecot.append(HELP, RESPONSE)
    assert set(dovecot.inbox()) == {"<help-1@example.net>", "<response-1@example.net>"}
    website.control("down")

    first = imapfilter()

    assert first.returncode == 0, first.stderr
    assert "help-1@example.net> (" in first.stdout and ": handled (exit 0), deleted" in first.stdout
    assert "response-1@example.net> (" in first.stdout and ": deferred (exit 75)" in first.stdout
    assert "1 handled, 1 deferred, 0 left with errors, 2 found in INBOX" in first.stdout
    assert first.stderr.startswith("4.4.2 ")        # the gateway's one line, passed through
    assert IMAP_PASSWORD not in first.stdout + first.stderr
    [reply] = smtp_sink.wait_for(1)
    assert list(reply.rcpt_tos) == ["kiri@example.net"]
    assert reply.message()["In-Reply-To"] == "<help-1@example.net>"
    assert "create-response-to" in reply.message().get_body(("plain",)).get_content()
    left = dovecot.inbox()                           # expunged, not merely flagged
    assert list(left) == ["<response-1@example.net>"]
    assert not left["<response-1@example.net>"] & {"\\Deleted", "\\Seen"}
    assert website.stats()["items"] == []

    website.control("ok")
    second = imapfilter()

    assert second.returncode == 0, second.stderr
    assert "1 handled, 0 deferred, 0 left with errors, 1 found in INBOX" in second.stdout
    assert dovecot.inbox() == {}
    [item] = website.stats()["items"]
    assert item["content"]["InspiredBy"] == "http://torokiki.net/image/1/response"
    assert item["content"]["Text"] == "hi"
    _, saved = smtp_sink.wait_for(2)
    assert saved.message()["In-Reply-To"] == "<response-1@example.net>"
    assert item["location"] in saved.message().get_body(("plain",)).get_content()

    third = imapfilter()                             # nothing left: nothing piped, nothing sent
    assert third.returncode == 0 and "0 found in INBOX" in third.stdout
    time.sleep(0.3)
    assert len(smtp_sink.messages) == 2


@pytest.mark.parametrize("victim, told", [
    ("$$", "exit 137"),               # the gateway itself: its shell exits 128 + SIGKILL
    ("$PPID", "killed by signal 9"),  # the shell around it (no timeout(1) between): close() says "signal"
])
def test_a_killed_gateway_leaves_the_message_and_fails_the_run(dovecot, imapfilter, smtp_sink, tmp_path,
                                                               victim, told):
    killed = tmp_path / "killed-pipe"
    killed.write_text(f"#!/bin/sh\ncat >/dev/null\nkill -KILL {victim}\n")
    killed.chmod(0o755)
    dovecot.append(HELP)

    done = imapfilter(pipe=str(killed), pipe_timeout="0")

    assert done.returncode == 1
    assert f": left in INBOX ({told})" in done.stdout
    assert "0 handled, 0 deferred, 1 left with errors" in done.stdout
    assert list(dovecot.inbox()) == ["<help-1@example.net>"]
    assert smtp_sink.messages == []


def test_a_large_message_is_deferred_not_fatal_when_the_gateway_does_not_read_it(
        dovecot, imapfilter, smtp_sink, tmp_path):
    """A config error makes torokiki-pipe exit 75 before reading stdin; 300 kB then
    overflow the pipe, and without the drain imapfilter would die of SIGPIPE."""
    big = mail("help", ("x" * 76 + "\n") * 4000, msgid="<big-1@example.net>")
    assert len(big) > 300_000
    dovecot.append(big, HELP)

    done = imapfilter(pipe_config=str(tmp_path / "missing.env"), max_deferrals="0")

    assert done.returncode == 0, done.stderr
    assert "0 handled, 2 deferred, 0 left with errors, 2 found in INBOX" in done.stdout
    assert "4.3.5 config-error" in done.stderr
    assert set(dovecot.inbox()) == {"<big-1@example.net>", "<help-1@example.net>"}
    assert smtp_sink.messages == []


def test_a_run_stops_after_too_many_deferrals_in_a_row(dovecot, imapfilter, smtp_sink, website):
    dovecot.append(*(mail("create-response-to: 'http://torokiki.net/image/1/response'", "text: 'hi'\n",
                          msgid=f"<r{n}@example.net>") for n in range(3)))
    website.control("down")

    done = imapfilter(max_deferrals="2")

    assert done.returncode == 0
    assert "2 message(s) in a row were left; stopping, 1 not tried this run" in done.stdout
    assert "0 handled, 2 deferred" in done.stdout
    assert len(dovecot.inbox()) == 3 and website.stats()["posts"] == 2


def test_select_unseen_skips_mail_someone_has_read(dovecot, imapfilter, smtp_sink, website):
    client = dovecot.connect()
    try:
        assert client.append("INBOX", "(\\Seen)", None, HELP)[0] == "OK"
        assert client.append("INBOX", None, None, RESPONSE)[0] == "OK"
    finally:
        client.logout()

    done = imapfilter(select="unseen")

    assert "1 handled, 0 deferred, 0 left with errors, 1 found in INBOX" in done.stdout
    assert list(dovecot.inbox()) == ["<help-1@example.net>"]
    assert "1 handled, 0 deferred, 0 left with errors, 1 found in INBOX" in imapfilter().stdout   # all
    assert dovecot.inbox() == {} and len(smtp_sink.wait_for(2)) == 2


def test_dry_run_changes_nothing_and_the_gateway_never_sees_the_imap_password(
        dovecot, imapfilter, smtp_sink, website, tmp_path):
    dovecot.append(HELP)

    done = imapfilter(dry_run="yes", password=IMAP_PASSWORD, password_file="")

    assert done.returncode == 0, done.stderr
    assert ": handled (exit 0) in a dry run, not deleted" in done.stdout
    assert "# outcome: answered (exit 0)" in done.stdout        # the gateway's --dry-run report
    assert list(dovecot.inbox()) == ["<help-1@example.net>"]
    assert smtp_sink.messages == [] and website.stats()["posts"] == 0

    seen = tmp_path / "gateway-environment"
    spy = tmp_path / "spy-pipe"
    spy.write_text(f"#!/bin/sh\ncat >/dev/null\nenv > '{seen}'\nexit 75\n")
    spy.chmod(0o755)
    done = imapfilter(pipe=str(spy), password=IMAP_PASSWORD, password_file="")
    assert "1 deferred" in done.stdout
    assert f"TOROKIKI_IMAP_PORT={dovecot.port}" in seen.read_text()   # really the gateway's environment
    assert IMAP_PASSWORD not in seen.read_text()


def test_the_example_settings_file_parses_and_the_environment_wins(
        dovecot, imapfilter, smtp_sink, pipe_program, pipe_env):
    dovecot.append(HELP)
    done = imapfilter(settings=str(CONFIG_LUA.parent / "settings.env.example"), server="127.0.0.1",
                      ssl="no", user=IMAP_USER, password=IMAP_PASSWORD, pipe=pipe_program,
                      pipe_config=os.fspath(pipe_env))
    assert done.returncode == 0, done.stderr
    assert "1 handled, 0 deferred" in done.stdout and dovecot.inbox() == {}
    smtp_sink.wait_for(1)


@pytest.mark.parametrize("overrides, says", [
    ({"select": "newest"}, "TOROKIKI_IMAP_SELECT must be all or unseen, not newest"),
    ({"mailbox": "No-Such-Box"}, "cannot select No-Such-Box as gateway; nothing was piped"),
    ({"settings": "/nonexistent/imapfilter.env"}, "cannot read the settings file /nonexistent/imapfilter.env"),
    ({"password_file": "/nonexistent/password"}, "cannot read TOROKIKI_IMAP_PASSWORD_FILE"),
    ({"pipe_timeout": "soon"}, "TOROKIKI_IMAP_PIPE_TIMEOUT must be a number"),
])
def test_wrong_settings_stop_before_anything_is_piped(dovecot, imapfilter, smtp_sink, overrides, says):
    dovecot.append(HELP)
    done = imapfilter(**overrides)
    assert done.returncode == 78 and says in done.stderr
    assert list(dovecot.inbox()) == ["<help-1@example.net>"]
    assert smtp_sink.messages == []


# --------------------------------------------------------------------------- the Lua underneath

LUA_FACTS = r"""
local function show(label, a, b, c)
  io.stdout:write(label, ' ', tostring(a), ' ', tostring(b), ' ', tostring(c), '\n')
end
io.stdout:write(_VERSION, '\n')
for _, case in ipairs({ {'exit0', 'cat >/dev/null; exit 0'}, {'exit75', 'cat >/dev/null; exit 75'},
                        {'kill9', 'cat >/dev/null; kill -KILL $$'}, {'term', 'cat >/dev/null; kill -TERM $$'} }) do
  local handle = io.popen(case[2], 'w')
  handle:write('x')
  show(case[1], handle:close())
end
local handle = io.popen('exec wc -c > ' .. os.getenv('COUNT_FILE'), 'w')
handle:write('a\0b\0c')
show('nul', handle:close())
show('pipe_to_kill9', pipe_to('cat >/dev/null; kill -KILL $$', 'x'))
show('pipe_to_exit75', pipe_to('cat >/dev/null; exit 75', 'x'))
"""


def test_the_lua_in_imapfilter_reports_exit_statuses_signals_and_keeps_nul_bytes(tmp_path):
    """The facts config.lua relies on, checked in the installed imapfilter itself."""
    binary = _tool("imapfilter")
    script = tmp_path / "facts.lua"
    script.write_text(LUA_FACTS)
    count = tmp_path / "count"
    environ = {**os.environ, "HOME": str(tmp_path), "COUNT_FILE": str(count)}
    done = subprocess.run([binary, "-c", str(script)], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, env=environ, timeout=30)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] in ("Lua 5.2", "Lua 5.3", "Lua 5.4")
    facts = dict(line.split(" ", 1) for line in lines[1:])
    assert facts["exit0"] == "true exit 0"
    assert facts["exit75"] == "nil exit 75"
    assert facts["kill9"] == "nil signal 9"
    assert facts["term"] == "nil signal 15"
    assert facts["nul"] == "true exit 0" and count.read_text().strip() == "5"
    # imapfilter's own pipe_to() would have reported a killed gateway as a clean exit:
    assert facts["pipe_to_kill9"].startswith("0 ") and facts["pipe_to_exit75"].startswith("75 ")
