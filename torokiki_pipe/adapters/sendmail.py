"""Adapter: hand a reply to the local mailer (sendmail, or msmtp).

The command comes from configuration as a fixed argument list (never a
shell); the reply goes on stdin and the one recipient after ``--``, so no
header in the reply can add a recipient.  ``Sendmail.send`` returns a
``SendResult`` and never raises for anything the mailer does:

* The reply is whole before the mailer starts: its stdin is an in-memory
  file (memfd) holding every byte, not a pipe the gateway is still writing.
  A sendmail cannot tell a writer that died from the end of a message, so
  with a pipe a gateway killed (SIGKILL, OOM) after the start and before the
  last byte made the mailer send an empty or cut reply, and the next
  delivery the real one.  Now a mailer that was started always has the whole
  reply, whatever happens to the gateway.
* "sent" only when the mailer exited 0 *and* took every byte of the reply:
  the file's offset, shared with the mailer, says how far it read.  A mailer
  that exits 0 with bytes left did not send the reply (a misconfigured
  mailer): that is "temporary", so the MTA keeps the mail queued until it is
  fixed.
* One deadline (``timeout``, default ``SEND_TIMEOUT``) for the whole
  hand-over.  When it passes, the mailer's whole process group is killed
  and the result is "temporary".
* The mailer's output is never waited for: stdout goes to /dev/null and
  stderr is read only until the mailer itself exited (plus what is already
  in the pipe), its last ``STDERR_KEPT`` bytes kept.  A background child
  that keeps them open costs nothing and is left alone (it may be the one
  delivering).
* The mailer runs in its own session, so a SIGTERM or SIGINT sent to the
  pipe's process group (an administrator stopping the MTA) does not stop it
  half-way; the gateway decides when to stop.  If the gateway's own code
  interrupts ``send`` (its run alarm, a signal handler raising), the
  mailer's process group is killed before the exception goes on, so no
  mailer outlives an unfinished hand-over unseen.
* The exit code is mapped, never passed on: 75, 69 (msmtp's answer to an
  SMTP 4xx), 71 and 74 are temporary, and so is death by a signal (it says
  nothing about the reply); any other failure is permanent.  A missing or
  unrunnable program is temporary (the administrator's mistake).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from typing import TYPE_CHECKING, NamedTuple

from torokiki_pipe.stages.s8_record import one_line

if TYPE_CHECKING:
    from typing import Literal

    # What the mailer made of a reply.
    SendStatus = Literal["sent", "temporary", "permanent"]

TEMPORARY_CODES = frozenset({os.EX_TEMPFAIL, os.EX_UNAVAILABLE, os.EX_OSERR, os.EX_IOERR})
SEND_TIMEOUT = 120      # seconds; far below Postfix's command_time_limit
STDERR_KEPT = 4096      # bytes of the mailer's stderr kept (the last ones)
DETAIL_CHARS = 300      # of that stderr, in SendResult.detail
EXIT_GRACE = 0.1        # seconds to take stderr already written when the mailer exited
_POLL = 0.05            # seconds between exit checks when pidfd_open is missing
_CHUNK = 1024 * 1024    # bytes per write(2); the kernel takes what fits


class SendResult(NamedTuple):
    """Whether sendmail took the reply, and why not."""
    status: SendStatus          # "sent" | "temporary" | "permanent"
    detail: str = ""

    @property
    def sent(self) -> bool:
        return self.status == "sent"


class Sendmail:
    def __init__(self, command: tuple[str, ...], null_sender: bool = True, timeout: float = SEND_TIMEOUT,
                 smtputf8: str = "auto"):
        self.command = tuple(command)
        self.smtputf8_setting = smtputf8        # TOROKIKI_SMTPUTF8: "auto", "yes" or "no"
        # Replies go out with the null envelope sender (-f <>, understood by
        # Postfix's sendmail and msmtp), so a bounce of a reply can never
        # come back to the gateway; unless the command sets a sender itself.
        sets_sender = any(word.startswith(("-f", "-r", "--from")) for word in self.command[1:])
        self.sender_args = ("-f", "<>") if null_sender and not sets_sender else ()
        self.timeout = timeout

    def smtputf8(self) -> tuple[bool, str]:
        """Whether the command carries an internationalised address (SMTPUTF8), and how that is known."""
        if self.smtputf8_setting in ("yes", "no"):
            return self.smtputf8_setting == "yes", f"TOROKIKI_SMTPUTF8={self.smtputf8_setting}"
        return detect_smtputf8(self.command)

    def argv(self, recipient: str) -> list[str]:
        return [*self.command, *self.sender_args, "--", recipient]

    def send(self, message: bytes, recipient: str) -> SendResult:
        deadline = time.monotonic() + self.timeout
        program = self.command[0]
        # The reply file and stderr's pipe are ours and close-on-exec: the child
        # gets only its ends as fd 0 and 2.
        try:
            reply = _whole_file(message)
        except OSError as error:        # out of memory or descriptors: a passing condition
            return SendResult("temporary", f"cannot start {program}: {error.strerror or error}")
        fds = _Fds(reply, None)
        try:
            err_read, err_write = os.pipe()
        except OSError as error:
            fds.close_all()
            return SendResult("temporary", f"cannot start {program}: {error.strerror or error}")
        fds.err_read = err_read
        try:
            try:
                child = subprocess.Popen(self.argv(recipient), stdin=reply, stdout=subprocess.DEVNULL,
                                         stderr=err_write, close_fds=True, start_new_session=True)
            finally:
                os.close(err_write)     # else stderr never reaches EOF
        except FileNotFoundError:
            fds.close_all()
            return SendResult("temporary", f"{program} does not exist")
        except PermissionError:
            fds.close_all()
            return SendResult("temporary", f"{program} is not executable")
        except OSError as error:
            fds.close_all()
            return SendResult("temporary", f"{program}: {error.strerror or error}")
        try:
            return _hand_over(child, len(message), fds, deadline, self.timeout, os.path.basename(program))
        finally:
            if child.returncode is None:    # timed out, or interrupted by the gateway itself
                _kill_group(child)
            fds.close_all()


def _whole_file(message: bytes) -> int:
    """A close-on-exec descriptor of a file holding `message`, at offset 0: in memory where
    Linux has memfd_create, else an unnamed temporary file."""
    try:
        fd = os.memfd_create("torokiki-reply", os.MFD_CLOEXEC)
    except (AttributeError, OSError):
        import tempfile

        fd = os.dup(tempfile.TemporaryFile().fileno())   # the dup is close-on-exec too
    try:
        view = memoryview(message)
        while view:
            view = view[os.write(fd, view[:_CHUNK]):]
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


class _Fds:
    """The parent's descriptors, each closed once (early or at the end)."""

    def __init__(self, reply: int, err_read: int | None):
        self.reply, self.err_read = reply, err_read
        self.pidfd: int | None = None

    def close(self, name: str) -> None:
        fd = getattr(self, name)
        if fd is not None:
            setattr(self, name, None)
            os.close(fd)

    def close_all(self) -> None:
        for name in ("err_read", "reply", "pidfd"):
            self.close(name)


def _hand_over(child, total: int, fds: _Fds, deadline: float, timeout: float, name: str) -> SendResult:
    """Wait for the mailer (reading its stderr) until it exits or the deadline passes."""
    stderr = _Tail(STDERR_KEPT)
    os.set_blocking(fds.err_read, False)    # type: ignore[arg-type]  # send() opened it
    try:    # readable when the child exits: no polling (Linux >= 5.3)
        fds.pidfd = os.pidfd_open(child.pid)
    except (AttributeError, OSError):
        fds.pidfd = None
    while child.poll() is None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:      # send()'s caller kills the process group
            said = stderr.text(DETAIL_CHARS)
            return SendResult("temporary", f"{name} did not finish within {timeout:g} s and was killed"
                                           + (f": {said}" if said else ""))
        poller = select.poll()      # not select.select: no limit on descriptor numbers
        for fd in (fds.err_read, fds.pidfd):
            if fd is not None:
                poller.register(fd, select.POLLIN)
        wait = remaining if fds.pidfd is not None else min(remaining, _POLL)
        ready = dict(poller.poll(wait * 1000 + 1))
        if fds.err_read is not None and ready.get(fds.err_read):
            stderr.take(fds, "err_read")    # closes it at EOF; the child may still run
    # The child exited: what it wrote is in the pipe already.  Take that, but
    # never wait for a grandchild that still holds stderr (or keeps writing).
    grace = time.monotonic() + EXIT_GRACE
    while fds.err_read is not None and time.monotonic() < grace and stderr.take(fds, "err_read"):
        pass
    # The mailer's stdin shares this descriptor's offset: how far it read.
    unread = total - min(total, os.lseek(fds.reply, 0, os.SEEK_CUR))
    code = child.returncode
    said = stderr.text(DETAIL_CHARS)
    if code == 0 and unread:
        return SendResult("temporary", f"{name} exited 0 without reading the whole reply "
                                       f"({unread} of {total} bytes unread)" + (f": {said}" if said else ""))
    if code == 0:
        return SendResult("sent")
    if code < 0:
        return SendResult("temporary", f"{name} was killed by {_signal_name(-code)}" + (f": {said}" if said else ""))
    status: SendStatus = "temporary" if code in TEMPORARY_CODES else "permanent"
    return SendResult(status, f"{name} exited {code}: {said}")


class _Tail:
    """The last `size` bytes read from a non-blocking pipe."""

    def __init__(self, size: int):
        self.size, self.data, self.dropped = size, bytearray(), False

    def take(self, fds: _Fds, name: str) -> bool:
        """Read once; False at EOF or when nothing is there (the fd may be closed then)."""
        fd = getattr(fds, name)
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return False
        if not chunk:
            fds.close(name)
            return False
        self.data += chunk
        if len(self.data) > self.size:
            del self.data[:-self.size]
            self.dropped = True
        return True

    def text(self, limit: int) -> str:
        """One printable line: the start when all was kept, else the end (the last words)."""
        words = one_line(self.data.decode("utf-8", "replace"))
        if self.dropped:
            return "…" + words[-(limit - 1):]
        return words if len(words) <= limit else words[:limit - 1] + "…"


POSTCONF_TIMEOUT = 10      # seconds; postconf reads main.cf and answers at once


def detect_smtputf8(command: tuple[str, ...]) -> tuple[bool, str]:
    """TOROKIKI_SMTPUTF8=auto: (whether `command` carries SMTPUTF8, how that was found).

    Postfix's sendmail does when its smtputf8_enable is yes: it then asks for
    SMTPUTF8 by itself for mail whose envelope or headers are UTF-8
    (smtputf8_autodetect_classes).  The command is Postfix's sendmail when it
    is the file Postfix's own `sendmail_path` names (`postconf` beside it, or
    in /usr/sbin; a ``-C dir`` of the command is its configuration).  msmtp
    does not: 1.8.23 sends a UTF-8 address without the SMTPUTF8 parameter of
    MAIL FROM, even to a server that offers it (RFC 6531 asks for it), so a
    server on the way may refuse or mangle the reply.  Any other command: not
    known, so no.
    """
    import shutil

    program = os.path.realpath(command[0])
    name = os.path.basename(program)
    if name.startswith("msmtp"):
        return False, (f"{name} sends no SMTPUTF8 request; set TOROKIKI_SMTPUTF8=yes only if its "
                       "server takes UTF-8 addresses without one")
    beside = os.path.join(os.path.dirname(command[0]), "postconf")
    postconf = beside if os.access(beside, os.X_OK) else shutil.which("postconf", path="/usr/sbin:/usr/bin")
    if postconf is None:
        return False, f"cannot tell whether {name} carries SMTPUTF8 (no Postfix postconf); set TOROKIKI_SMTPUTF8"
    words = list(command[1:])
    config = ["-c", words[words.index("-C") + 1]] if "-C" in words[:-1] else []
    try:
        asked = subprocess.run([postconf, *config, "-xh", "sendmail_path", "smtputf8_enable"],
                               capture_output=True, timeout=POSTCONF_TIMEOUT, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as error:
        return False, f"postconf failed ({type(error).__name__}): cannot tell whether {name} carries SMTPUTF8"
    lines = asked.stdout.decode("utf-8", "replace").split()
    if asked.returncode != 0 or len(lines) != 2:
        said = one_line(asked.stderr.decode("utf-8", "replace"), DETAIL_CHARS)
        return False, f"postconf failed ({said or asked.returncode}): cannot tell whether {name} carries SMTPUTF8"
    sendmail_path, enabled = lines
    if os.path.realpath(sendmail_path) != program:
        return False, (f"{command[0]} is not Postfix's sendmail ({sendmail_path}): not known to carry "
                       "SMTPUTF8; set TOROKIKI_SMTPUTF8")
    return enabled == "yes", f"Postfix's sendmail, smtputf8_enable = {enabled}"


def _kill_group(child) -> None:
    """SIGKILL the mailer's session's process group (its pid: it leads it) and reap it."""
    for kill in (lambda: os.killpg(child.pid, signal.SIGKILL), child.kill):
        try:
            kill()
        except OSError:     # already gone, or it left the group
            pass
    try:
        child.wait(timeout=5)
    except subprocess.TimeoutExpired:   # stuck in the kernel: nothing more to do
        pass


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
