"""The command lines' grammar: argparse set up, nothing of the pipe loaded.

`report`, `replay` and `check` import `UsageParser` from here, so that their
help and their usage errors do not load the pipe's stages.
"""

from __future__ import annotations

import argparse
import os
import sys

from torokiki_pipe.version import __version__


class UsageParser(argparse.ArgumentParser):
    """argparse, but wrong usage exits EX_USAGE (64), not argparse's 2; every command takes --config."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_argument("--config", metavar="FILE", help="env file (default: $TOROKIKI_PIPE_CONFIG, else ./.env)")

    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(os.EX_USAGE, f"{self.prog}: {message}\n")


def parse_args(argv, commands=None):
    """The pipe's arguments; `commands` ({name: summary}) are listed in --help as the other uses."""
    width = max(map(len, commands or {"": ""}))
    listed = "\n".join(f"  {name:<{width}}  {summary}".rstrip() for name, summary in (commands or {}).items())
    parser = UsageParser(prog="torokiki-pipe", formatter_class=argparse.RawDescriptionHelpFormatter,
                     epilog=("administrator's commands (torokiki-pipe COMMAND --help for each):\n" + listed)
                     if listed else None,
                     description="Torokiki's email gateway: reads one RFC 822 message (FILE or stdin),\n"
                                 "saves what it asks for on the website, answers the sender, and exits\n"
                                 "0 (handled) or 75 (try again later).")
    parser.add_argument("file", nargs="?", metavar="FILE", help="the message; default: standard input")
    parser.add_argument("--sender", metavar="ADDR", help="envelope sender (Postfix ${sender}); empty for a bounce")
    parser.add_argument("--recipient", metavar="ADDR", help="envelope recipient (Postfix ${recipient})")
    parser.add_argument("--dry-run", action="store_true",
                        help="change nothing: no POST, no mail sent, nothing under logs/; "
                             "print the request and the reply instead")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser.parse_args(argv)
