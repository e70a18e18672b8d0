"""The reference website's command line: serve a store until SIGTERM or Ctrl-C.

    torokiki-pipe reference-site --store DIR [--port N] [--host H]
        [--site-url URL] [--api-key KEY] [--port-file FILE] [--quiet]

(or ``python -m torokiki_pipe.reference_site ...``).  It stands in for the real website
on a staging host, with seeds 1, 2 and 3 to answer, until that website is connected
(postfix/README.md, "Try it"); the tests and the demo run it too.  The key defaults to
$TOROKIKI_REFERENCE_API_KEY; without one, any X-API-Key is accepted.

Once the socket is bound it prints one line, where it listens and what the gateway's
env file takes (``listening on http://HOST:PORT; the gateway's env file: TOROKIKI_API_URL=...
TOROKIKI_API_KEY=... TOROKIKI_SITE_URL=...``; the key itself is never printed), writes
PORT to ``--port-file``, then serves; exits 0 when stopped.  It cannot start, saying why
in one line on stderr and without a traceback: EX_CANTCREAT (73) when the store cannot
be written, EX_UNAVAILABLE (69) when the port is in use, EX_NOPERM (77) when the port
needs root, EX_USAGE (64) for an address that is not one, EX_OSERR (71) otherwise.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import socket
import sys
import tempfile
from pathlib import Path

from torokiki_pipe.adapters.records import write_atomically
from torokiki_pipe.reference_site.server import TorokikiServer
from torokiki_pipe.reference_site.store import Store

KEY_VARIABLE = "TOROKIKI_REFERENCE_API_KEY"
DEFAULT_PORT = 8080
EPILOG = f"""\
To stand in for the real website, make a key and run it on a fixed port:

  export {KEY_VARIABLE}=$(python3 -c 'import secrets; print(secrets.token_hex(24))')
  torokiki-pipe reference-site --port {DEFAULT_PORT} --store /var/tmp/torokiki-store

Its one start line says what the gateway's env file takes:

  TOROKIKI_API_URL=http://127.0.0.1:{DEFAULT_PORT}
  TOROKIKI_API_KEY=KEY                        (the same key)
  TOROKIKI_SITE_URL=http://torokiki.net      (the same as --site-url)

Give the key in {KEY_VARIABLE}: --api-key KEY would show it to anyone who
lists the processes.  Without a key, submissions need no X-API-Key (the gateway
still needs a TOROKIKI_API_KEY: any value does).  The store keeps its content
from one run to the next; /_control (fault injection) and /_stats answer
loopback clients only.  --port 0 picks a free port (tests).
"""


def _store_problem(store: Store) -> str | None:
    """Why the store cannot be written (every folder in it, and a file at its root), or None."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=store.root)
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        return error.strerror or str(error)
    for folder, _, _ in os.walk(store.root):
        if not os.access(folder, os.W_OK | os.X_OK):
            return f"{folder} is not writable"
    return None


def _bind_failure(error: OSError, host: str, port: int) -> tuple[int, str]:
    """(exit code, one line) for a socket that cannot be bound."""
    if isinstance(error, socket.gaierror):
        return os.EX_USAGE, f"--host {host}: not an address this host has ({error.strerror})"
    if error.errno == errno.EADDRINUSE:
        return os.EX_UNAVAILABLE, (f"port {port} on {host} is in use (another reference site? "
                                   f"`ss -ltnp 'sport = :{port}'` shows which program): give another --port")
    if error.errno == errno.EACCES:
        return os.EX_NOPERM, f"port {port} needs root: give a --port above 1023"
    if error.errno == errno.EADDRNOTAVAIL:
        return os.EX_USAGE, f"--host {host}: not an address of this host"
    return os.EX_OSERR, f"cannot listen on {host}:{port}: {error.strerror or error}"


def env_lines(base_url: str, site_url: str, key_source: str | None) -> str:
    """What the gateway's env file takes to use this site (the key named, never shown)."""
    for wildcard, loopback in (("//0.0.0.0:", "//127.0.0.1:"), ("//[::]:", "//[::1]:")):
        base_url = base_url.replace(wildcard, loopback)
    key = f"(the key in ${key_source})" if key_source == KEY_VARIABLE else (
        "(the key given with --api-key)" if key_source else "(any value: this site checks no key)")
    return f"TOROKIKI_API_URL={base_url} TOROKIKI_API_KEY={key} TOROKIKI_SITE_URL={site_url}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="torokiki-pipe reference-site",
                                     description="The reference Torokiki website: the website's API over a folder, "
                                                 "to try the gateway before the real website is connected.",
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port to listen on (default: {DEFAULT_PORT}; 0 picks a free one)")
    parser.add_argument("--store", required=True, help="folder that keeps the content (created when absent)")
    parser.add_argument("--site-url", default="http://torokiki.net",
                        help="public site URL used in Location and InspiredBy (default: http://torokiki.net)")
    parser.add_argument("--api-key", default=None,
                        help=f"require this X-API-Key on submissions (default: ${KEY_VARIABLE}; better given there)")
    parser.add_argument("--port-file", help="write the port number to this file")
    parser.add_argument("--quiet", action="store_true", help="do not log requests")
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:      # argparse's 2 for wrong usage is EX_USAGE here
        return os.EX_USAGE if done.code else os.EX_OK
    api_key, key_source = args.api_key, "--api-key" if args.api_key else None
    if not api_key and os.environ.get(KEY_VARIABLE):
        api_key, key_source = os.environ[KEY_VARIABLE], KEY_VARIABLE

    try:
        store = Store(Path(args.store), args.site_url)
        store.populate()
        problem = _store_problem(store)
    except OSError as error:
        problem = error.strerror or str(error)
    if problem:
        print(f"reference-site: cannot write the store {args.store}: {problem}", file=sys.stderr)
        return os.EX_CANTCREAT
    try:
        server = TorokikiServer((args.host, args.port), store, api_key=api_key, quiet=args.quiet)
    except OSError as error:
        code, line = _bind_failure(error, args.host, args.port)
        print(f"reference-site: {line}", file=sys.stderr)
        return code

    def stop(signum, frame):
        raise KeyboardInterrupt

    # Before the line that says it listens: whoever read it may stop it at once.
    signal.signal(signal.SIGTERM, stop)
    try:
        if args.port_file:
            write_atomically(Path(args.port_file), f"{server.port}\n".encode())
        print(f"listening on {server.base_url}; the gateway's env file: "
              f"{env_lines(server.base_url, args.site_url, key_source)}", flush=True)
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stopping.set()
        server.server_close()
    return os.EX_OK


if __name__ == "__main__":
    sys.exit(main())
