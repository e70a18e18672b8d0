"""What the pipe talks to during the benchmark: the reference website and the sendmail.

The reference website (torokiki_pipe.reference_site) runs in the benchmark's
process, on a loopback port, its store in memory (/dev/shm when there is one); every
API request it answers is logged with its start, end and status (`HttpLog`).  The
sendmail is the real msmtp delivering into an SMTP sink in this process
(torokiki_pipe.devtools.smtpsink), or, without msmtp, the Python outbox stand-in
(torokiki_pipe.devtools.outbox).  Standard library and the project's devtools only, the
devtools from this checkout (a production install has none).
"""

from __future__ import annotations

import base64
import json
import os
import random
import shlex
import shutil
import sys
import time
import urllib.request
from pathlib import Path

import torokiki_pipe
from torokiki_pipe.reference_site import server as reference

# The development tools are not installed (setup.cfg leaves torokiki_pipe.devtools out of
# the wheel): the benchmark takes them from this checkout, beside the installed gateway.
DEVTOOLS = Path(__file__).resolve().parent.parent / "torokiki_pipe" / "devtools"
torokiki_pipe.__path__.append(str(DEVTOOLS.parent))
from torokiki_pipe.devtools import smtpsink  # noqa: E402

from mails import GATEWAY, MB, SITE_URL

API_KEY = "bench-api-key"
GET_SEED = 4                       # the seed the benchmark adds, with a 5 MB attachment
BIG_GET_SEED = 5                   # ... and this one with a 200 MB attachment (only for big-get)
SINK_MAX_SIZE = 512 * MB           # room for the reply to big-get from a gateway that mails it whole
SINK_MSMTP = "sink: msmtp to the loopback sink, 1 KB reply"
SINK_STAND_IN = "sink: outbox stand-in, 1 KB reply"


class HttpLog:
    """Every API request the reference website answered: (start, end, method, status)."""

    def __init__(self):
        self.entries: list[tuple[float, float, str, int | None]] = []

    def during(self, start: float, end: float) -> list[tuple[float, float, str, int | None]]:
        return [e for e in self.entries if start <= e[0] <= end]


def instrument(server, log: HttpLog) -> None:
    """Record when each API request started and ended, and its status (stdlib hooks only)."""
    base = server.RequestHandlerClass

    class Timed(base):
        def send_response(self, code, message=None):
            self._bench_status = code
            super().send_response(code, message)

        def _timed(self, method: str, handler) -> None:
            start = time.monotonic()
            self._bench_status = None
            try:
                handler(self)
            finally:
                if self.path.startswith("/image/"):
                    log.entries.append((start, time.monotonic(), method, self._bench_status))

        def do_GET(self):  # noqa: N802
            self._timed("GET", base.do_GET)

        def do_POST(self):  # noqa: N802
            self._timed("POST", base.do_POST)

    server.RequestHandlerClass = Timed


def prepare_store(store: Path, rng: random.Random, size: int) -> None:
    """Seeds 1-3 as the reference website makes them, plus seed 4 with a `size`-byte attachment."""
    reference.Store(store, SITE_URL).populate()
    data = base64.b64encode(rng.randbytes(size)).decode("ascii")
    record = {"id": GET_SEED, "content": {"Submitter": "Torokiki bench <bench@torokiki.net>",
                                          "Tags": ["bench"],
                                          "Attachment": {"name": "bench-5mb.jpg", "data": data}}}
    folder = store / "image" / str(GET_SEED)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "seed.json").write_text(json.dumps(record), encoding="utf-8")


def add_big_seed(store: Path, rng: random.Random, size: int) -> None:
    """Seed BIG_GET_SEED with a `size`-byte attachment, written without building its JSON in memory."""
    data = base64.b64encode(rng.randbytes(MB) * (size // MB))
    head = json.dumps({"id": BIG_GET_SEED, "content": {"Submitter": "Torokiki bench <bench@torokiki.net>",
                                                       "Attachment": {"name": "bench-200mb.bin", "data": ""}}})
    before, after = head.rsplit('""', 1)
    folder = store / "image" / str(BIG_GET_SEED)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "seed.json", "wb") as stream:
        stream.write(f'{before}"'.encode())
        stream.write(data)
        stream.write(f'"{after}'.encode())


def start_website(store: Path, log: HttpLog):
    """The reference website serving `store` in a thread, logging into `log`: (server, base URL)."""
    server, base_url = reference.serve_in_thread(store, SITE_URL, api_key=API_KEY)
    instrument(server, log)
    return server, base_url


def set_mode(base_url: str, mode: dict) -> None:
    request = urllib.request.Request(base_url + "/_control", data=json.dumps(mode).encode("utf-8"),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as answer:
        answer.read()


def start_sendmail(work: Path, outbox: Path, python: str):
    """(sink, TOROKIKI_SENDMAIL, what it is, the floor row of the sendmail alone): msmtp into an
    SMTP sink in this process when msmtp is installed (as production), else the outbox stand-in
    (and no sink)."""
    msmtp = shutil.which("msmtp")
    if msmtp:
        sink = smtpsink.serve_in_thread(max_size=SINK_MAX_SIZE)
        rc = work / "msmtprc"
        fd = os.open(rc, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)   # msmtp refuses others' read
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            stream.write("\n".join([
                "# written by bench/run.py", "defaults", "auth off", "tls off", "syslog off",
                "logfile", "timeout 15", "", "account sink", f"host {sink.host}",
                f"port {sink.port}", f"from {GATEWAY}", "", "account default : sink", ""]))
        sendmail = shlex.join([msmtp, "-C", str(rc)])
        # The gateway runs `COMMAND -f <> -- RECIPIENT` (null envelope sender): the same here.
        row = (SINK_MSMTP, [*shlex.split(sendmail), "-f", "<>", "--", "bench@example.net"])
        return sink, sendmail, {"kind": "msmtp", "command": sendmail}, row
    sendmail = shlex.join([python, str(DEVTOOLS / "outbox.py"), str(outbox)])
    # What the stand-in alone costs per reply, so that the pipe's share can be told (wall - this).
    row = (SINK_STAND_IN, [*shlex.split(sendmail), "--", "bench@example.net"])
    print("WARNING: msmtp is not installed (`make deps` installs it): the sendmail is the Python "
          "outbox stand-in,\nWARNING: ~27 ms a reply that production does not pay; the wall "
          "targets are judged without it (-sendmail)", file=sys.stderr, flush=True)
    return None, sendmail, {"kind": "outbox stand-in", "command": sendmail}, row
