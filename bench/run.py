#!/usr/bin/env python3
"""Benchmark of the installed ``torokiki-pipe``, timed as the MTA sees it.

    python bench/run.py [--quick] [--only NAMES] [--json PATH] [--strict] [--wait-quiet SECONDS [--retries N]]

Starts the reference website (torokiki_pipe.devtools.reference_site) and an SMTP sink
(torokiki_pipe.devtools.smtpsink) on loopback ports and uses the real msmtp,
delivering to that sink, as sendmail (as production does; without msmtp, the
Python outbox stand-in, torokiki_pipe.devtools.outbox, and a loud warning), then
runs the installed ``torokiki-pipe --config ENV`` as a whole process, one mail on
a pipe on stdin, many times, and reports per mail: wall time, CPU time (user+sys
of the child and the sendmail it waited for) and peak RSS, all from
``os.wait4``; the same for the interpreter floor (``-c pass``, ``-c "import
mailparser"``, ``-c "import requests, mailparser"``, same interpreter as the
installed command) and for the libraries each path cannot do without
(LIBRARY_FLOORS); the ratios to those floors, and the throughput of 8
concurrent pipes against a website that answers in a fixed 200 ms.  Then the
hostile mails of issue 12 (HOSTILE: 25 MB each, peak RSS and wall against the
same floors) and a `get` of content over any sane size (a 200 MB attachment).
``--only`` runs some of it: groups standard, throughput, hostile, big-get, or
case names.

Standard library plus the project's devtools only; it never imports the
gateway itself, so it keeps working while the gateway changes.  See
bench/README.md for how to read the output.
"""

from __future__ import annotations

import argparse
import email.policy
import json
import marshal
import os
import platform
import queue
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import datetime, timezone
from email.message import EmailMessage
from pathlib import Path
from typing import NamedTuple

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent


def _ensure_project_importable() -> None:
    """Run under the project's venv when started with a Python that lacks it."""
    try:
        import torokiki_pipe.devtools.reference_site  # noqa: F401
        return
    except ImportError:
        pass
    venv_python = REPO / ".venv" / "bin" / "python"
    if venv_python.exists() and os.environ.get("BENCH_RUN_REEXEC") != "1":
        os.environ["BENCH_RUN_REEXEC"] = "1"
        os.execv(str(venv_python), [str(venv_python), str(Path(__file__).resolve()), *sys.argv[1:]])
    sys.exit("bench: torokiki_pipe is not importable; run `make install` (or use .venv/bin/python)")


_ensure_project_importable()

from torokiki_pipe.devtools import smtpsink  # noqa: E402
from torokiki_pipe.devtools import reference_site as reference  # noqa: E402

SITE_URL = "http://torokiki.net"
GATEWAY = "gateway@torokiki.net"
API_KEY = "bench-api-key"
# Fixed-width placeholders, replaced in every run by a fresh Message-ID and a fresh sender:
# the gateway keeps exactly-once journals per Message-ID and reply budgets per sender.
PLACEHOLDER_ID = b"<bench-0000000000000000-0000000000@bench.example.net>"
PLACEHOLDER_SENDER = b"bench-0000000000-0000000000@example.net"
SMALL_REPLY = (b"From: Torokiki <gateway@torokiki.net>\nTo: bench@example.net\nSubject: bench\n"
               b"Auto-Submitted: auto-replied\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\n"
               + b"Kia ora, this stands for a short reply of the gateway.\n" * 18)
KB, MB = 1024, 1024 * 1024
MAX_MESSAGE_BYTES = 40 * MB
GET_SEED = 4                       # the seed the benchmark adds, with a 5 MB attachment
BIG_GET_SEED = 5                   # ... and this one with a 200 MB attachment (only for big-get)
BIG_GET_SIZE = 200 * MB
HOSTILE_SIZE = 25 * MB             # the default TOROKIKI_MAX_MESSAGE_BYTES: the most a hostile mail gets in
# Hostile mails (issue 12, item 11): peak RSS above the `import requests, mailparser` floor
# at most this many times the mail, and at most this many seconds.
HOSTILE_RSS_TARGET = 4.0
HOSTILE_SECONDS_TARGET = 10.0
SINK_MAX_SIZE = 512 * MB           # the reply to big-get without a cap in the gateway is ~270 MB
GROUPS = ("standard", "throughput", "hostile", "big-get")
SLOW_DELAY = 0.200
CONCURRENCY = 8

# Targets: (metric, case, limit).  wall: median wall / median `import mailparser` floor.
# rss: (peak RSS - `import requests, mailparser` floor) / message size.
TARGETS = [
    ("wall", "help", 1.0),
    ("wall", "ignored", 1.0),
    ("wall", "invalid", 1.5),
    ("wall", "media-5MB", 3.0),
    ("rss", "media-5MB", 3.0),
    ("rss", "media-25MB", 3.0),
]
THROUGHPUT_TARGET = 0.80
# What the machine itself adds per process with every core busy: this floor's CPU, alone
# and CONCURRENCY at a time (informational, printed beside the throughput).
SCALING_PROBE = "import requests, mailparser"
FOREIGN_CORES_WARNING = 0.10       # other work above this share of a core makes a run suspect

# The libraries each path of the gateway cannot do without, imported alone (label, python -c
# code): informational floors, measured like the others.  A path whose row is already near
# or above its wall target cannot meet that target with these libraries.  Edit them here
# when a path's imports change.
LIBRARY_FLOORS = [
    ("libraries: ignored path",
     "import dataclasses, argparse, json, email.parser, email.policy, email.utils, dotenv"),
    ("libraries: help path",
     "import dataclasses, argparse, json, subprocess, email.parser, email.policy, email.utils, "
     "email.message, email.generator, dotenv, filelock"),
    ("libraries: media path",
     "import dataclasses, argparse, json, subprocess, email.parser, email.policy, email.utils, "
     "email.message, email.generator, dotenv, filelock, requests"),
]
SINK_MSMTP = "sink: msmtp to the loopback sink, 1 KB reply"
SINK_STAND_IN = "sink: outbox stand-in, 1 KB reply"


# --------------------------------------------------------------------------- locating the pipe

def find_pipe() -> Path:
    """The installed torokiki-pipe: beside this Python, in the repo's venv, or on PATH."""
    for candidate in (Path(sys.executable).parent / "torokiki-pipe", REPO / ".venv" / "bin" / "torokiki-pipe"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("torokiki-pipe")
    if found:
        return Path(found)
    sys.exit("bench: torokiki-pipe is not installed: run `make install`")


def interpreter_of(script: Path) -> str:
    """The Python the console script runs with (its #! line), for the floor."""
    try:
        with open(script, "rb") as stream:
            first = stream.readline().decode("utf-8", "replace").strip()
    except OSError:
        first = ""
    if first.startswith("#!"):
        words = shlex.split(first[2:])
        if words and "python" in os.path.basename(words[0]) and os.path.isabs(words[0]):
            return words[0]
    return sys.executable


# --------------------------------------------------------------------------- mails

def _base(subject: str, message_id: bytes = PLACEHOLDER_ID) -> EmailMessage:
    message = EmailMessage(policy=email.policy.SMTP.clone(linesep="\n"))
    message["From"] = f"Bench Sender <{PLACEHOLDER_SENDER.decode('ascii')}>"
    message["To"] = GATEWAY
    message["Subject"] = subject
    message["Date"] = "Tue, 14 May 2024 08:02:05 +1200"
    message["Message-ID"] = message_id.decode("ascii")
    message["MIME-Version"] = "1.0"
    return message


def _bytes(message: EmailMessage) -> bytes:
    raw = message.as_bytes(policy=message.policy)
    assert PLACEHOLDER_ID in raw and PLACEHOLDER_SENDER in raw, "a placeholder was folded or lost"
    return raw


def text_mail(seed: int = 1) -> bytes:
    message = _base(f"create-response-to: '{SITE_URL}/image/{seed}/response'")
    message.set_content("Kia ora,\n\n"
                        "text: 'These routes are now plied by a petrol based bus service. "
                        "My nana still remembers catching the tram to work along here.'\n"
                        "tags: 'bench, transport'\n\nSent from the benchmark\n")
    return _bytes(message)


def media_mail(size: int, rng: random.Random) -> bytes:
    message = _base(f"create-response-to: '{SITE_URL}/image/3/response'")
    message.set_content("tags: 'bench'\n")
    message.add_attachment(rng.randbytes(size), maintype="image", subtype="jpeg", filename="bench.jpg")
    return _bytes(message)


def help_mail() -> bytes:
    message = _base("help")
    message.set_content("\nSent from the benchmark\n")
    return _bytes(message)


def invalid_mail() -> bytes:
    message = _base(f"create-response-to: '{SITE_URL}/image/2/response'")
    message.set_content("Hi,\n\ncolour: 'sepia'\n"
                        "text: 'The tram shelter outside the Bank of New Zealand is still there\n"
                        "tags: 'cubastreet'\n\nKiri\n")
    return _bytes(message)


def get_mail(seed: int) -> bytes:
    message = _base(f"get: '{SITE_URL}/image/{seed}/response'")
    message.set_content("\nSent from the benchmark\n")
    return _bytes(message)


def _raw_head(subject: str, content_type: str, *extra: str) -> bytes:
    """The header block `_base` writes, as bytes, for mails too big or too broken to build with it."""
    return "".join(f"{line}\n" for line in (
        f"From: Bench Sender <{PLACEHOLDER_SENDER.decode('ascii')}>", f"To: {GATEWAY}", f"Subject: {subject}",
        "Date: Tue, 14 May 2024 08:02:05 +1200", f"Message-ID: {PLACEHOLDER_ID.decode('ascii')}",
        "MIME-Version: 1.0", *extra, f"Content-Type: {content_type}")).encode("utf-8")


def _fill(start: bytes, unit: bytes, end: bytes = b"", size: int = HOSTILE_SIZE) -> bytes:
    """start + unit repeated + end, as close to `size` bytes as whole units allow."""
    return start + unit * ((size - len(start) - len(end)) // len(unit)) + end


_CREATE = f"create-response-to: '{SITE_URL}/image/1/response'"


def hostile_mails() -> list[tuple[str, bytes, list, str]]:
    """(name, mail, API requests expected, what it is) for each hostile mail, HOSTILE_SIZE each.

    The first five are the ones issue 12 reports (item 10: nesting that crashed the
    email package; item 11: memory past a GB); the others attack the bounds that
    answer those.  All but the last are answered as invalid, without a request.
    """
    mixed = 'multipart/mixed; boundary="b"'
    deep = b"".join(b'--b%d\nContent-Type: multipart/mixed; boundary="b%d"\n\n' % (i - 1, i) for i in range(1, 1000))
    cyrillic = "Кия ора, это длинная строка текста по-русски.\n".encode("utf-8")
    return [
        ("tiny parts", _fill(_raw_head(_CREATE, mixed) + b"\n", b"--b\n\nx\n", b"--b--\n"), [],
         "3.2 million parts of one line"),
        ("nested 1000 deep", _fill(_raw_head(_CREATE, 'multipart/mixed; boundary="b0"') + b"\n" + deep
                                  + b"--b999\nContent-Type: text/plain\n\n", b"text: 'deep'\n"), [],
         "multipart in multipart 1000 deep, then text"),
        ("forwarded 3000 deep", _fill(_raw_head(_CREATE, "message/rfc822") + b"\n"
                                     + b"Content-Type: message/rfc822\n\n" * 3000, b"text: 'deep'\n"), [],
         "message/rfc822 in message/rfc822 3000 deep, then text"),
        ("short lines", _fill(_raw_head(_CREATE, "text/plain") + b"\ntext: 'x'\n", b"x\n"), [],
         "12 million lines of one letter"),
        ("folded header", _fill(_raw_head(_CREATE, "text/plain") + b"X-Folded: x\n", b" x\n", b"\ntext: 'x'\n"), [],
         "8 million folded lines in the mail's header"),
        ("folded part header", _fill(_raw_head(_CREATE, mixed) + b"\n--b\nContent-Type: text/plain;\n", b" x\n",
                                     b"\ntext: 'x'\n--b--\n"), [],
         "8 million folded lines in a part's header"),
        ("header fields", _fill(_raw_head(_CREATE, mixed) + b"\n--b\nContent-Type: text/plain\n", b"a:b\n",
                                b"\ntext: 'x'\n--b--\n"), [],
         "6 million header fields in a part"),
        ("parameters", _fill(_raw_head(_CREATE, mixed) + b'\n--b\nContent-Type: multipart/mixed; boundary="c"',
                             b";\n a=b", b"\n\n--c\n\ntext: 'x'\n--c--\n--b--\n"), [],
         "4 million Content-Type parameters in a part"),
        ("blank lines", _fill(_raw_head(_CREATE, "text/plain") + b"\ntext: 'x'\n", b"x!\n\n"), [],
         "text and blank lines by turns: nothing for the parser to join"),
        ("8-bit text", _fill(_raw_head(_CREATE, "text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit")
                             + b"\ntext: 'x'\n", cyrillic), [],
         "UTF-8 Cyrillic text (two bytes a letter, four in a Python str of its bytes)"),
        ("7bit attachment", _fill(_raw_head(_CREATE, mixed) + b"\n--b\nContent-Type: text/plain\n\ntags: 'bench'\n"
                                  b'--b\nContent-Type: text/csv; name="data.csv"\n'
                                  b'Content-Disposition: attachment; filename="data.csv"\n\n',
                                  b"1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20\n", b"--b--\n"),
         [("POST", 201)], "not hostile: a 25 MB CSV file sent as 7bit text, saved"),
    ]


def ignored_mail() -> bytes:
    message = _base("Automatic reply: Your response was saved")
    message["Auto-Submitted"] = "auto-replied"
    message["X-Autoreply"] = "yes"
    message.set_content("I am away until Monday with limited access to email.\n")
    return _bytes(message)


class Case(NamedTuple):
    """One mail the benchmark times."""
    name: str
    template: bytes
    http: list                 # the API requests expected, as (method, status)
    reply: bool                # one reply expected (else none)
    payload: int               # bytes of the file the mail carries or asks for
    reps: int
    group: str = "standard"
    lenient: bool = False      # record what happens (exit 0 or 75, any replies) instead of checking it
    about: str = ""


_counter = 0
_counter_lock = threading.Lock()


def with_fresh_id(template: bytes) -> bytes:
    """The mail with a Message-ID and a sender no earlier run used (same lengths as the placeholders)."""
    global _counter
    with _counter_lock:
        _counter += 1
        number = _counter
    new_id = f"<bench-{os.getpid():016d}-{number:010d}@bench.example.net>".encode("ascii")
    new_sender = f"bench-{os.getpid():010d}-{number:010d}@example.net".encode("ascii")
    assert len(new_id) == len(PLACEHOLDER_ID) and len(new_sender) == len(PLACEHOLDER_SENDER)
    return template.replace(PLACEHOLDER_ID, new_id, 1).replace(PLACEHOLDER_SENDER, new_sender, 1)


# --------------------------------------------------------------------------- the website

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
    import base64

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
    import base64

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


def set_mode(base_url: str, mode: dict) -> None:
    request = urllib.request.Request(base_url + "/_control", data=json.dumps(mode).encode("utf-8"),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as answer:
        answer.read()


# --------------------------------------------------------------------------- running one child

# Linux reports as a child's peak RSS at least the peak RSS of the process that forked it
# (exec records the old address space's high-water mark), so children are not started
# from this process, whose memory grows with the mails and the in-process website.  A
# tiny helper (python -I -S, about 8 MB, less than any Python child) starts each one
# with posix_spawn, feeds its stdin from a file through a pipe in 64 KB chunks, and
# reaps it with os.wait4.  Protocol on its stdin/stdout: 4-byte length + marshal.
SPAWNER = r"""
import os, _thread, marshal, time, _signal

def read_exactly(n):
    chunks = []
    while n:
        chunk = os.read(0, n)
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)

def feed(path, fd, done):
    try:
        source = os.open(path, os.O_RDONLY)
        try:
            while True:
                chunk = os.read(source, 65536)
                if not chunk:
                    break
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
        finally:
            os.close(source)
    except OSError:
        pass                        # the child stopped reading: its exit code tells
    finally:
        os.close(fd)
        done.release()

while True:
    head = read_exactly(4)
    if head is None:
        break
    job = marshal.loads(read_exactly(int.from_bytes(head, "big")))
    rd, wr = os.pipe()
    out = os.open(job["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    err = os.open(job["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    actions = [(os.POSIX_SPAWN_DUP2, rd, 0), (os.POSIX_SPAWN_DUP2, out, 1), (os.POSIX_SPAWN_DUP2, err, 2)]
    done = _thread.allocate_lock()
    done.acquire()
    start = time.monotonic()
    try:
        pid = os.posix_spawn(job["argv"][0], job["argv"], job["env"], file_actions=actions,
                             setsigdef=(_signal.SIGPIPE, _signal.SIGXFSZ))
    except OSError as error:
        for fd in (rd, wr, out, err):
            os.close(fd)
        answer = {"error": str(error)}
    else:
        for fd in (rd, out, err):
            os.close(fd)
        _thread.start_new_thread(feed, (job["stdin"], wr, done))
        _, status, usage = os.wait4(pid, 0)
        end = time.monotonic()
        done.acquire()
        answer = {"start": start, "end": end, "code": os.waitstatus_to_exitcode(status),
                  "user": usage.ru_utime, "sys": usage.ru_stime, "maxrss_kb": usage.ru_maxrss}
    data = marshal.dumps(answer)
    os.write(1, len(data).to_bytes(4, "big") + data)
"""


class Run:
    __slots__ = ("wall", "cpu", "user", "sys", "maxrss_kb", "code", "stderr", "start", "end", "web",
                 "replies", "reply_bytes", "outcome")

    def __init__(self, **values):
        self.web = 0.0
        self.replies, self.reply_bytes, self.outcome = 0, 0, ""
        for key, value in values.items():
            setattr(self, key, value)


class Spawner:
    """One helper process that runs children one at a time (use one per concurrent pipe)."""

    def __init__(self, scratch: Path):
        self.scratch = scratch
        self.process = subprocess.Popen([sys.executable, "-I", "-S", "-c", SPAWNER],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True)
        self.counter = 0

    def run(self, argv: list[str], data: bytes, env: dict) -> Run:
        self.counter += 1
        stem = self.scratch / f"{self.process.pid}-{self.counter}"
        paths = {"stdin": f"{stem}.in", "stdout": f"{stem}.out", "stderr": f"{stem}.err"}
        Path(paths["stdin"]).write_bytes(data)
        job = marshal.dumps({"argv": list(argv), "env": dict(env), **paths})
        self.process.stdin.write(len(job).to_bytes(4, "big") + job)
        self.process.stdin.flush()
        head = self.process.stdout.read(4)
        if len(head) != 4:
            raise RuntimeError("the spawner helper died")
        answer = marshal.loads(self.process.stdout.read(int.from_bytes(head, "big")))
        stderr = Path(paths["stderr"]).read_bytes().decode("utf-8", "replace").strip()
        for path in paths.values():
            os.unlink(path)
        if "error" in answer:
            raise RuntimeError(f"cannot start {argv[0]}: {answer['error']}")
        return Run(wall=answer["end"] - answer["start"], cpu=answer["user"] + answer["sys"],
                   user=answer["user"], sys=answer["sys"], maxrss_kb=answer["maxrss_kb"],
                   code=answer["code"], stderr=stderr, start=answer["start"], end=answer["end"])

    def close(self) -> None:
        try:
            self.process.stdin.close()
            self.process.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()


# --------------------------------------------------------------------------- statistics

def summary(values: list[float]) -> dict:
    values = sorted(values)
    if not values:
        return {"n": 0}
    if len(values) >= 2:
        p25, _, p75 = statistics.quantiles(values, n=4, method="inclusive")
    else:
        p25 = p75 = values[0]
    return {"n": len(values), "median": statistics.median(values), "min": values[0], "max": values[-1],
            "p25": p25, "p75": p75, "stdev": statistics.stdev(values) if len(values) > 1 else 0.0,
            "samples": values}


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


# --------------------------------------------------------------------------- is the machine ours?

def _machine_busy_seconds() -> float | None:
    """CPU time every task of the machine used since boot (/proc/stat), in seconds."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    if fields[0] != "cpu":
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _loadavg() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


class Watch:
    """How much CPU the rest of the machine took while we measured.

    Busy time of the whole machine (/proc/stat) minus what our children (wait4) and this
    process used: anything left is other work (another test suite, a package manager...),
    which inflates wall times and, under 8 concurrent pipes, throughput.
    """

    def __init__(self, nproc: int):
        self.nproc = nproc
        self.own = 0.0
        self.start = time.monotonic()
        self.busy = _machine_busy_seconds()
        self.self_cpu = _self_cpu()
        self.load_before = _loadavg()

    def add(self, run: "Run") -> None:
        self.own += run.cpu

    def result(self, phase: str) -> dict:
        elapsed = time.monotonic() - self.start
        busy = _machine_busy_seconds()
        own = self.own + (_self_cpu() - self.self_cpu)
        found = {"seconds": elapsed, "own_cpu_s": own, "loadavg_1m_before": self.load_before,
                 "loadavg_1m_after": _loadavg()}
        if busy is not None and self.busy is not None and elapsed > 0:
            # Tick accounting rounds; the spawner helpers' own few ms are not counted as ours.
            foreign = max(0.0, (busy - self.busy) - own)
            found["machine_cpu_s"] = busy - self.busy
            found["foreign_cpu_s"] = foreign
            found["foreign_cores"] = foreign / elapsed
            if found["foreign_cores"] > FOREIGN_CORES_WARNING:
                found["warning"] = (f"other work used {found['foreign_cores']:.2f} of {self.nproc} cores "
                                    f"during the {phase}: the numbers are inflated; run again on a quiet "
                                    f"machine before comparing")
        elif (found["loadavg_1m_after"] or 0) > self.nproc:
            found["warning"] = (f"load average {found['loadavg_1m_after']:.1f} on {self.nproc} cores during "
                                f"the {phase}: run again on a quiet machine before comparing")
        return found


def wait_until_quiet(limit: float, nproc: int) -> None:
    """Wait (at most `limit` seconds) until the rest of the machine idles for 5 s."""
    deadline = time.monotonic() + limit
    while True:
        before, clock = _machine_busy_seconds(), time.monotonic()
        if before is None:
            return
        time.sleep(5)
        used = (_machine_busy_seconds() - before) / (time.monotonic() - clock)
        if used <= FOREIGN_CORES_WARNING:
            print(f"the machine is quiet ({used:.2f} of {nproc} cores busy)", flush=True)
            return
        if time.monotonic() >= deadline:
            print(f"still busy ({used:.2f} of {nproc} cores) after {limit:g} s: measuring anyway", flush=True)
            return
        print(f"waiting for a quiet machine: {used:.2f} of {nproc} cores busy", flush=True)


def _self_cpu() -> float:
    times = os.times()
    return times.user + times.system


# --------------------------------------------------------------------------- the benchmark

class Bench:
    def __init__(self, args):
        self.args = args
        self.quick = args.quick
        self.pipe = find_pipe()
        self.python = interpreter_of(self.pipe)
        self.work = Path(tempfile.mkdtemp(prefix="torokiki-bench-"))
        self.outbox = self.work / "outbox"
        self.logs = self.work / "logs"
        for folder in (self.outbox, self.logs):
            folder.mkdir()
        # Mails on their way to a child's stdin: in memory (tmpfs) when there is one, so that
        # writing them does not queue disk writes behind the gateway's fsyncs.
        shm = Path("/dev/shm")
        self.scratch = Path(tempfile.mkdtemp(prefix="torokiki-bench-", dir=shm if shm.is_dir() else None))
        self.spawner = Spawner(self.scratch)
        self.failures: list[str] = []
        self.cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        self.http = HttpLog()
        self.sink: smtpsink.SmtpSink | None = None     # None: the outbox stand-in is the sendmail
        # Children get a Postfix-like environment: no TOROKIKI_* (nor PYTHON*) of the caller.
        self.env = {"PATH": "/usr/bin:/bin"}
        for key in ("LANG", "LC_ALL", "TZ"):
            if key in os.environ:
                self.env[key] = os.environ[key]

    # ---- setup
    def start(self) -> None:
        rng = random.Random(20240514)
        # The website's store is in memory too: its 7 and 34 MB responses are not the gateway's
        # writes, and on the disk they made the website's time (and the media walls) vary by 10 ms.
        prepare_store(self.scratch / "store", rng, 5 * MB)
        self.server, self.base_url = reference.serve_in_thread(self.scratch / "store", SITE_URL, api_key=API_KEY)
        instrument(self.server, self.http)
        self.env_file = self.work / "torokiki.env"
        sendmail, sink_row = self.start_sendmail()
        values = {
            "TOROKIKI_SITE_URL": SITE_URL,
            "TOROKIKI_API_URL": self.base_url,
            "TOROKIKI_API_KEY": API_KEY,
            "TOROKIKI_GATEWAY_ADDRESS": GATEWAY,
            "TOROKIKI_SENDMAIL": sendmail,
            "TOROKIKI_LOG_DIR": str(self.logs),
            "TOROKIKI_HTTP_TIMEOUT": "60",
            "TOROKIKI_MAX_MESSAGE_BYTES": str(MAX_MESSAGE_BYTES),
        }
        fd = os.open(self.env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            stream.write("# written by bench/run.py\n")
            for key, value in values.items():
                stream.write(f"{key}={shlex.quote(value) if ' ' in value else value}\n")
        rng = random.Random(1910)
        many, big, huge = (3, 3, 2) if self.quick else (15, 9, 5)
        hostile, giant = (1, 1) if self.quick else (3, 2)
        cases = [
            Case("help", help_mail(), [], True, 0, many),
            Case("ignored", ignored_mail(), [], False, 0, many),
            Case("invalid", invalid_mail(), [], True, 0, many),
            Case("text", text_mail(), [("POST", 201)], True, 0, many),
            Case("media-100KB", media_mail(100 * KB, rng), [("POST", 201)], True, 100 * KB, many),
            Case("media-5MB", media_mail(5 * MB, rng), [("POST", 201)], True, 5 * MB, big),
            Case("media-25MB", media_mail(25 * MB, rng), [("POST", 201)], True, 25 * MB, huge),
            Case("get-5MB", get_mail(GET_SEED), [("GET", 200)], True, 5 * MB, big),
            *(Case(f"hostile: {name}", mail, http, True, 0, hostile, "hostile", about=about)
              for name, mail, http, about in (hostile_mails() if self.selected("hostile") or any(
                  wanted.startswith("hostile: ") for wanted in self.args.only) else [])),
            # Over any sane size: the reference website answers it whole; the gateway's adapter
            # decides what to do with it (read it all and mail it, or stop at a cap and send
            # the link).  So what happens is recorded, not checked.
            Case("get-200MB", get_mail(BIG_GET_SEED), [("GET", 200)], True, BIG_GET_SIZE, giant,
                 "big-get", lenient=True, about="a get of a seed with a 200 MB attachment"),
        ]
        self.cases = [case for case in cases if self.selected(case.group, case.name)]
        if self.selected("big-get", "get-200MB"):
            add_big_seed(self.scratch / "store", rng, BIG_GET_SIZE)
        self.floors = [
            ("floor: -c pass", [self.python, "-c", "pass"], b""),
            ("floor: import mailparser", [self.python, "-c", "import mailparser"], b""),
            (f"floor: {SCALING_PROBE}", [self.python, "-c", SCALING_PROBE], b""),
            # Not floors of the targets, for reading them: what the libraries of each path
            # cost alone, and what the sendmail alone costs per reply.
            *((label, [self.python, "-c", code], b"") for label, code in LIBRARY_FLOORS),
            sink_row,
        ]

    def selected(self, *names: str) -> bool:
        """Whether --only asks for any of these groups or cases (no --only: everything)."""
        wanted = self.args.only
        if not wanted:
            return True
        # The throughput bound is computed from the text case's per-mail runs.
        if "throughput" in wanted and "text" in names:
            return True
        return any(name in wanted for name in names)

    def start_sendmail(self) -> tuple[str, tuple[str, list[str], bytes]]:
        """TOROKIKI_SENDMAIL and the floor row of the sendmail alone: msmtp into an SMTP sink in
        this process when msmtp is installed (as production), else the outbox stand-in."""
        msmtp = shutil.which("msmtp")
        if msmtp:
            self.sink = smtpsink.serve_in_thread(max_size=SINK_MAX_SIZE)
            rc = self.work / "msmtprc"
            fd = os.open(rc, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)   # msmtp refuses others' read
            with os.fdopen(fd, "w", encoding="utf-8") as stream:
                stream.write("\n".join([
                    "# written by bench/run.py", "defaults", "auth off", "tls off", "syslog off",
                    "logfile", "timeout 15", "", "account sink", f"host {self.sink.host}",
                    f"port {self.sink.port}", f"from {GATEWAY}", "", "account default : sink", ""]))
            sendmail = shlex.join([msmtp, "-C", str(rc)])
            self.sendmail_info = {"kind": "msmtp", "command": sendmail}
            # The gateway runs `COMMAND -f <> -- RECIPIENT` (null envelope sender): the same here.
            row = (SINK_MSMTP, [*shlex.split(sendmail), "-f", "<>", "--", "bench@example.net"], SMALL_REPLY)
        else:
            sendmail = shlex.join([self.python, "-m", "torokiki_pipe.devtools.outbox", str(self.outbox)])
            self.sendmail_info = {"kind": "outbox stand-in", "command": sendmail}
            # What the stand-in alone costs per reply, so that the pipe's share can be told (wall - this).
            row = (SINK_STAND_IN, [*shlex.split(sendmail), "--", "bench@example.net"], SMALL_REPLY)
            print("WARNING: msmtp is not installed (`make deps` installs it): the sendmail is the Python "
                  "outbox stand-in,\nWARNING: ~27 ms a reply that production does not pay; the wall "
                  "targets are judged without it (-sendmail)", file=sys.stderr, flush=True)
        return sendmail, row

    @property
    def stand_in(self) -> bool:
        return self.sink is None

    def stop(self) -> None:
        try:
            self.spawner.close()
            if hasattr(self, "server"):
                self.server.shutdown()
            if self.sink is not None:
                self.sink.shutdown()
        finally:
            shutil.rmtree(self.work, ignore_errors=True)
            shutil.rmtree(self.scratch, ignore_errors=True)

    # ---- helpers
    def pipe_argv(self) -> list[str]:
        return [str(self.pipe), "--config", str(self.env_file)]

    def replies(self) -> int:
        """How many replies were handed over: messages at the sink (or files in the outbox)."""
        if self.sink is not None:
            return self.sink.count()
        return len([p for p in self.outbox.iterdir() if p.suffix == ".eml" and not p.name.startswith(".")])

    def clear_replies(self) -> None:
        if self.sink is not None:
            self.sink.clear()
            return
        for old in self.outbox.iterdir():
            if old.suffix == ".eml" and not old.name.startswith("."):
                old.unlink()

    def spawn(self, argv: list[str], data: bytes) -> Run:
        run = self.spawner.run(argv, data, self.env)
        self.watch.add(run)
        return run

    def fail(self, text: str) -> None:
        self.failures.append(text)
        print(f"\n!!! FAILURE: {text}", file=sys.stderr, flush=True)

    def last_log_line(self) -> str:
        try:
            with open(self.logs / "torokiki-pipe.log", "rb") as stream:
                stream.seek(max(0, stream.seek(0, os.SEEK_END) - 16 * KB))
                lines = stream.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return ""
        return lines[-1] if lines else ""

    def one_mail(self, case: Case) -> Run:
        name, expected_http, reply = case.name, case.http, case.reply
        self.clear_replies()
        run = self.spawn(self.pipe_argv(), with_fresh_id(case.template))
        requests = self.http.during(run.start, run.end)
        run.web = sum(e[1] - e[0] for e in requests)
        got = [(e[2], e[3]) for e in requests]
        line = self.last_log_line()
        run.outcome = line.split(" outcome=", 1)[1].split(" ", 1)[0] if " outcome=" in line else ""
        if self.sink is not None:
            messages = self.sink.messages
            run.replies, run.reply_bytes = len(messages), sum(len(m.data) for m in messages)
        if case.lenient:
            if run.code not in (0, 75) or "Traceback" in run.stderr:
                self.fail(f"{name}: torokiki-pipe exited {run.code}: {run.stderr[:500]}")
            return run
        if run.code != 0:
            self.fail(f"{name}: torokiki-pipe exited {run.code}: {run.stderr[:500]}")
        elif got != expected_http:
            self.fail(f"{name}: expected API requests {expected_http}, the website saw {got}")
        else:
            sent = self.replies()
            if sent != (1 if reply else 0):
                where = "the outbox" if self.stand_in else "the SMTP sink"
                self.fail(f"{name}: expected {'one reply' if reply else 'no reply'}, {where} got {sent}")
        return run

    # ---- the per-mail and floor measurements
    def measure(self) -> dict:
        self.watch = Watch(self.cores)
        results: dict[str, list[Run]] = {case.name: [] for case in self.cases}
        floors: dict[str, list[Run]] = {name: [] for name, *_ in self.floors}
        total = max((case.reps for case in self.cases), default=1)
        # Warm-up: one untimed run of each (page cache, .pyc files), then interleaved repetitions
        # so that drift of the machine spreads over every case alike.
        print(f"per-mail runs: warm-up, then up to {total} rounds ", end="", flush=True)
        for name, argv, data in self.floors:
            self.spawn(argv, data)
        for case in self.cases:
            self.one_mail(case)
        for round_ in range(total):
            for name, argv, data in self.floors:
                run = self.spawn(argv, data)
                if run.code != 0:
                    self.fail(f"{name}: exited {run.code}: {run.stderr[:300]}")
                floors[name].append(run)
            for case in self.cases:
                if round_ < case.reps:
                    results[case.name].append(self.one_mail(case))
            print(".", end="", flush=True)
        print(flush=True)
        self.load = self.watch.result("per-mail runs")
        return {"cases": results, "floors": floors, "load": self.load}

    # ---- throughput
    def throughput(self, mails: int) -> dict:
        template = text_mail()
        work: queue.Queue = queue.Queue()
        for _ in range(mails):
            work.put(with_fresh_id(template))
        before = self.replies()
        set_mode(self.base_url, {"mode": "slow", "delay": SLOW_DELAY})
        print(f"throughput: {mails} mails, {CONCURRENCY} concurrent pipes, website answering in "
              f"{SLOW_DELAY * 1000:.0f} ms ...", flush=True)

        watch = Watch(self.cores)
        started = time.monotonic()
        http_before = len(self.http.entries)
        try:
            runs = self.concurrently(self.pipe_argv(), work, watch)
        finally:
            elapsed = time.monotonic() - started
            load = watch.result("throughput run")
            bench_cpu = _self_cpu() - watch.self_cpu
        set_mode(self.base_url, {"mode": "ok"})
        entries = self.http.entries[http_before:]
        bad = [r for r in runs if r.code != 0]
        for run in bad[:5]:
            self.fail(f"throughput: torokiki-pipe exited {run.code}: {run.stderr[:300]}")
        if len(bad) > 5:
            self.fail(f"throughput: {len(bad)} runs in all did not exit 0")
        statuses = [e[3] for e in entries if e[2] == "POST"]
        if statuses.count(201) != mails:
            self.fail(f"throughput: the website stored {statuses.count(201)} of {mails} mails "
                      f"(statuses seen: {sorted(set(map(str, statuses)))})")
        sent = self.replies() - before
        if sent != mails:
            self.fail(f"throughput: {sent} replies for {mails} mails")
        return {
            "mails": mails, "concurrency": CONCURRENCY, "website_delay_s": SLOW_DELAY,
            "elapsed_s": elapsed, "messages_per_s": mails / elapsed,
            "wall_s": summary([r.wall for r in runs]), "cpu_s": summary([r.cpu for r in runs]),
            "user_s": summary([r.user for r in runs]), "sys_s": summary([r.sys for r in runs]),
            "website_s": summary([e[1] - e[0] for e in entries]),
            "load": load,
            "bench_process_cpu_s_per_message": bench_cpu / mails,
            "failed_runs": len(bad),
        }

    def concurrently(self, argv: list[str], work: queue.Queue, watch: "Watch") -> list[Run]:
        """Run `argv` once per stdin in `work`, CONCURRENCY at a time; every run, in end order."""
        runs: list[Run] = []
        lock = threading.Lock()
        spawners = [Spawner(self.scratch) for _ in range(CONCURRENCY)]

        def worker(spawner):
            while True:
                try:
                    data = work.get_nowait()
                except queue.Empty:
                    return
                run = spawner.run(argv, data, self.env)
                with lock:
                    runs.append(run)
                    watch.add(run)

        threads = [threading.Thread(target=worker, args=(spawner,)) for spawner in spawners]
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        finally:
            for spawner in spawners:
                spawner.close()
        return runs

    def machine_scaling(self, count: int) -> dict:
        """CPU of a process that only imports the libraries, alone and CONCURRENCY at a time.

        Not a target: it tells how much CPU the machine itself adds per process when
        every core is busy, which the throughput bound (from one pipe's CPU alone)
        does not allow for.
        """
        work: queue.Queue = queue.Queue()
        for _ in range(count):
            work.put(b"")
        runs = self.concurrently([self.python, "-c", SCALING_PROBE], work, Watch(self.cores))
        return {"probe": f"python -c {SCALING_PROBE!r}", "runs": count,
                "cpu_s": summary([r.cpu for r in runs]), "wall_s": summary([r.wall for r in runs])}

    # ---- everything
    def retried(self, phase: str, measure, load_of):
        """Measure; with --wait-quiet, measure again (up to --retries times) after other work
        disturbed it, each time once the machine is quiet; keep the least disturbed attempt."""
        attempts = []
        for attempt in range(1 + (self.args.retries if self.args.wait_quiet > 0 else 0)):
            if self.args.wait_quiet > 0:
                wait_until_quiet(self.args.wait_quiet, self.cores)
            found = measure()
            load = load_of(found)
            attempts.append((load.get("foreign_cores", 0.0), attempt, found))
            if not load.get("warning"):
                break
            print(f"other work disturbed the {phase} ({load.get('foreign_cores', 0):.2f} cores)", flush=True)
        best = min(attempts, key=lambda a: a[:2])
        load_of(best[2])["attempts"] = len(attempts)
        return best[2]

    def run(self) -> dict:
        measured = self.retried("per-mail runs", self.measure, lambda found: found["load"])
        cases, floors = measured["cases"], measured["floors"]
        cores = self.cores
        floor_import = statistics.median(r.wall for r in floors["floor: import mailparser"])
        floor_rss_kb = statistics.median(r.maxrss_kb for r in floors["floor: import requests, mailparser"])

        report: dict = {"sendmail": dict(self.sendmail_info), "floors": {}, "mails": {}, "targets": []}
        for name, runs in floors.items():
            wall = summary([r.wall for r in runs])
            report["floors"][name] = {
                "wall_s": wall, "cpu_s": summary([r.cpu for r in runs]),
                "maxrss_kb": summary([r.maxrss_kb for r in runs]),
                "wall_over_import_mailparser_floor": wall["median"] / floor_import,
            }
        # With msmtp the reply costs what it costs in production and the wall is judged whole.
        # The stand-in is a Python process (~27 ms) where production runs a C sendmail or
        # msmtp: it is the MTA's cost, not the gateway's, so then the targets are judged
        # without it.
        sink_wall = (statistics.median(r.wall for r in floors[SINK_STAND_IN]) if self.stand_in else None)
        for case in self.cases:
            name, replies, payload = case.name, case.reply, case.payload
            runs = cases[name]
            size = len(case.template)
            wall = summary([r.wall for r in runs])
            rss = summary([r.maxrss_kb for r in runs])
            above = (rss["median"] - floor_rss_kb) * KB
            report["mails"][name] = {
                "message_bytes": size, "payload_bytes": payload,
                "wall_s": wall, "cpu_s": summary([r.cpu for r in runs]),
                "user_s": summary([r.user for r in runs]), "sys_s": summary([r.sys for r in runs]),
                "website_s": summary([r.web for r in runs]),
                "wall_without_website_s": summary([r.wall - r.web for r in runs]),
                "maxrss_kb": rss,
                "wall_over_import_mailparser_floor": wall["median"] / floor_import,
                "wall_without_sendmail_over_import_mailparser_floor":
                    ((wall["median"] - (sink_wall if replies else 0.0)) / floor_import
                     if sink_wall is not None else None),
                "rss_above_requests_mailparser_floor_bytes": above,
                "rss_above_floor_per_message_byte": above / size,
                "rss_above_floor_per_payload_byte": (above / payload) if payload else None,
                "group": case.group, "about": case.about,
                "outcomes": sorted({r.outcome for r in runs}),
                "replies": summary([r.replies for r in runs]), "reply_bytes": summary([r.reply_bytes for r in runs]),
                "exit_codes": sorted({r.code for r in runs}),
            }
        targets = [t for t in TARGETS if t[1] in report["mails"]]
        targets += [(metric, case.name, limit) for case in self.cases if case.group == "hostile"
                    for metric, limit in (("rss", HOSTILE_RSS_TARGET), ("seconds", HOSTILE_SECONDS_TARGET))]
        for metric, case, limit in targets:
            entry = report["mails"][case]
            if metric == "seconds":
                value = entry["wall_s"]["median"]
            elif metric == "wall":
                value = entry["wall_over_import_mailparser_floor" if sink_wall is None
                              else "wall_without_sendmail_over_import_mailparser_floor"]
            else:
                value = entry["rss_above_floor_per_message_byte"]
            report["targets"].append({"metric": metric, "case": case, "value": value, "limit": limit,
                                      "pass": value <= limit})

        report["failures"] = list(self.failures)
        report["load"] = measured["load"]
        if not self.selected("throughput") or "text" not in report["mails"]:
            return report
        text = report["mails"]["text"]
        single_wall = text["wall_without_website_s"]["median"]
        single_cpu = text["cpu_s"]["median"]
        latency_bound = CONCURRENCY / (SLOW_DELAY + single_wall)
        cpu_bound = cores / single_cpu
        bound = min(latency_bound, cpu_bound)
        tp = self.retried("throughput run", lambda: self.throughput(100 if self.quick else 500),
                          lambda found: found["load"])
        tp.update({
            "single_pipe_wall_without_website_s": single_wall, "single_pipe_cpu_s": single_cpu,
            "cores": cores, "latency_bound_per_s": latency_bound, "cpu_bound_per_s": cpu_bound,
            "bound_per_s": bound, "bound_by": "latency" if latency_bound <= cpu_bound else "cpu",
            "fraction_of_bound": tp["messages_per_s"] / bound,
        })
        scaling = self.machine_scaling(16 if self.quick else 64)
        alone = statistics.median(r.cpu for r in floors[f"floor: {SCALING_PROBE}"])
        scaling["cpu_alone_s"] = alone
        scaling["cpu_increase_under_load"] = scaling["cpu_s"]["median"] / alone - 1
        tp["cpu_increase_under_load"] = tp["cpu_s"]["median"] / single_cpu - 1
        tp["machine_scaling"] = scaling
        report["throughput"] = tp
        report["targets"].append({"metric": "throughput", "case": "text x8", "value": tp["fraction_of_bound"],
                                  "limit": THROUGHPUT_TARGET, "pass": tp["fraction_of_bound"] >= THROUGHPUT_TARGET})
        report["failures"] = list(self.failures)
        return report


# --------------------------------------------------------------------------- context and output

def machine(python: str) -> dict:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_kb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_kb = int(line.split()[1])
    except (OSError, ValueError):
        pass
    try:
        pipe_python = subprocess.run([python, "-c", "import sys; print(sys.version.split()[0])"],
                                     capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pipe_python = ""
    return {
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_count": os.cpu_count(), "cpu_model": model or platform.processor(),
        "memory_mb": round(memory_kb / 1024) if memory_kb else None,
        "python": pipe_python or platform.python_version(), "python_executable": python,
        "platform": platform.platform(),
    }


def git_info() -> dict:
    def git(*args):
        try:
            done = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "--short", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def pipe_version(pipe: Path, env: dict) -> str | None:
    try:
        done = subprocess.run([str(pipe), "--version"], capture_output=True, text=True, timeout=30, env=env)
    except (OSError, subprocess.SubprocessError):
        return None
    return (done.stdout or done.stderr).strip() or None


def _ms(stats: dict) -> str:
    half_iqr = (stats["p75"] - stats["p25"]) / 2
    return f"{stats['median'] * 1000:8.1f} ±{half_iqr * 1000:<6.1f}"


def _size(n: int) -> str:
    if n >= MB:
        return f"{n / MB:.1f} MB"
    if n >= KB:
        return f"{n / KB:.0f} KB"
    return f"{n} B"


def print_report(report: dict, meta: dict) -> None:
    m = meta["machine"]
    print()
    print(f"torokiki-pipe benchmark  {meta['date']}  commit {meta['git']['commit'] or '?'}"
          f"{' (dirty)' if meta['git']['dirty'] else ''}  {'QUICK' if meta['quick'] else 'full'} run")
    print(f"machine: {m['nproc']} cores, {m['cpu_model']}, {m['memory_mb']} MB, Python {m['python']}")
    print(f"pipe: {meta['pipe']}  ({meta['pipe_version'] or 'version unknown'})")
    print()
    stand_in = report["sendmail"]["kind"] != "msmtp"
    print(f"sendmail: {report['sendmail']['kind']}: {report['sendmail']['command']}")
    if stand_in:
        print("WARNING: msmtp is not installed: the sendmail is the Python outbox stand-in; the wall "
              "targets are judged without it (-sendmail)")
    print()
    # With the stand-in a second ratio column: the wall without the stand-in, which is judged.
    ratio_head = f"{'wall/floor':>10} {'-sendmail':>9}" if stand_in else f"{'wall/floor':>10}"
    ratio_width = 27 if stand_in else 21
    # The case column fits the longest label (the msmtp sink row's is 44 characters).
    w = max([36] + [len(name) + 1 for name in (*report["floors"], *report["mails"])])
    header = (f"{'case':<{w}}{'size':>9}{'n':>4}  {'wall ms (±½IQR)':<17}{'web ms':>8}{'CPU ms':>8}"
              f"{'RSS MB':>8}  {ratio_head:<{ratio_width - 2}}{'ΔRSS/size':>9}")
    print(header)
    print("-" * len(header))
    for name, entry in report["floors"].items():
        ratio = entry["wall_over_import_mailparser_floor"]
        print(f"{name:<{w}}{'':>9}{entry['wall_s']['n']:>4}  {_ms(entry['wall_s']):<17}{'':>8}"
              f"{entry['cpu_s']['median'] * 1000:8.1f}{entry['maxrss_kb']['median'] / KB:8.1f}  "
              f"{ratio:5.2f}x")
    targets = {(t["metric"], t["case"]): t for t in report["targets"]}
    for name, entry in report["mails"].items():
        if entry.get("group", "standard") != "standard":
            continue
        wall_t, rss_t = targets.get(("wall", name)), targets.get(("rss", name))
        ratio = f"{entry['wall_over_import_mailparser_floor']:5.2f}x"
        if stand_in:
            ratio += f" {entry['wall_without_sendmail_over_import_mailparser_floor']:5.2f}x"
        ratio += f" {verdict(wall_t['pass'])}≤{wall_t['limit']:g}" if wall_t else ""
        per = entry["rss_above_floor_per_message_byte"]
        rss = f"{per:6.2f}x" if entry["message_bytes"] >= 50 * KB else f"{'-':>7}"
        rss += f" {verdict(rss_t['pass'])}≤{rss_t['limit']:g}" if rss_t else ""
        print(f"{name:<{w}}{_size(entry['message_bytes']):>9}{entry['wall_s']['n']:>4}  "
              f"{_ms(entry['wall_s']):<17}{entry['website_s']['median'] * 1000:8.1f}"
              f"{entry['cpu_s']['median'] * 1000:8.1f}{entry['maxrss_kb']['median'] / KB:8.1f}  "
              f"{ratio:<{ratio_width}}{rss}")
    get = report["mails"].get("get-5MB")
    if get:
        print(f"{'':<{w}}get-5MB: ΔRSS {get['rss_above_requests_mailparser_floor_bytes'] / MB:.1f} MB = "
              f"{get['rss_above_floor_per_payload_byte']:.2f}x the 5 MB it fetches")
    libraries = [label for label, _ in LIBRARY_FLOORS if label in report["floors"]]
    if libraries:
        print(f"{'':<{w}}libraries: rows import alone what a path cannot do without; a wall target "
              f"below its row's ratio\n{'':<{w}}is out of reach with those libraries")
    sink = report["floors"].get(SINK_STAND_IN if stand_in else SINK_MSMTP)
    if sink and stand_in:
        print(f"{'':<{w}}every mail but 'ignored' includes one run of the sendmail stand-in "
              f"({sink['wall_s']['median'] * 1000:.0f} ms wall, {sink['cpu_s']['median'] * 1000:.0f} ms CPU);\n"
              f"{'':<{w}}the wall targets are judged without it (-sendmail): it is the MTA's cost")
    elif sink:
        print(f"{'':<{w}}every mail but 'ignored' includes one run of msmtp to the loopback sink "
              f"({sink['wall_s']['median'] * 1000:.0f} ms wall, {sink['cpu_s']['median'] * 1000:.0f} ms CPU),\n"
              f"{'':<{w}}as in production; the wall targets are judged on the whole wall")
    print_hostile(report, w)
    tp = report.get("throughput")
    if tp:
        print_throughput(tp, stand_in)
    print()
    others = [f"{load['foreign_cores']:.2f} cores during the {phase}"
              for phase, load in (("per-mail runs", report["load"]), ("throughput run", (tp or {}).get("load", {})))
              if "foreign_cores" in load]
    if others:
        print("other work on the machine: " + ", ".join(others))
    for load in (report["load"], (tp or {}).get("load", {})):
        if load.get("warning"):
            print(f"WARNING: {load['warning']}")
    passed = sum(t["pass"] for t in report["targets"])
    print(f"targets: {passed}/{len(report['targets'])} pass: " + ", ".join(
        f"{t['case']} {t['metric']} {verdict(t['pass'])}" for t in report["targets"]))
    if report["failures"]:
        print()
        print(f"!!! {len(report['failures'])} FAILED RUN(S): the numbers above are not trustworthy")
        for failure in report["failures"]:
            print(f"!!!   {failure}")


def print_hostile(report: dict, w: int) -> None:
    """The hostile mails against their targets, and the get over any sane size."""
    targets = {(t["metric"], t["case"]): t for t in report["targets"]}
    hostile = {name: entry for name, entry in report["mails"].items() if entry.get("group") == "hostile"}
    if hostile:
        print()
        print(f"hostile mails (issue 12): peak RSS above the `import requests, mailparser` floor at most "
              f"{HOSTILE_RSS_TARGET:g}x the mail, at most {HOSTILE_SECONDS_TARGET:g} s")
        header = (f"{'case':<{w}}{'size':>9}{'n':>4}  {'wall ms (±½IQR)':<17}{'CPU ms':>8}{'RSS MB':>8}"
                  f"  {'wall/floor':>10}  {'ΔRSS/size':>9}        {'outcome'}")
        print(header)
        print("-" * len(header))
        for name, entry in hostile.items():
            rss_t, seconds_t = targets[("rss", name)], targets[("seconds", name)]
            print(f"{name:<{w}}{_size(entry['message_bytes']):>9}{entry['wall_s']['n']:>4}  "
                  f"{_ms(entry['wall_s']):<17}{entry['cpu_s']['median'] * 1000:8.1f}"
                  f"{entry['maxrss_kb']['median'] / KB:8.1f}  {entry['wall_over_import_mailparser_floor']:9.1f}x"
                  f"  {entry['rss_above_floor_per_message_byte']:8.2f}x {verdict(rss_t['pass'] and seconds_t['pass'])}"
                  f"   {','.join(entry['outcomes'])}")
    big = report["mails"].get("get-200MB")
    if big:
        replies = big["replies"]["median"]
        print()
        print(f"get over any sane size ({big['about']}):")
        print(f"  wall {big['wall_s']['median']:.2f} s (website {big['website_s']['median']:.2f} s), "
              f"CPU {big['cpu_s']['median']:.2f} s, peak RSS {big['maxrss_kb']['median'] / KB:.0f} MB "
              f"(ΔRSS {big['rss_above_floor_per_payload_byte']:.2f}x the {_size(big['payload_bytes'])} fetched), "
              f"exit {','.join(map(str, big['exit_codes']))}, outcome {','.join(big['outcomes']) or '?'}, "
              f"{replies:g} repl{'y' if replies == 1 else 'ies'} of {_size(int(big['reply_bytes']['median']))}")


def print_throughput(tp: dict, stand_in: bool) -> None:
    print()
    print(f"throughput: {tp['mails']} text responses, {tp['concurrency']} concurrent pipes, website "
          f"answering in {tp['website_delay_s'] * 1000:.0f} ms")
    print(f"  {tp['messages_per_s']:.2f} msg/s in {tp['elapsed_s']:.1f} s; per pipe under load: wall "
          f"{tp['wall_s']['median'] * 1000:.0f} ms, CPU {tp['cpu_s']['median'] * 1000:.0f} ms (median); "
          f"bench process ({'website' if stand_in else 'website, SMTP sink'}) CPU "
          f"{tp['bench_process_cpu_s_per_message'] * 1000:.1f} ms/msg")
    print(f"  bound = min({tp['concurrency']} / ({tp['website_delay_s']:.3f} + "
          f"{tp['single_pipe_wall_without_website_s']:.3f}) = {tp['latency_bound_per_s']:.2f}, "
          f"{tp['cores']} cores / {tp['single_pipe_cpu_s']:.3f} s = {tp['cpu_bound_per_s']:.2f}) "
          f"= {tp['bound_per_s']:.2f} msg/s ({tp['bound_by']})")
    ok = tp["fraction_of_bound"] >= THROUGHPUT_TARGET
    print(f"  throughput / bound = {tp['fraction_of_bound'] * 100:.0f}%   "
          f"{verdict(ok)} (target ≥ {THROUGHPUT_TARGET * 100:.0f}%)")
    scaling = tp.get("machine_scaling")
    if scaling:
        print(f"  CPU per process with all cores busy: the pipe {tp['single_pipe_cpu_s'] * 1000:.0f} -> "
              f"{tp['cpu_s']['median'] * 1000:.0f} ms ({tp['cpu_increase_under_load'] * 100:+.0f}%); "
              f"the machine alone, {scaling['probe']} x{tp['concurrency']}: "
              f"{scaling['cpu_alone_s'] * 1000:.0f} -> {scaling['cpu_s']['median'] * 1000:.0f} ms "
              f"({scaling['cpu_increase_under_load'] * 100:+.0f}%)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/run.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer repetitions and 100 mails for throughput (CI smoke run)")
    parser.add_argument("--only", type=lambda text: {n.strip() for n in text.split(",") if n.strip()},
                        default=set(), metavar="NAMES",
                        help=f"run only these groups ({', '.join(GROUPS)}) or cases (e.g. media-5MB, "
                             "'hostile: tiny parts'), comma-separated; the floors always run")
    parser.add_argument("--json", type=Path, default=BENCH_DIR / "results" / "last.json",
                        help="where to write the results (default: bench/results/last.json)")
    parser.add_argument("--strict", action="store_true", help="exit 2 when a target fails")
    parser.add_argument("--retries", type=int, default=2,
                        help="with --wait-quiet: measure a phase again this often when other work "
                             "disturbed it (default 2); the least disturbed attempt is kept")
    parser.add_argument("--wait-quiet", type=float, default=0, metavar="SECONDS",
                        help="before the per-mail runs and again before the throughput run, wait up "
                             "to SECONDS for other work on the machine to stop")
    args = parser.parse_args(argv)
    if args.only and args.json == BENCH_DIR / "results" / "last.json":
        args.json = BENCH_DIR / "results" / "partial.json"     # last.json keeps the last full run

    bench = Bench(args)
    meta = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "quick": args.quick,
            "only": sorted(args.only),
            "git": git_info(), "machine": machine(bench.python), "pipe": str(bench.pipe),
            "pipe_version": pipe_version(bench.pipe, bench.env)}
    print(f"benchmarking {bench.pipe} (Python {bench.python}); work folder {bench.work}", flush=True)
    try:
        bench.start()
        report = bench.run()
    finally:
        bench.stop()
    stand_in = report["sendmail"]["kind"] != "msmtp"
    report = {**meta, "targets_definition": {
        "wall": ("(median wall - median wall of the outbox stand-in alone, for mails that get a reply) "
                 "/ median wall of `python -c 'import mailparser'`" if stand_in else
                 "median wall (msmtp delivering the reply included) / median wall of "
                 "`python -c 'import mailparser'`"),
        "rss": "(median peak RSS - median peak RSS of `python -c 'import requests, mailparser'`) "
               "/ message size in bytes",
        "throughput": "messages per second / min(8 / (0.200 s + single pipe wall without website), "
                      "cores / single pipe CPU)",
        "seconds": "median wall in seconds (hostile mails)"}, **report}
    print_report(report, meta)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(f"\nwrote {args.json}")
    if report["failures"]:
        return 1
    if args.strict and not all(t["pass"] for t in report["targets"]):
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
