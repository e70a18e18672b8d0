"""What a production install holds: the wheel as `pip wheel` builds it, and the example mails.

The wheel is built (`pip wheel --no-deps`) from a copy of this tree's files (tracked and
not ignored), so that a stale build/ left by an earlier build cannot add to it.  It must
hold the gateway, its templates, the example mails and the reference website, and none
of the development tools (torokiki_pipe/devtools/: the demo, the outbox stand-in, the SMTP
sink, the browser check), which run from a checkout only.  Installed alone into a fresh
venv, its `example` and `reference-site` commands work without the checkout.
"""

from __future__ import annotations

import email
import email.policy
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from torokiki_pipe.admin import example

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "torokiki_pipe"
EXAMPLE_NAMES = sorted(p.stem for p in (PACKAGE / "examples").glob("*.eml"))
RUNTIME_REQUIREMENTS = {"filelock", "python-dotenv", "mail-parser"}


def _tree_files() -> list[str]:
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO, capture_output=True, timeout=60)
    if listed.returncode != 0:
        pytest.skip(f"not a git checkout: {listed.stderr.decode(errors='replace').strip()}")
    return [name for name in listed.stdout.decode().split("\0") if name]


def _copy_tree(target: Path) -> None:
    for name in _tree_files():
        source, copy = REPO / name, target / name
        if not os.path.lexists(source):        # deleted in the work tree, not yet in the index
            continue
        copy.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            os.symlink(os.readlink(source), copy)
        else:
            shutil.copy2(source, copy)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    tree, out = tmp_path_factory.mktemp("tree"), tmp_path_factory.mktemp("wheel")
    _copy_tree(tree)
    built = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "wheel", "--no-deps",
                            "-q", "-w", str(out), str(tree)], capture_output=True, text=True, timeout=300)
    if built.returncode != 0 and "No matching distribution found for setuptools" in built.stderr:
        pytest.skip("the build backend (setuptools) cannot be installed: no package index reachable")
    assert built.returncode == 0, built.stderr[-3000:]
    wheels = list(out.glob("torokiki_pipe-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def _names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


@pytest.mark.integration  # pip builds the wheel
def test_the_wheel_holds_no_development_tool(wheel):
    names = _names(wheel)
    assert sorted(n for n in names if "/devtools/" in n or n.endswith("/devtools")) == []
    with zipfile.ZipFile(wheel) as archive:
        importing = sorted(n for n in names if n.endswith(".py")
                           and b"torokiki_pipe.devtools" in archive.read(n))
    assert importing == [], "installed code names a module that is not installed"


@pytest.mark.integration  # pip builds the wheel
def test_the_wheel_holds_the_templates_the_examples_and_the_reference_site(wheel):
    names = _names(wheel)
    templates = {f"torokiki_pipe/templates/{p.name}" for p in (PACKAGE / "templates").iterdir() if p.is_file()}
    assert templates and templates <= names
    assert {f"torokiki_pipe/examples/{n}.eml" for n in EXAMPLE_NAMES} <= names and len(EXAMPLE_NAMES) >= 7
    assert {"torokiki_pipe/reference_site/__main__.py", "torokiki_pipe/reference_site/server.py",
            "torokiki_pipe/reference_site/store.py", "torokiki_pipe/reference_site/contract.py",
            "torokiki_pipe/admin/example.py", "torokiki_pipe/cli.py"} <= names


@pytest.mark.integration  # pip builds the wheel
def test_the_wheel_requires_only_the_runtime_dependencies(wheel):
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        parsed = email.message_from_bytes(archive.read(metadata), policy=email.policy.compat32)
        entry_points = next(n for n in archive.namelist() if n.endswith(".dist-info/entry_points.txt"))
        assert "torokiki-pipe = torokiki_pipe.__main__:main" in archive.read(entry_points).decode()
    unconditional = {r.split(";")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower()
                     for r in parsed.get_all("Requires-Dist", []) if "extra ==" not in r}
    assert unconditional == RUNTIME_REQUIREMENTS


@pytest.mark.integration  # a venv, pip, the installed commands
def test_installed_alone_the_example_and_reference_site_commands_work(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python, command = venv / "bin" / "python", str(venv / "bin" / "torokiki-pipe")
    installed = subprocess.run([str(python), "-m", "pip", "--disable-pip-version-check", "install", "-q",
                                "--no-deps", "--no-index", str(wheel)], capture_output=True, text=True, timeout=120)
    assert installed.returncode == 0, installed.stderr[-2000:]
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("TOROKIKI_", "PYTHON"))}

    listed = subprocess.run([command, "example", "--list"], capture_output=True, text=True, timeout=60,
                            cwd=tmp_path, env=environ)
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[0] for line in listed.stdout.splitlines()] == EXAMPLE_NAMES
    printed = subprocess.run([command, "example", "01-help"], capture_output=True, timeout=60, cwd=tmp_path,
                             env=environ)
    assert printed.returncode == 0 and printed.stdout == (PACKAGE / "examples" / "01-help.eml").read_bytes()

    missing = subprocess.run([str(python), "-c", "import torokiki_pipe.devtools"], capture_output=True, text=True,
                             timeout=60, cwd=tmp_path, env=environ)
    assert "ModuleNotFoundError" in missing.stderr

    site = subprocess.Popen([command, "reference-site", "--port", "0", "--store", str(tmp_path / "store"),
                             "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                            env=environ)
    try:
        line = site.stdout.readline()
    finally:
        site.terminate()
        assert site.wait(timeout=10) == 0, site.stderr.read()
    assert line.startswith("listening on http://127.0.0.1:") and "TOROKIKI_API_URL=http://127.0.0.1:" in line


# --------------------------------------------------------------------------- torokiki-pipe example

def test_example_list_names_every_installed_mail_with_its_subject(capsys):
    assert example.main(["--list"]) == os.EX_OK
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == EXAMPLE_NAMES
    assert lines[0].split(None, 1)[1] == "help"


@pytest.mark.parametrize("name", ["01-help", "01-help.eml", "help"])
def test_example_prints_the_mail_byte_for_byte(name, capsysbinary):
    assert example.main([name]) == os.EX_OK
    assert capsysbinary.readouterr().out == (REPO / "examples" / "01-help.eml").read_bytes()


def test_example_from_makes_a_new_mail_of_that_sender(capsysbinary):
    assert example.main(["get", "--from", "Ana <ana@example.org>", "--to", "mail@staging.example"]) == os.EX_OK
    raw, original = capsysbinary.readouterr().out, (REPO / "examples" / "02-get.eml").read_bytes()
    changed = (b"return-path:", b"from:", b"to:", b"message-id:", b"date:")
    # Only those fields are rewritten: every other line, folding and line ending as written.
    assert ([line for line in raw.splitlines(keepends=True) if not line.lower().startswith(changed)]
            == [line for line in original.splitlines(keepends=True) if not line.lower().startswith(changed)])
    new = email.message_from_bytes(raw, policy=email.policy.default)
    old = email.message_from_bytes(original, policy=email.policy.default)
    assert new["From"] == "Ana <ana@example.org>" and new["Return-Path"] == "<ana@example.org>"
    assert new["To"] == "mail@staging.example"
    assert new["Message-ID"] != old["Message-ID"] and new["Message-ID"].endswith("@example.org>")
    assert new["Date"] != old["Date"] and new["Subject"] == old["Subject"]
    assert new.get_content() == old.get_content()


def test_example_unknown_name_is_a_usage_error_naming_the_examples(capsys):
    assert example.main(["nope"]) == os.EX_USAGE
    error = capsys.readouterr().err
    assert "no example 'nope'" in error and "01-help" in error and "\n" == error[-1] and error.count("\n") == 1


def test_the_checkout_examples_folder_is_the_installed_one():
    # examples/ in a checkout is a link to the package data, so the two never differ.
    assert (REPO / "examples").resolve() == (PACKAGE / "examples").resolve()
