"""The `torokiki-pipe` command (and ``python -m torokiki_pipe``): one process per message."""

import gc
import sys


def main() -> int:
    # A run lives for one message.  While the gateway's modules load, the
    # cyclic collector would rescan every object they create, over and over,
    # and find no garbage: about 5 ms of a 75 ms help reply.  So it is off
    # while they load, and what loading built is frozen out of the later
    # collections, which still run for the message's own work.
    gc.disable()
    from .cli import main as run

    gc.freeze()
    gc.enable()
    return run()


if __name__ == "__main__":
    sys.exit(main())
