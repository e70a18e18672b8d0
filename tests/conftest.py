"""Shared fixtures: a real website, a real SMTP sink, msmtp, and the installed pipe.

- ``website``: the reference Torokiki server (torokiki_pipe.reference_site) on a
  free loopback port with a fresh store; ``.url``, ``.stats()``, ``.control(...)``.
- ``smtp_sink``: an aiosmtpd server on 127.0.0.1 that keeps every message;
  ``.messages``, ``.wait_for(n)``.
- ``msmtp``: the real msmtp, configured to deliver to ``smtp_sink``;
  ``.command`` is the TOROKIKI_SENDMAIL value.  Skips when msmtp is missing.
- ``pipe_env``: an env file (0600) for ``torokiki-pipe --config``, wired to the
  three above; usable as a path.  ``pipe_env.variant(**overrides)`` writes another.
- ``run_pipe(message, *args, config=...)``: runs the installed ``torokiki-pipe``
  as Postfix would (message on stdin) and returns the CompletedProcess (bytes).

The ``integration`` marker (setup.cfg) sets apart what ``make unit`` leaves out:
a test that starts a process or a server, or takes more than about a second.

- Every test that uses one of INTEGRATION_FIXTURES (``website``, ``smtp_sink``,
  ``msmtp``, ``pipe_env``, ``run_pipe``, ``pipe_program``), itself or through
  another fixture, is marked here, at collection; nothing else is marked implicitly.
- A module whose tests all start something says ``pytestmark =
  pytest.mark.integration``; a module's own fixture that starts something (a
  Dovecot, a canned HTTP server) marks the tests using it, one by one.
- Slow tests are marked where they are written.
- A test not marked integration that starts a process (subprocess, fork, spawn)
  or binds or connects a socket fails, naming what it started, so a missing
  marker shows in the first run (watched through the interpreter's audit events,
  from the start of its setup to the end of its call; nothing is intercepted).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

import pytest
import requests

from torokiki_pipe.reference_site.server import serve_in_thread

from helpers import API_KEY, GATEWAY_ADDRESS, SITE_URL, example, write_env_file

PIPE_TIMEOUT = 60
_DEFAULT = object()


# --------------------------------------------------------------------------- the integration marker

# Each starts the installed pipe, msmtp or a server thread (or hands one to the test).
INTEGRATION_FIXTURES = frozenset({"website", "smtp_sink", "msmtp", "pipe_env", "run_pipe", "pipe_program"})
# The audit events (PEP 578) of what only an integration test may do.
_STARTING = frozenset({"subprocess.Popen", "os.posix_spawn", "os.fork", "os.forkpty", "os.system",
                       "socket.bind", "socket.connect"})
_watched: dict = {"on": False, "started": []}


def _audit(event: str, args: tuple) -> None:
    if event in _STARTING and _watched["on"]:
        what = os.path.basename(str(args[0])) if event == "subprocess.Popen" else (
            str(args[1])[:80] if event.startswith("socket.") and len(args) > 1 else "")
        _watched["started"].append(f"{event}({what})")


sys.addaudithook(_audit)    # for the rest of the run: audit hooks cannot be removed


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    for item in items:
        if INTEGRATION_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    _watched["on"] = item.get_closest_marker("integration") is None
    _watched["started"] = []


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item):
    _watched["on"] = False


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    started = sorted(set(_watched["started"]))
    if call.when == "call" and started and report.passed and item.get_closest_marker("integration") is None:
        report.outcome = "failed"
        report.longrepr = (f"{item.nodeid} is not marked integration but started {', '.join(started)}: "
                           "mark it @pytest.mark.integration (see conftest.py)")


# --------------------------------------------------------------------------- website

class Website:
    """A running reference website.  `url` is where the API answers."""

    def __init__(self, server, url: str, store: Path, api_key: str | None):
        self.server, self.url, self.store, self.api_key = server, url, store, api_key
        self.site_url = SITE_URL

    def stats(self) -> dict:
        """GET /_stats: counts (posts, stored, duplicates, rejected, ...) and items."""
        answer = requests.get(self.url + "/_stats", timeout=10)
        answer.raise_for_status()
        return answer.json()

    def control(self, mode: str = "ok", delay: float | None = None, status: int | None = None) -> dict:
        """POST /_control: mode is ok, down, refuse, slow or flaky."""
        body: dict = {"mode": mode}
        if delay is not None:
            body["delay"] = delay
        if status is not None:
            body["status"] = status
        answer = requests.post(self.url + "/_control", json=body, timeout=10)
        answer.raise_for_status()
        return answer.json()


@pytest.fixture
def website(tmp_path):
    """The reference website with seeds 1-3, requiring X-API-Key: API_KEY."""
    store = tmp_path / "website-store"
    server, url = serve_in_thread(store, SITE_URL, api_key=API_KEY)
    try:
        yield Website(server, url, store, API_KEY)
    finally:
        server.shutdown()


# --------------------------------------------------------------------------- SMTP sink

@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes

    def message(self) -> EmailMessage:
        return email.message_from_bytes(self.data, policy=email.policy.default)


@dataclass
class SmtpSink:
    host: str
    port: int
    messages: list = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd API)
        with self._lock:
            self.messages.append(Received(envelope.mail_from, tuple(envelope.rcpt_tos),
                                          bytes(envelope.original_content or envelope.content)))
        return "250 OK"

    def wait_for(self, n: int, timeout: float = 10) -> list[Received]:
        """Wait until at least `n` messages arrived; return them, or fail after `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.messages) >= n:
                    return list(self.messages)
            time.sleep(0.05)
        with self._lock:
            got = len(self.messages)
        raise AssertionError(f"expected {n} message(s) at the SMTP sink within {timeout}s, got {got}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def smtp_sink():
    """An aiosmtpd server on 127.0.0.1 keeping (mail_from, rcpt_tos, data) of each message."""
    from aiosmtpd.controller import Controller

    last_error: Exception | None = None
    for _ in range(5):                  # a free port can be taken between probe and bind
        sink = SmtpSink("127.0.0.1", _free_port())
        controller = Controller(sink, hostname=sink.host, port=sink.port,
                                decode_data=False, enable_SMTPUTF8=True, ready_timeout=10)
        try:
            controller.start()
        except (OSError, RuntimeError, asyncio.TimeoutError) as error:
            last_error = error
            continue
        try:
            yield sink
        finally:
            controller.stop()
        return
    pytest.fail(f"could not start the SMTP sink: {last_error}")


# --------------------------------------------------------------------------- msmtp

@dataclass(frozen=True)
class Msmtp:
    path: str
    rc: Path

    @property
    def command(self) -> str:
        """The TOROKIKI_SENDMAIL value; the gateway appends `-- recipient`."""
        return shlex.join([self.path, "-C", str(self.rc)])


@pytest.fixture
def msmtp(smtp_sink, tmp_path) -> Msmtp:
    """msmtp with a private msmtprc (0600) that delivers to `smtp_sink`."""
    path = shutil.which("msmtp")
    if path is None:
        pytest.skip("msmtp is not installed (apt-get install msmtp; `make test` does it)")
    rc = tmp_path / "msmtprc"
    rc.write_text("\n".join([
        "defaults",
        "auth off",
        "tls off",
        "syslog off",
        "logfile",
        "timeout 15",
        "",
        "account sink",
        f"host {smtp_sink.host}",
        f"port {smtp_sink.port}",
        f"from {GATEWAY_ADDRESS}",
        "",
        "account default : sink",
        "",
    ]))
    rc.chmod(0o600)                     # msmtp refuses a config others can read
    return Msmtp(path, rc)


# --------------------------------------------------------------------------- the pipe

class PipeEnv(os.PathLike):
    """An env file for `torokiki-pipe --config`; `os.fspath(pipe_env)` is its path."""

    def __init__(self, path: Path, values: dict[str, str]):
        self.path, self.values = path, dict(values)
        self.log_dir = Path(values["TOROKIKI_LOG_DIR"])

    def __fspath__(self) -> str:
        return str(self.path)

    def variant(self, name: str = "variant.env", **overrides: str) -> Path:
        """Another env file beside this one, with some values replaced (None removes a key)."""
        values = {**self.values, **overrides}
        return write_env_file(self.path.parent / name, {k: v for k, v in values.items() if v is not None})


@pytest.fixture
def pipe_env(website, msmtp, tmp_path) -> PipeEnv:
    """Config wired to `website` and `msmtp` (and so `smtp_sink`), logs in tmp."""
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    values = {
        "TOROKIKI_SITE_URL": SITE_URL,
        "TOROKIKI_API_URL": website.url,
        "TOROKIKI_API_KEY": API_KEY,
        "TOROKIKI_GATEWAY_ADDRESS": GATEWAY_ADDRESS,
        "TOROKIKI_SENDMAIL": msmtp.command,
        "TOROKIKI_LOG_DIR": str(log_dir),
        "TOROKIKI_HTTP_TIMEOUT": "5",
    }
    return PipeEnv(write_env_file(tmp_path / "torokiki.env", values), values)


@pytest.fixture(scope="session")
def pipe_program() -> str:
    """The installed torokiki-pipe: next to this Python, else on PATH."""
    beside = Path(sys.executable).parent / "torokiki-pipe"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("torokiki-pipe")
    if found is None:
        pytest.fail("torokiki-pipe is not installed: run `pip install -e .` (make test does)")
    return found


@pytest.fixture
def run_pipe(pipe_program, request):
    """run_pipe(message_bytes, *args, config=pipe_env, env=None, timeout=60) -> CompletedProcess.

    `config=None` runs without --config.  The child's environment has no
    TOROKIKI_* variables (they would win over the file) unless given in `env`.
    """
    def run(message: bytes, *args: str, config=_DEFAULT, env: dict | None = None,
            timeout: float = PIPE_TIMEOUT) -> subprocess.CompletedProcess:
        if config is _DEFAULT:
            config = request.getfixturevalue("pipe_env")
        command = [pipe_program, *(["--config", os.fspath(config)] if config is not None else []), *args]
        environ = {k: v for k, v in os.environ.items() if not k.startswith("TOROKIKI_")}
        environ.update(env or {})
        return subprocess.run(command, input=message, capture_output=True, timeout=timeout, env=environ)

    return run


@pytest.fixture
def admin(pipe_program):
    """admin("check", config, *args) runs `torokiki-pipe check --config config *args`."""
    def run(command, config, *args, timeout=60):
        environ = {k: v for k, v in os.environ.items() if not k.startswith("TOROKIKI_")}
        return subprocess.run([pipe_program, command, "--config", os.fspath(config), *map(str, args)],
                              capture_output=True, text=True, timeout=timeout, env=environ)
    return run


@pytest.fixture
def example_mail():
    """example_mail("03-text-response.eml") -> the bytes of that example."""
    return example
