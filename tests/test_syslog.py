"""TOROKIKI_SYSLOG=mail against a real syslog daemon: Debian's rsyslog, private.

The test starts its own rsyslogd in the foreground (``-n``) with a config it
writes (``-f``) and a pid file of its own (``-i``): imuxsock listens on a
socket in a temporary folder (the system socket, /dev/log, turned off), and
mail.* goes to a file there, one line per message with its facility and
severity.  No system-wide file is read or written.  The gateway is pointed at
the socket with TOROKIKI_SYSLOG_SOCKET, a mail goes through the installed
pipe, and its summary line must arrive in the file with facility mail.  The
daemon is killed at teardown, also when the test fails; every wait is bounded.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from helpers import example, log_lines

pytestmark = pytest.mark.integration  # a syslog daemon of its own

WAIT = 15.0        # seconds, at most, for the daemon's socket and for a line to arrive

RSYSLOG_CONF = """\
# Written by tests/test_syslog.py for a private rsyslogd.
global(workDirectory="{folder}")
module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket="{socket}")
template(name="probe" type="string"
         string="%syslogfacility-text% %syslogseverity-text% %programname%[%procid%]:%msg%\\n")
mail.* action(type="omfile" file="{log}" template="probe")
"""


class Rsyslog:
    def __init__(self, folder: Path):
        self.folder, self.socket, self.log = folder, folder / "log.sock", folder / "mail.log"

    def lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines() if self.log.exists() else []

    def wait_for(self, words: str) -> list[str]:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            found = [line for line in self.lines() if words in line]
            if found:
                return found
            time.sleep(0.1)
        pytest.fail(f"no line with {words!r} in rsyslog's file within {WAIT:g} s: {self.lines()}")


@pytest.fixture
def rsyslog(tmp_path):
    program = shutil.which("rsyslogd") or shutil.which("rsyslogd", path="/usr/sbin:/sbin")
    if program is None:
        pytest.skip("rsyslog is not installed (apt-get install rsyslog; `make test` does it)")
    folder = tmp_path / "rsyslog"
    folder.mkdir()
    daemon = Rsyslog(folder)
    conf = folder / "rsyslog.conf"
    conf.write_text(RSYSLOG_CONF.format(folder=folder, socket=daemon.socket, log=daemon.log))
    process = subprocess.Popen([program, "-n", "-f", str(conf), "-i", str(folder / "rsyslogd.pid")],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + WAIT
        while not daemon.socket.is_socket():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"rsyslogd did not open {daemon.socket}: {process.stdout.read(4000)!r}")  # type: ignore[union-attr]
            time.sleep(0.05)
        yield daemon
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=WAIT)
        process.stdout.close()  # type: ignore[union-attr]


def test_syslog_mail_reaches_a_real_syslog_daemon(run_pipe, pipe_env, rsyslog):
    config = pipe_env.variant(TOROKIKI_SYSLOG="mail", TOROKIKI_SYSLOG_SOCKET=str(rsyslog.socket))
    done = run_pipe(example("03-text-response.eml"), config=config)
    assert done.returncode == 0, done.stderr
    [logged] = log_lines(pipe_env)
    [line] = rsyslog.wait_for("outcome=saved")
    facility, severity, tag = line.split(" ", 3)[:3]
    assert (facility, severity) == ("mail", "info") and tag.startswith("torokiki-pipe["), line
    # The same summary as logs/, without its time stamp (syslog has its own).
    assert line.split(":", 1)[1].strip() == logged.split(" ", 1)[1], (line, logged)


def test_a_deferred_mail_is_logged_as_a_warning(run_pipe, pipe_env, website, rsyslog):
    website.control("down")
    config = pipe_env.variant(TOROKIKI_SYSLOG="mail", TOROKIKI_SYSLOG_SOCKET=str(rsyslog.socket))
    done = run_pipe(example("03-text-response.eml"), config=config)
    assert done.returncode == os.EX_TEMPFAIL, done.stderr
    [line] = rsyslog.wait_for("exit=75")
    assert line.startswith("mail warning torokiki-pipe["), line


def test_check_finds_the_daemon_and_its_absence(pipe_program, pipe_env, rsyslog, tmp_path):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TOROKIKI_")}

    def check(socket_path):
        config = pipe_env.variant(TOROKIKI_SYSLOG="mail", TOROKIKI_SYSLOG_SOCKET=str(socket_path))
        return subprocess.run([pipe_program, "check", "--config", str(config)], capture_output=True,
                              text=True, timeout=60, env=environ)

    there = check(rsyslog.socket)
    assert f"ok: syslog: a daemon listens on {rsyslog.socket}" in there.stdout, there
    absent = check(tmp_path / "no.sock")
    [warning] = [line for line in absent.stderr.splitlines() if "syslog" in line]
    assert warning.startswith("warning: TOROKIKI_SYSLOG=mail, but there is no socket") and "dropped" in warning
    assert "TOROKIKI_SYSLOG_SOCKET" in warning, warning
    assert absent.returncode == there.returncode       # mail flows without syslog: a warning, not a problem
    assert rsyslog.lines() == []                      # check sends nothing to syslog


def test_the_datagram_is_what_glibc_writes():
    from torokiki_pipe.adapters import syslogger

    when = time.struct_time((2026, 12, 2, 7, 5, 9, 2, 336, 0))
    data = syslogger.line_for("outcome=saved exit=0", syslogger.LOG_INFO, when, 4242)
    assert data == b"<22>Dec  2 07:05:09 torokiki-pipe[4242]: outcome=saved exit=0"     # mail.info: 2*8+6
    assert syslogger.line_for("x", syslogger.LOG_WARNING, when, 1).startswith(b"<20>")
    assert len(syslogger.line_for("\u00e9" * 10_000, syslogger.LOG_INFO, when, 1)) == syslogger.MAX_LINE_BYTES


def test_no_daemon_is_said_not_raised(tmp_path):
    from torokiki_pipe.adapters import syslogger

    assert syslogger.send(str(tmp_path / "absent.sock"), "x") == f"there is no socket {tmp_path / 'absent.sock'}"
    (tmp_path / "file").write_text("")
    assert syslogger.send(str(tmp_path / "file"), "x").startswith(f"nothing listens on {tmp_path / 'file'}")
