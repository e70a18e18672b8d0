"""The reference website's command line: serve a store until SIGTERM or Ctrl-C.

    python -m torokiki_pipe.devtools.reference_site --store DIR [--port N] [--host H]
        [--site-url URL] [--api-key KEY] [--port-file FILE] [--quiet]

Prints ``listening on http://HOST:PORT`` once the socket is bound (and writes PORT to
``--port-file``), then serves; exits 0 when stopped, 1 when the socket cannot be bound.
The key defaults to $TOROKIKI_REFERENCE_API_KEY; without one, any X-API-Key is accepted.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from torokiki_pipe.adapters.records import write_atomically
from torokiki_pipe.devtools.reference_site.server import make_server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m torokiki_pipe.devtools.reference_site",
                                     description="Reference Torokiki website for development and tests.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument("--store", required=True, help="folder that keeps the content")
    parser.add_argument("--site-url", default="http://torokiki.net",
                        help="public site URL used in Location and InspiredBy")
    parser.add_argument("--api-key", default=os.environ.get("TOROKIKI_REFERENCE_API_KEY"),
                        help="require this X-API-Key on submissions")
    parser.add_argument("--port-file", help="write the port number to this file")
    parser.add_argument("--quiet", action="store_true", help="do not log requests")
    args = parser.parse_args(argv)

    try:
        server = make_server(args.store, args.site_url, api_key=args.api_key,
                             host=args.host, port=args.port, quiet=args.quiet)
    except OSError as error:
        print(f"cannot start: {error}", file=sys.stderr)
        return 1
    if args.port_file:
        write_atomically(Path(args.port_file), f"{server.port}\n".encode())
    print(f"listening on {server.base_url}", flush=True)

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stopping.set()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
