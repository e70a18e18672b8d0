"""Adapter: hand a reply to the local mailer (sendmail, or msmtp).

The command comes from configuration as a fixed argument list (never a
shell); the reply goes on stdin and the one recipient after ``--``, so no
header in the reply can add a recipient.  The mailer's exit code is mapped,
never passed on: 75, 69 (msmtp's answer to an SMTP 4xx), 71 and 74 are
temporary; any other failure is permanent.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

TEMPORARY_CODES = frozenset({os.EX_TEMPFAIL, os.EX_UNAVAILABLE, os.EX_OSERR, os.EX_IOERR})
SEND_TIMEOUT = 120  # seconds; far below Postfix's command_time_limit


@dataclass(frozen=True)
class SendResult:
    """Whether sendmail took the reply, and why not."""
    status: str      # "sent" | "temporary" | "permanent"
    detail: str = ""

    @property
    def sent(self) -> bool:
        return self.status == "sent"


class Sendmail:
    def __init__(self, command: tuple[str, ...], null_sender: bool = True):
        self.command = tuple(command)
        # Replies go out with the null envelope sender (-f <>, understood by
        # Postfix's sendmail and msmtp), so a bounce of a reply can never
        # come back to the gateway; unless the command sets a sender itself.
        sets_sender = any(word.startswith(("-f", "-r", "--from")) for word in self.command[1:])
        self.sender_args = ("-f", "<>") if null_sender and not sets_sender else ()

    def argv(self, recipient: str) -> list[str]:
        return [*self.command, *self.sender_args, "--", recipient]

    def send(self, message: bytes, recipient: str) -> SendResult:
        import subprocess   # here: mail that is never answered does not pay for it

        try:
            done = subprocess.run(self.argv(recipient), input=message, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, timeout=SEND_TIMEOUT, close_fds=True)
        except FileNotFoundError:
            return SendResult("temporary", f"{self.command[0]} does not exist")
        except PermissionError:
            return SendResult("temporary", f"{self.command[0]} is not executable")
        except subprocess.TimeoutExpired:
            return SendResult("temporary", f"{self.command[0]} did not finish within {SEND_TIMEOUT} s")
        except OSError as error:
            return SendResult("temporary", f"{self.command[0]}: {error.strerror}")
        if done.returncode == 0:
            return SendResult("sent")
        said = " ".join(done.stderr.decode("utf-8", "replace").split())[:300]
        # Killed by a signal (negative code) says nothing about the reply: try again.
        temporary = done.returncode < 0 or done.returncode in TEMPORARY_CODES
        status = "temporary" if temporary else "permanent"
        return SendResult(status, f"{os.path.basename(self.command[0])} exited {done.returncode}: {said}")
