"""The sendmail adapter against real mailers: shell stand-ins that misbehave, msmtp, the outbox.

Every stand-in is a real program written into tmp_path and run by Sendmail.send exactly
as the gateway runs it; nothing is mocked.  A stand-in that leaves a process behind
writes its pid to a file, and the test kills it at the end.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from torokiki_pipe.devtools import outbox
from torokiki_pipe.adapters.sendmail import SEND_TIMEOUT, STDERR_KEPT, Sendmail, SendResult

pytestmark = pytest.mark.integration  # real mailers: stand-in programs and msmtp

RECIPIENT = "kiri@example.net"
HEAD = (b"From: Torokiki <gateway@torokiki.net>\nTo: kiri@example.net\nSubject: adapter\n"
        b"Date: Tue, 14 May 2024 08:02:05 +1200\nMessage-ID: <adapter-test@torokiki.net>\n\n")
MB = 1024 * 1024
UNREAD = re.compile(r"exited 0 without reading the whole reply \((\d+) of (\d+) bytes unread\)")


def reply(size: int) -> bytes:
    """A reply of exactly `size` bytes (at least the head), lines of 76 characters."""
    line = b"x" * 75 + b"\n"
    body = line * ((size - len(HEAD)) // len(line) + 1)
    return (HEAD + body)[:size]


def program(tmp_path: Path, script: str, name: str = "sendmail") -> Path:
    """An executable sh stand-in; $DIR in it is tmp_path."""
    path = tmp_path / name
    path.write_text("#!/bin/sh\nDIR=" + shlex.quote(str(tmp_path)) + "\n" + textwrap.dedent(script))
    path.chmod(0o755)
    return path


def python_program(tmp_path: Path, code: str, name: str = "sendmail") -> Path:
    path = tmp_path / name
    path.write_text(f"#!{sys.executable}\n" + textwrap.dedent(code))
    path.chmod(0o755)
    return path


def send(path: Path, message: bytes, timeout: float = SEND_TIMEOUT) -> tuple[SendResult, float]:
    started = time.monotonic()
    result = Sendmail((str(path),), null_sender=True, timeout=timeout).send(message, RECIPIENT)
    return result, time.monotonic() - started


def alive(pid: int) -> bool:
    """Running (a zombie, or no such process, counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def gone_within(pid: int, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.02)
    return False


def read_pid(path: Path, seconds: float = 10) -> int:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        text = path.read_text().strip() if path.exists() else ""
        if text:
            return int(text)
        time.sleep(0.02)
    raise AssertionError(f"{path} got no pid within {seconds} s")


@pytest.fixture
def leftovers():
    """Pids to SIGKILL when the test ends (what a stand-in left behind)."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


@pytest.fixture(params=["pidfd", "polling"])
def exit_watch(request, monkeypatch):
    """Both ways the adapter learns that the mailer exited: pidfd (Linux >= 5.3) and polling."""
    if request.param == "pidfd" and not hasattr(os, "pidfd_open"):
        pytest.skip("os.pidfd_open is missing here")
    if request.param == "polling":
        monkeypatch.delattr(os, "pidfd_open", raising=False)
    return request.param


# --------------------------------------------------------------------------- sent

@pytest.mark.parametrize("size", [0, 200, 2 * MB])
def test_a_mailer_that_reads_all_and_exits_0_sent_it(tmp_path, size, exit_watch):
    path = program(tmp_path, """\
        printf '%s\\n' "$@" > "$DIR/args"
        cat > "$DIR/got"
    """)
    message = reply(size) if size else b""
    result, _ = send(path, message)
    assert result == SendResult("sent") and result.sent
    assert (tmp_path / "got").read_bytes() == message
    assert (tmp_path / "args").read_text().split("\n")[:-1] == ["-f", "<>", "--", RECIPIENT]


def test_the_mailer_gets_only_its_three_descriptors(tmp_path):
    # close_fds and close-on-exec pipes: the mailer cannot hold the gateway's other files
    # (the journal lock, the log) or its own stdin's write end, which would block its EOF.
    path = python_program(tmp_path, """\
        import os, sys
        sys.stdin.buffer.read()
        fds = " ".join(os.listdir("/proc/self/fd"))
        open(os.path.join(os.path.dirname(__file__), "fds"), "w").write(fds)
    """)
    held = os.open(tmp_path / "held", os.O_CREAT | os.O_WRONLY)
    os.set_inheritable(held, True)
    try:
        assert send(path, reply(5000))[0].sent
    finally:
        os.close(held)
    fds = set((tmp_path / "fds").read_text().split())
    assert fds - {"0", "1", "2"} <= {"3"}        # 3: the listing of /proc/self/fd itself


# --------------------------------------------------------------------------- exit 0, reply not read

@pytest.mark.parametrize("size", [200, 2 * MB])
def test_exit_0_without_reading_is_never_sent(tmp_path, size, exit_watch):
    result, _ = send(program(tmp_path, "exit 0\n"), reply(size))
    assert result.status == "temporary" and not result.sent
    assert UNREAD.search(result.detail).groups() == (str(size), str(size)), result.detail
    assert result.detail.startswith("sendmail exited 0 without reading")


def test_exit_0_after_closing_stdin_is_never_sent(tmp_path):
    result, _ = send(program(tmp_path, "exec 0<&-\nsleep 0.2\nexit 0\n"), reply(3000))
    assert result.status == "temporary"
    assert UNREAD.search(result.detail).groups() == ("3000", "3000")


def test_exit_0_after_reading_half_is_never_sent(tmp_path, exit_watch):
    size = 2 * MB
    result, _ = send(program(tmp_path, "head -c 1048576 >/dev/null\nexit 0\n"), reply(size))
    assert result.status == "temporary", result
    unread, total = map(int, UNREAD.search(result.detail).groups())
    assert total == size and 0 < unread < size


def test_exit_0_one_byte_short_is_never_sent(tmp_path, exit_watch):
    # Exact reads (os.read, no read-ahead): exactly one byte stays in the pipe.
    size = 300_000
    path = python_program(tmp_path, f"""\
        import os
        left = {size - 1}
        while left:
            left -= len(os.read(0, min(left, 65536)))
    """)
    result, _ = send(path, reply(size))
    assert result.status == "temporary"
    assert UNREAD.search(result.detail).groups() == ("1", str(size))


def test_exit_0_unread_says_what_the_mailer_said(tmp_path):
    result, _ = send(program(tmp_path, "echo 'no account configured' >&2\nexit 0\n"), reply(200))
    assert result.status == "temporary"
    assert result.detail.endswith(": no account configured")


# --------------------------------------------------------------------------- what the mailer leaves behind

def test_a_background_child_holding_stdout_and_stderr_does_not_hold_the_gateway(tmp_path, leftovers,
                                                                                  exit_watch):
    path = program(tmp_path, """\
        cat >/dev/null
        sleep 300 &
        echo $! > "$DIR/bg"
        exit 0
    """)
    result, took = send(path, reply(2 * MB))
    leftovers.append(read_pid(tmp_path / "bg"))
    assert result == SendResult("sent")
    assert took < 30
    assert alive(leftovers[0])      # left alone: a mailer's background child may be the one delivering


def test_a_background_child_writing_stderr_forever_does_not_hold_the_gateway(tmp_path, leftovers):
    path = program(tmp_path, """\
        cat >/dev/null
        yes 'noise from a grandchild' >&2 &
        echo $! > "$DIR/bg"
        echo 'queue full' >&2
        exit 75
    """)
    result, took = send(path, reply(1000))
    leftovers.append(read_pid(tmp_path / "bg"))
    assert result.status == "temporary" and result.detail.startswith("sendmail exited 75: ")
    assert took < 30
    assert len(result.detail) < 400


def test_ten_megabytes_on_stderr_before_reading_is_bounded(tmp_path):
    # Written before the mailer reads its stdin: the adapter must read stderr while it
    # writes the reply, or both sides wait for each other until the timeout.
    path = program(tmp_path, """\
        head -c 10485760 /dev/zero | tr '\\0' 'e' >&2
        cat >/dev/null
        echo 'mailbox full' >&2
        exit 75
    """)
    result, took = send(path, reply(2 * MB), timeout=60)
    assert result.status == "temporary"
    assert result.detail.startswith("sendmail exited 75: …") and result.detail.endswith("mailbox full")
    assert len(result.detail) <= 400
    assert took < 30


def test_stderr_becomes_one_printable_line(tmp_path):
    path = program(tmp_path, r"""
        cat >/dev/null
        printf 'no such\tuser\033[31m\n\nsecond  line\n' >&2
        exit 67
    """)
    result, _ = send(path, reply(100))
    assert result == SendResult("permanent", "sendmail exited 67: no such user [31m second line")


def test_a_long_stderr_that_fits_keeps_its_beginning(tmp_path):
    words = " ".join(f"w{n}" for n in range(500))            # < STDERR_KEPT, > 300 characters
    assert len(words) < STDERR_KEPT
    result, _ = send(program(tmp_path, f"cat >/dev/null\necho '{words}' >&2\nexit 1\n"), reply(100))
    said = result.detail.split(": ", 1)[1]
    assert said.startswith("w0 w1 w2 ") and said.endswith("…") and len(said) == 300


# --------------------------------------------------------------------------- never finishes

@pytest.mark.parametrize("size", [200, 2 * MB])
def test_a_mailer_that_never_reads_nor_exits_is_killed_with_its_group(tmp_path, size, leftovers,
                                                                      exit_watch):
    path = program(tmp_path, """\
        echo $$ > "$DIR/pid"
        sleep 300 &
        echo $! > "$DIR/bg"
        sleep 300
    """)
    result, took = send(path, reply(size), timeout=1.5)
    mailer, background = read_pid(tmp_path / "pid"), read_pid(tmp_path / "bg")
    leftovers.extend([mailer, background])
    assert result.status == "temporary"
    assert result.detail == "sendmail did not finish within 1.5 s and was killed"
    assert took < 30
    assert gone_within(mailer) and gone_within(background)     # the whole process group


def test_default_timeout_is_send_timeout():
    assert Sendmail(("/usr/sbin/sendmail",)).timeout == SEND_TIMEOUT == 120


def test_an_interrupted_send_kills_the_mailer(tmp_path, leftovers):
    # The gateway's own run alarm (cli.py) raises inside send(): the mailer must not live on.
    path = program(tmp_path, "echo $$ > \"$DIR/pid\"\nsleep 300\n")
    driver = textwrap.dedent(f"""\
        import signal, sys
        from torokiki_pipe.adapters.sendmail import Sendmail
        class Alarm(Exception):
            pass
        def ring(signum, frame):
            raise Alarm()
        signal.signal(signal.SIGALRM, ring)
        signal.alarm(1)
        try:
            Sendmail(({str(path)!r},), timeout=60).send(b"x" * 100, "kiri@example.net")
        except Alarm:
            sys.exit(3)
    """)
    done = subprocess.run([sys.executable, "-c", driver], capture_output=True, timeout=60)
    mailer = read_pid(tmp_path / "pid")
    leftovers.append(mailer)
    assert done.returncode == 3, done.stderr
    assert gone_within(mailer)


# --------------------------------------------------------------------------- signals

def test_a_mailer_killed_by_a_signal_is_temporary(tmp_path):
    result, _ = send(program(tmp_path, "cat >/dev/null\nkill -9 $$\n"), reply(1000))
    assert result == SendResult("temporary", "sendmail was killed by SIGKILL")


def test_sigterm_to_the_pipes_process_group_does_not_reach_the_mailer(tmp_path, leftovers):
    # The MTA (or an administrator) signals the pipe's process group; the mailer is in its
    # own session, so it finishes the hand-over whatever happens to the gateway.
    path = program(tmp_path, """\
        echo $$ > "$DIR/pid"
        cat > "$DIR/got"
        : > "$DIR/started"
        n=0
        while [ ! -e "$DIR/go" ] && [ $n -lt 400 ]; do sleep 0.05; n=$((n + 1)); done
        : > "$DIR/done"
    """)
    driver = (f"from torokiki_pipe.adapters.sendmail import Sendmail\n"
              f"print(Sendmail(({str(path)!r},), timeout=60).send(b'kia ora\\n' * 1000, 'kiri@example.net'))\n")
    pipe = subprocess.Popen([sys.executable, "-c", driver], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        read_pid(tmp_path / "pid")
        leftovers.append(read_pid(tmp_path / "pid"))
        deadline = time.monotonic() + 20
        while not (tmp_path / "started").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert (tmp_path / "started").exists()
        os.killpg(pipe.pid, signal.SIGTERM)         # the pipe's group: the gateway only
        assert pipe.wait(timeout=20) == -signal.SIGTERM
        assert alive(leftovers[0])
        (tmp_path / "go").touch()
        deadline = time.monotonic() + 20
        while not (tmp_path / "done").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert (tmp_path / "done").exists()         # the mailer finished its work
        assert (tmp_path / "got").read_bytes() == b"kia ora\n" * 1000
    finally:
        if pipe.poll() is None:
            pipe.kill()
            pipe.wait(timeout=20)


# --------------------------------------------------------------------------- exit codes

@pytest.mark.parametrize("code, status", [(75, "temporary"), (69, "temporary"), (71, "temporary"),
                                          (74, "temporary"), (67, "permanent"), (1, "permanent"),
                                          (78, "permanent")])
def test_exit_codes_after_reading(tmp_path, code, status):
    result, _ = send(program(tmp_path, f"cat >/dev/null\necho 'why {code}' >&2\nexit {code}\n"), reply(500))
    assert result == SendResult(status, f"sendmail exited {code}: why {code}")


def test_a_failure_without_reading_keeps_its_exit_code(tmp_path):
    # Unread bytes matter only for exit 0: a refusal is a refusal.
    result, _ = send(program(tmp_path, "exit 67\n"), reply(2 * MB))
    assert result == SendResult("permanent", "sendmail exited 67: ")


# --------------------------------------------------------------------------- cannot start

def test_a_missing_mailer_is_temporary(tmp_path):
    result, _ = send(tmp_path / "nowhere" / "sendmail", reply(100))
    assert result == SendResult("temporary", f"{tmp_path}/nowhere/sendmail does not exist")


def test_a_mailer_that_is_not_executable_is_temporary(tmp_path):
    path = program(tmp_path, "cat >/dev/null\n")
    path.chmod(0o644)
    assert send(path, reply(100))[0] == SendResult("temporary", f"{path} is not executable")


def test_a_folder_as_mailer_is_temporary(tmp_path):
    assert send(tmp_path, reply(100))[0].status == "temporary"


def test_a_mailer_that_cannot_be_run_is_temporary(tmp_path):
    path = tmp_path / "no-interpreter-line"
    path.write_bytes(b"\x7fELF garbage")
    path.chmod(0o755)
    result, _ = send(path, reply(100))
    assert result.status == "temporary" and result.detail.startswith(f"{path}: ")


def test_no_descriptor_is_left_open(tmp_path):
    before = set(os.listdir("/proc/self/fd"))
    for script in ("cat >/dev/null\n", "exit 0\n", "exit 75\n", "sleep 300\n"):
        send(program(tmp_path, script), reply(100_000), timeout=0.5)
    send(tmp_path / "missing", reply(100))
    assert set(os.listdir("/proc/self/fd")) == before


# --------------------------------------------------------------------------- the real mailers

def test_msmtp_delivers_a_5mb_reply_byte_exact(msmtp, smtp_sink):
    lines = [f"{n:08d} ".encode() + b"y" * 68 for n in range(5 * MB // 78)]
    lines[1::1000] = [b"." + line for line in lines[1::1000]]         # dot-stuffing on the way
    message = HEAD + b"\n".join(lines) + b"\n"
    result = Sendmail(tuple(shlex.split(msmtp.command)), null_sender=True).send(message, RECIPIENT)
    assert result == SendResult("sent")
    [received] = smtp_sink.wait_for(1)
    assert received.mail_from == "<>" and received.rcpt_tos == (RECIPIENT,)
    assert len(received.data) > 5 * MB
    assert received.data == message.replace(b"\n", b"\r\n")


def test_msmtp_without_a_server_is_temporary(msmtp, tmp_path):
    import socket
    with socket.socket() as probe:                  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    rc = tmp_path / "msmtprc-nowhere"
    rc.write_text(re.sub(r"^port \d+$", f"port {port}", msmtp.rc.read_text(), flags=re.M))
    rc.chmod(0o600)
    result = Sendmail((msmtp.path, "-C", str(rc))).send(HEAD + b"hello\n", RECIPIENT)
    assert result.status == "temporary", result
    assert result.detail.startswith("msmtp exited ")


def test_the_outbox_reads_all_of_a_5mb_reply(tmp_path):
    box = tmp_path / "box"
    message = reply(5 * MB)
    command = (sys.executable, "-m", "torokiki_pipe.devtools.outbox", str(box), "-i")
    assert Sendmail(command).send(message, RECIPIENT) == SendResult("sent")
    [stored] = outbox.messages(box)
    assert stored.read_bytes() == (b"X-Outbox-Envelope-From: <>\nX-Outbox-Envelope-To: kiri@example.net\n"
                                   + message)


def test_out_of_descriptors_is_temporary_and_leaks_none(tmp_path):
    # Every descriptor taken but `free` of them: each step of the hand-over (two pipes,
    # Popen's own, /dev/null, the pidfd) in turn cannot get one.  Never an exception.
    path = program(tmp_path, "cat >/dev/null\n")
    driver = textwrap.dedent(f"""\
        import os, resource
        import fcntl, select, subprocess, termios     # what send() imports: importing takes a descriptor
        from torokiki_pipe.adapters.sendmail import Sendmail

        def open_count():
            count = 0
            for fd in range(256):
                try:
                    os.fstat(fd)
                    count += 1
                except OSError:
                    pass
            return count

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        held = []
        while True:
            try:
                held.append(os.open("/dev/null", os.O_RDONLY))
            except OSError:
                break
        for free in range(12):
            released = [held.pop() for _ in range(free)]
            for fd in released:
                os.close(fd)
            open_before = open_count()
            result = Sendmail(({str(path)!r},)).send(b"x" * 100, "kiri@example.net")
            print(free, result.status, open_count() == open_before, result.detail)
            held.extend(os.open("/dev/null", os.O_RDONLY) for _ in released)
    """)
    done = subprocess.run([sys.executable, "-c", driver], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    rows = [line.split(" ", 3) for line in done.stdout.decode().splitlines()]
    assert len(rows) == 12
    assert all(status in ("temporary", "sent") and same == "True" for _, status, same, _ in rows), rows
    assert [status for _, status, _, _ in rows[:4]] == ["temporary"] * 4, rows
    assert rows[-1][1] == "sent", rows
