"""What more than one test module uses that is not a fixture: constants, mail builders, readers.

Test modules import from here (``from helpers import mail``), never from one
another, so that each test module can be run, moved or removed on its own.
Fixtures stay in conftest.py, which imports its constants from here too.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import time
from pathlib import Path

SITE_URL = "http://torokiki.net"
GATEWAY = "gateway@torokiki.net"
GATEWAY_ADDRESS = GATEWAY
API_KEY = "test-api-key"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def mail(subject, body="", *headers, sender="Kiri Tane <kiri@example.net>", msgid="<m1@example.net>") -> bytes:
    """A plain mail to the gateway, LF line endings; `headers` are extra "Name: value" lines."""
    lines = [f"From: {sender}", f"To: {GATEWAY}", f"Subject: {subject}", f"Message-ID: {msgid}",
             "Date: Tue, 14 May 2024 08:12:24 +1200", *headers]
    return ("\n".join(lines) + "\n\n" + body).encode()


SEED = f"{SITE_URL}/image/1/response"     # content the reference website holds
PHOTO = bytes(range(256)) * 40


def photo_reply(subject: str, *headers: str, msgid: str, words: str = "") -> bytes:
    """A phone's reply with a photo: its words (if any), the quote of our mail, the photo."""
    body = ("--b\nContent-Type: text/plain; charset=utf-8\n\n" + (words + "\n\n" if words else "")
            + "On Tue, 14 May 2024 at 08:12, Torokiki <gateway@torokiki.net> wrote:\n"
            + "> Here is the Torokiki content you asked for:\n>   " + SEED + "\n"
            + "--b\nContent-Type: image/jpeg; name=tram.jpg\nContent-Transfer-Encoding: base64\n\n"
            + base64.encodebytes(PHOTO).decode() + "--b--\n")
    return mail(subject, body, "MIME-Version: 1.0", "Content-Type: multipart/mixed; boundary=b", *headers,
                msgid=msgid)


def files_in(folder: Path) -> list[Path]:
    """The entries of `folder` that are not hidden, sorted; [] when there is no such folder."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".")) if folder.is_dir() else []


def log_lines(pipe_env) -> list[str]:
    """The lines of the gateway's log in `pipe_env`'s log folder."""
    return (pipe_env.log_dir / "torokiki-pipe.log").read_text().splitlines()


def one_status_line(done) -> None:
    """A non-zero exit says why in exactly one line that starts with an enhanced status code."""
    lines = done.stderr.decode("utf-8", "replace").splitlines()
    assert b"Traceback" not in done.stderr
    if done.returncode != 0:
        assert len(lines) == 1 and re.match(r"^4\.\d\.\d ", lines[0]), (done.returncode, lines)


def start(pipe_program, config, data: bytes) -> subprocess.Popen:
    """The installed pipe, started on `data` as Postfix starts it (no TOROKIKI_* variables)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TOROKIKI_")}
    child = subprocess.Popen([pipe_program, "--config", os.fspath(config)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environ)
    child.stdin.write(data)
    child.stdin.close()
    return child


def finish(child: subprocess.Popen, timeout: float = 60) -> subprocess.CompletedProcess:
    out, err = child.stdout.read(), child.stderr.read()
    child.wait(timeout)
    return subprocess.CompletedProcess(child.args, child.returncode, out, err)


def deliver_until_handled(run_pipe, data: bytes, config, attempts: int = 6):
    """What the MTA does: deliver again while the pipe says 'later'."""
    for _ in range(attempts):
        done = run_pipe(data, config=config)
        one_status_line(done)
        if done.returncode == 0:
            return done
        time.sleep(0.1)
    raise AssertionError(f"not handled after {attempts} deliveries: {done.stderr!r}")


def example(name: str) -> bytes:
    """The bytes of examples/<name> (e.g. "03-text-response.eml")."""
    return (EXAMPLES / name).read_bytes()


def write_env_file(path: Path, values: dict[str, str]) -> Path:
    """Write KEY=value lines (dotenv), mode 0600."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as stream:
        for key, value in values.items():
            stream.write(f"{key}={value}\n")
    os.chmod(path, 0o600)
    return path


def reply_links(message) -> dict[str, str]:
    """The links of a reply's HTML part, label -> href (the label is the link's text, spaces folded)."""
    from html.parser import HTMLParser

    links: dict[str, str] = {}
    opened: list[list] = []

    class Links(HTMLParser):
        def handle_starttag(self, tag, attrs):
            if tag == "a":
                opened.append([dict(attrs).get("href") or "", ""])

        def handle_data(self, data):
            if opened:
                opened[-1][1] += data

        def handle_endtag(self, tag):
            if tag == "a" and opened:
                href, label = opened.pop()
                links.setdefault(" ".join(label.split()), href)

    Links(convert_charrefs=True).feed(message.get_body(("html",)).get_content())
    return links


# --------------------------------------------------------------------------- a private Postfix

# Postfix's own services for a private test instance, all without chroot; {port} is smtpd's.
PRIVATE_MASTER_CF = """\
# Written by the tests for a private test instance.
127.0.0.1:{port} inet n -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
anvil     unix  -       -       n       -       1       anvil
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def private_settings(base: Path) -> dict[str, str]:
    """What makes a main.cf a private instance in `base` that relays nothing and only the test retries.

    Routing (mydestination, transport_maps, local_recipient_maps) is left to the test.
    """
    return {
        "queue_directory": f"{base}/spool", "data_directory": f"{base}/data",
        "multi_instance_name": "postfix-torokiki-test", "syslog_name": "postfix-torokiki-test",
        "maillog_file": f"{base}/maillog", "maillog_file_prefixes": str(base),
        "myhostname": "mx.torokiki.test", "mydomain": "torokiki.test", "myorigin": "$myhostname",
        "alias_maps": "", "alias_database": "", "inet_interfaces": "127.0.0.1", "inet_protocols": "ipv4",
        "mynetworks": "127.0.0.0/8", "relayhost": "", "relay_domains": "",
        "default_transport": "error:5.7.1 this test instance relays nothing",
        "relay_transport": "error:5.7.1 this test instance relays nothing",
        "local_transport": "error:5.1.1 no local delivery on this test instance",
        "smtpd_relay_restrictions": "reject_unauth_destination", "smtpd_peername_lookup": "no",
        "biff": "no", "notify_classes": "",
        "queue_run_delay": "3600s", "minimal_backoff_time": "3600s", "maximal_backoff_time": "7200s",
        "import_environment": "MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ LANG=C POSTLOG_SERVICE POSTLOG_HOSTNAME",
        "export_environment": "TZ LANG=C.UTF-8",
    }


# The venv's interpreter can live where an unprivileged user cannot go (pyenv
# under /root, 0700).  Then the pipe user runs the same installed package
# (the venv's site-packages, editable finder included) with the system's
# Python of the same version.
PIPE_SHIM = """\
#!{python} -IS
# torokiki-pipe for a test's pipe user: the venv's packages, this Python.
import site, sys
for folder in {folders!r}:
    site.addsitedir(folder)
from torokiki_pipe.__main__ import main
sys.exit(main())
"""


def runs_as(user: str, command: list[str]) -> bool:
    """Does `command` succeed as `user` (as pipe(8) would start it: no shell, bare PATH)?"""
    import pwd
    import subprocess

    try:
        return subprocess.run(command, user=user, group=pwd.getpwnam(user).pw_gid, extra_groups=[],
                              cwd="/", env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                              capture_output=True, timeout=60).returncode == 0
    except OSError:                         # e.g. the interpreter in the #! line is out of reach
        return False


def program_for(user: str, pipe_program: str, folder: Path) -> str:
    """A path `user` can execute that runs the installed torokiki-pipe (skips the test when none)."""
    import site
    import sys

    import pytest

    if runs_as(user, [pipe_program, "--version"]):
        return pipe_program
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    folders = [p for p in site.getsitepackages() if os.path.isdir(p)]
    for python in (f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"):
        if not os.access(python, os.X_OK) or not runs_as(user, [python, "-IS", "-c", "pass"]):
            continue
        shim = folder / "torokiki-pipe"
        shim.write_text(PIPE_SHIM.format(python=python, folders=folders))
        shim.chmod(0o755)
        if runs_as(user, [str(shim), "--version"]):
            return str(shim)
    pytest.skip(f"user {user} cannot run {pipe_program} (its Python is out of reach) "
                f"and no python{version} of the system can stand in for it")


# The installation postfix/ describes (its master.cf and main.cf), and what a test puts in its place.
POSTFIX_EXAMPLES = Path(__file__).resolve().parent.parent / "postfix"
INSTALLED_PROGRAM = "/opt/torokiki-pipe/bin/torokiki-pipe"
INSTALLED_CONFIG = "/etc/torokiki-pipe/torokiki-pipe.env"
INSTALLED_HOME = "/var/lib/torokiki-pipe"


def torokiki_service(program: str, config: Path, home: Path, user: str) -> str:
    """The `torokiki` entry of postfix/master.cf, with a test's program, env file, folder and user."""
    lines = (POSTFIX_EXAMPLES / "master.cf").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("torokiki "))
    entry = [lines[start]] + [line for line in lines[start + 1:] if line[:1].isspace() and line.strip()]
    text = "\n".join(entry) + "\n"
    for installed, here in ((INSTALLED_PROGRAM, program), (INSTALLED_CONFIG, str(config)),
                            (INSTALLED_HOME, str(home)), ("user=torokiki", f"user={user}")):
        assert installed in text, f"postfix/master.cf no longer mentions {installed}"
        assert not any(c.isspace() for c in here), here
        text = text.replace(installed, here)
    return text


def example_settings(config: Path) -> dict[str, str]:
    """The settings of postfix/main.cf (name -> value), their /etc/postfix/ maps moved into `config`."""
    settings = {}
    for line in (POSTFIX_EXAMPLES / "main.cf").read_text().splitlines():
        if line.strip() and not line.startswith(("#", " ", "\t")):
            name, _, value = line.partition("=")
            settings[name.strip()] = value.strip().replace("/etc/postfix/", f"{config}/")
    return settings


class PipeUserGateway:
    """The gateway as a Postfix pipe user runs it: its env file, msmtprc and logs/ in that user's `home`."""

    def __init__(self, home: Path, pipe_env, msmtp, user: str, **settings: str):
        import pwd
        import shlex

        account = pwd.getpwnam(user)
        self.log_dir = home / "logs"        # created by the gateway itself, as the pipe user
        rc = home / "msmtprc"
        rc.write_text(msmtp.rc.read_text())
        values = {**pipe_env.values, "TOROKIKI_SENDMAIL": shlex.join([msmtp.path, "-C", str(rc)]),
                  "TOROKIKI_LOG_DIR": str(self.log_dir), **settings}
        self.env = home / "torokiki-pipe.env"
        self.env.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
        for path in (rc, self.env):         # msmtp insists on owning its 0600 rc file
            path.chmod(0o600)
            os.chown(path, account.pw_uid, account.pw_gid)

    def log_lines(self) -> list[str]:
        path = self.log_dir / "torokiki-pipe.log"
        return path.read_text().splitlines() if path.exists() else []

    def kept(self, kind: str) -> list[Path]:
        return files_in(self.log_dir / kind)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def processes_in(folder: Path) -> list[int]:
    """Processes working in `folder`: the gateway runs (and their msmtp) a private Postfix started there."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                where = Path(os.readlink(entry / "cwd"))
            except OSError:
                continue
            if where == folder or folder in where.parents:
                found.append(int(entry.name))
    return found


def wait_until(condition, what: str, host, timeout: float = 30):
    """condition()'s first true value within `timeout` s, else fail with `host`'s mail log (a private Postfix)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}\n--- maillog:\n{host.maillog()}")
        time.sleep(0.1)
