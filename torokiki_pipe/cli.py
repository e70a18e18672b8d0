"""The command line: argv in, exit code out.

``torokiki-pipe [--config FILE] [--sender ADDR] [--recipient ADDR] [--dry-run] [FILE]``
runs the pipe on one message (`run.run_pipe`); ``torokiki-pipe check|replay|report|link|setup|example|reference-site``
runs an administrator's program (`admin/`; `--help` lists `SUBCOMMANDS`).  Whatever happens, no traceback
reaches stderr: what is not an exit code by now becomes one line that starts
with an RFC 3463 enhanced status code, which Postfix quotes.
"""

from __future__ import annotations

import os
import signal
import sys

from torokiki_pipe.arguments import parse_args
from torokiki_pipe.outcome import Outcome, Stopped, exit_code, say

# Administrator's commands: `torokiki-pipe NAME ...`; the bare command stays the pipe.
SUBCOMMANDS = {"check": "torokiki_pipe.admin.check", "replay": "torokiki_pipe.admin.replay",
               "report": "torokiki_pipe.admin.report", "link": "torokiki_pipe.admin.link",
               "setup": "torokiki_pipe.admin.setup",
               "example": "torokiki_pipe.admin.example", "reference-site": "torokiki_pipe.reference_site.__main__"}
# What `torokiki-pipe --help` says of each; a command without a line here is listed all the same.
SUMMARIES = {"check": "test the configuration, the website and the mailer, one line per finding",
             "report": "summarise logs/: messages per outcome, errors, what waits in the stash folders",
             "replay": "run kept mails through the pipe again (--force, --resend for kept replies)",
             "link": "print the mailto: link of an \"Answer by email\" button for a content URL",
             "setup": "make the changes Postfix needs for the gateway (shown first; --apply makes them)",
             "example": "print an example mail (--list names them), to try the gateway with",
             "reference-site": "run the reference website, to try the whole path before the real one"}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if argv and argv[0] in SUBCOMMANDS:
            return _administer(argv[0], argv[1:])
        args = parse_args(argv, {name: SUMMARIES.get(name, f"see torokiki-pipe {name} --help") for name in SUBCOMMANDS})
        from torokiki_pipe.run import run_pipe   # after the usage check: --help loads no stage

        return run_pipe(args)
    except SystemExit as done:   # --help, --version, usage errors
        return done.code if isinstance(done.code, int) else os.EX_USAGE
    except Stopped as stop:
        say(stop.outcome, stop.detail)
        return exit_code(stop.outcome)
    except BaseException as error:  # the last guard: never a traceback on stderr
        say(Outcome.CRASHED, f"{type(error).__name__} before the message was read")
        return exit_code(Outcome.CRASHED)


def _administer(name: str, argv: list) -> int:
    import gc
    from importlib import import_module

    gc.enable()   # off for a one-message pipe run (see __main__); replay handles many
    signal.signal(signal.SIGTERM, signal.SIG_DFL)          # no pipe run's stop handlers
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return import_module(SUBCOMMANDS[name]).main(argv)
    except BrokenPipeError:     # `torokiki-pipe report | head -1`: the reader has had enough
        from torokiki_pipe.admin.check import silence

        silence(sys.stdout)
        return os.EX_OK


if __name__ == "__main__":
    sys.exit(main())
