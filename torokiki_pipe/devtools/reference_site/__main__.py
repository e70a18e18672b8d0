"""The reference website's command line: serve a store until SIGTERM or Ctrl-C.

    python -m torokiki_pipe.devtools.reference_site --store DIR [--port N] [--host H]
        [--site-url URL] [--api-key KEY] [--port-file FILE] [--quiet]

Prints ``listening on http://HOST:PORT`` once the socket is bound (and writes PORT to
``--port-file``), then serves; exits 0 when stopped, 1 when the socket cannot be bound.
The key defaults to $TOROKIKI_REFERENCE_API_KEY; without one, any X-API-Key is accepted.
``--help`` shows how to run it as the TOROKIKI_API_URL of an installed gateway (EPILOG).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from torokiki_pipe.adapters.records import write_atomically
from torokiki_pipe.devtools.reference_site.server import make_server

KEY_VARIABLE = "TOROKIKI_REFERENCE_API_KEY"
EPILOG = f"""\
To stand in for the real website, run it on a fixed port with a key:

  {KEY_VARIABLE}=KEY python -m torokiki_pipe.devtools.reference_site \\
      --port 8080 --store /var/tmp/torokiki-store --site-url http://torokiki.net

and point the gateway's env file at it:

  TOROKIKI_SITE_URL=http://torokiki.net      (the same as --site-url)
  TOROKIKI_API_URL=http://127.0.0.1:8080
  TOROKIKI_API_KEY=KEY                        (the same key)

Give the key in {KEY_VARIABLE}: --api-key KEY would show it to anyone who
lists the processes.  Without a key, submissions need no X-API-Key.  The store
keeps its content from one run to the next; /_control (fault injection) and
/_stats answer loopback clients only.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m torokiki_pipe.devtools.reference_site",
                                     description="Reference Torokiki website for development and tests.",
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument("--store", required=True, help="folder that keeps the content")
    parser.add_argument("--site-url", default="http://torokiki.net",
                        help="public site URL used in Location and InspiredBy")
    parser.add_argument("--api-key", default=os.environ.get(KEY_VARIABLE),
                        help=f"require this X-API-Key on submissions (default: ${KEY_VARIABLE})")
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
