"""The `torokiki-pipe` command (and ``python -m torokiki_pipe``): one process per message."""

import gc
import sys


def main() -> int:
    # A pipe run lives for one message, and what it allocates is freed by
    # reference counting or at exit: the cyclic collector would only rescan,
    # over and over, the objects ~200 modules create while they load (4-5 ms
    # of a 110 ms text response) and find no garbage.  Peak memory is the same
    # without it for a 25 MB photo, 3,000 parts, 500 nested parts and 4 MB of
    # HTML.  What loading built is frozen out of any collection; the
    # administrator's commands, which may handle many messages, turn it back on.
    gc.disable()
    from .cli import main as run

    gc.freeze()
    return run()


if __name__ == "__main__":
    sys.exit(main())
