"""The `torokiki-pipe` command (and ``python -m torokiki_pipe``): one process per message."""

import gc
import os
import signal
import sys


def main() -> int:
    # A pipe run lives for one message, and what it allocates is freed by
    # reference counting or at exit: the cyclic collector would only rescan,
    # over and over, the objects ~200 modules create while they load, and find
    # no garbage (bench/README.md: the time it saves, and that peak memory
    # stays the same).  What loading built is frozen out of any collection;
    # the administrator's commands, which may handle many messages, turn it
    # back on.
    gc.disable()
    # Until the run installs its own handlers (run.RunSignals), a stop finds
    # nothing done: say so in the one status line and ask for a retry.
    from torokiki_pipe.outcome import Outcome, exit_code, status_line

    def stopped_while_starting(number, frame):
        line = status_line(Outcome.INTERRUPTED, f"stopped by {signal.Signals(number).name} while starting")
        os.write(2, line.encode() + b"\n")
        os._exit(exit_code(Outcome.INTERRUPTED))

    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, stopped_while_starting)
    from torokiki_pipe.cli import main as run

    gc.freeze()
    return run()


if __name__ == "__main__":
    sys.exit(main())
