"""The lowest dependency versions setup.cfg states really work (issue 12, item 19).

tests/min-versions.txt pins filelock, python-dotenv and mail-parser
at the minimum of setup.cfg's install_requires.  This builds a scratch venv
with exactly those (from the package index; skipped, saying so, when it cannot
be reached), runs this source tree's pipe with it on every example mail
against the reference website and msmtp, and exercises what each minimum is
there for: FileLock(mode=), dotenv's parser errors, mail-parser's header view
and RFC 2047 file names, and the website exchange itself.  About 10-30 s,
most of it pip (its cache makes later runs faster).
"""
from __future__ import annotations

import base64
import configparser
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from helpers import EXAMPLES, example

ROOT = Path(__file__).resolve().parent.parent
PINS = Path(__file__).resolve().parent / "min-versions.txt"
PIP_TIMEOUT = 300


def pinned() -> dict[str, str]:
    pins = {}
    for line in PINS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[name.strip().lower()] = version.strip()
    return pins


def test_setup_cfg_states_the_tested_minimums():
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    stated = {}
    for requirement in parser["options"]["install_requires"].split("\n"):
        if requirement.strip():
            name, version = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*>=\s*([0-9.]+)\s*", requirement).groups()
            stated[name.lower()] = version
    assert stated == pinned()


def _pip(*args, python=None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    if python is not None:
        command += ["--python", str(python)]
    return subprocess.run(command + list(args), capture_output=True, text=True, timeout=PIP_TIMEOUT)


@pytest.fixture(scope="module")
def min_pipe(tmp_path_factory) -> Path:
    """A program that runs this source tree's pipe with the minimum versions, and nothing newer."""
    where = tmp_path_factory.mktemp("min-versions")
    probe = _pip("download", "--no-deps", "-q", "-d", str(where / "probe"), f"filelock=={pinned()['filelock']}")
    if probe.returncode != 0:
        pytest.skip("the package index cannot be reached, so the minimum versions cannot be installed: "
                    + (probe.stderr.strip().splitlines() or ["(pip said nothing)"])[-1][:200])
    venv = where / "venv"
    # Without pip of its own (0.3 s instead of 5): this test's pip installs into it.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    done = _pip("install", "-q", "-r", str(PINS), python=python)
    if done.returncode != 0 and "no such option" in done.stderr:      # a pip older than 22.3
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, timeout=300)
        done = subprocess.run([str(python), "-m", "pip", "--disable-pip-version-check", "install", "-q",
                               "-r", str(PINS)], capture_output=True, text=True, timeout=PIP_TIMEOUT)
    assert done.returncode == 0, f"pip could not install {PINS.name}:\n{done.stdout}\n{done.stderr}"
    versions = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; "
                            "print(' '.join(f'{n}=={m.version(n)}' for n in "
                            "('filelock', 'python-dotenv', 'mail-parser')))"],
        capture_output=True, text=True, check=True, timeout=60).stdout.split()
    assert versions == [f"{name}=={version}" for name, version in pinned().items()]
    program = venv / "bin" / "torokiki-pipe-min"
    # The source tree on the path, as an editable install would put it; no console-script build needed.
    program.write_text(f"#!/bin/sh\nPYTHONPATH='{ROOT}' exec '{python}' -m torokiki_pipe \"$@\"\n")
    program.chmod(0o755)
    return program


def run(program, config, message: bytes, *args) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TOROKIKI_") and k != "PYTHONPATH"}
    return subprocess.run([str(program), "--config", os.fspath(config), *args], input=message,
                          capture_output=True, timeout=60, env=environ)


def outcomes(log_dir: Path) -> list[str]:
    text = (log_dir / "torokiki-pipe.log").read_text()
    return re.findall(r" outcome=(\S+) ", text)


@pytest.mark.integration  # a venv of its own
def test_every_example_with_the_minimum_versions(min_pipe, pipe_env, website, smtp_sink):
    names = sorted(p.name for p in EXAMPLES.glob("*.eml"))
    for name in names:
        done = run(min_pipe, pipe_env, example(name))
        assert done.returncode == 0 and done.stderr == b"", (name, done.stderr)
    assert outcomes(pipe_env.log_dir) == ["answered", "answered", "saved", "saved", "saved", "invalid", "ignored"]
    assert len(website.stats()["items"]) == 3
    smtp_sink.wait_for(6)
    # filelock's mode=: the journal's and the reply counters' lock files are private.
    locks = list(pipe_env.log_dir.rglob("*.lock"))
    assert all(stat.S_IMODE(p.stat().st_mode) & 0o077 == 0 for p in locks), locks
    # A redelivery is a duplicate: the journal works under this filelock.
    assert run(min_pipe, pipe_env, example("03-text-response.eml")).returncode == 0
    assert outcomes(pipe_env.log_dir)[-1] == "duplicate"


@pytest.mark.integration  # a venv of its own
def test_file_names_through_mail_parser_with_the_minimum_versions(min_pipe, pipe_env, website, smtp_sink):
    picture = bytes(range(256)) * 8
    for number, (header, expected) in enumerate([
            ("Content-Disposition: attachment; filename=\"k\u014dwhai.png\"", "k\u014dwhai.png"),   # raw 8-bit
            ("Content-Disposition: attachment; filename=\"=?utf-8?q?tram_=C4=81.png?=\"", "tram \u0101.png")]):
        message = (f"From: Kiri Tane <kiri@example.net>\nTo: gateway@torokiki.net\n"
                   f"Subject: create-response-to: 'http://torokiki.net/image/2/response'\n"
                   f"Message-ID: <names{number}@example.net>\nMIME-Version: 1.0\n"
                   f"Content-Type: multipart/mixed; boundary=b\n\n"
                   f"--b\nContent-Type: text/plain\n\ntags: 'tram'\n"
                   f"--b\nContent-Type: image/png\nContent-Transfer-Encoding: base64\n{header}\n\n"
                   + base64.encodebytes(picture).decode() + "--b--\n").encode("utf-8")
        done = run(min_pipe, pipe_env, message)
        assert done.returncode == 0, done.stderr
        location = website.stats()["items"][-1]["location"]
        content = requests.get(website.url + location.split("torokiki.net", 1)[1], timeout=10).json()
        assert content["Attachment"]["name"] == expected
        assert base64.b64decode(content["Attachment"]["data"]) == picture


@pytest.mark.integration  # a venv of its own
def test_configuration_with_the_minimum_versions(min_pipe, pipe_env, website, smtp_sink):
    checked = subprocess.run([str(min_pipe), "check", "--config", os.fspath(pipe_env)], capture_output=True,
                             text=True, timeout=60)
    assert checked.returncode == 0, checked.stderr
    broken = pipe_env.variant("broken.env", TOROKIKI_REPLY_LIMIT='"5/hour')
    broken.write_text(broken.read_text() + "TOROKIKI_SYSLOG: mail\n")
    done = run(min_pipe, broken, example("01-help.eml"))
    [line] = done.stderr.decode().splitlines()
    assert done.returncode == 75 and line.startswith("4.3.5 config-error: ") and "cannot be parsed" in line, line
    assert smtp_sink.messages == []
