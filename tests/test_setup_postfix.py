"""`torokiki-pipe setup postfix`: the plan without Postfix, the apply against a real one.

The planner is a pure function (admin/setup.py's `plan`): its tests give it
what postconf would report and read the changes.  The integration tests start
from main.cf as Debian installs it (this machine's /etc/postfix/main.cf, made
private the way tests/test_postfix.py's instance is: its own queue, log and
loopback port, nothing relayed), let `setup postfix --apply` route the
gateway's address, start Postfix and create the config file, then send a mail
by SMTP that is saved on the reference website and answered through msmtp;
a second `--apply` changes nothing.
"""
from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
import signal
import smtplib
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from helpers import GATEWAY, POSTFIX_EXAMPLES, PRIVATE_MASTER_CF, free_port, private_settings, program_for
from torokiki_pipe.admin import setup
from torokiki_pipe.admin.setup import Current, Install, plan

SBIN = Path("/usr/sbin")
ADMIN_ENV = {"PATH": "/usr/sbin:/usr/bin:/bin", "LANG": "C"}
PIPE_USER = "nobody"
DEBIAN_DESTINATIONS = "$myhostname, vm, localhost.localdomain, , localhost"
TOOLS = ("/usr/sbin/postconf", "/usr/sbin/postmap", "/usr/sbin/postfix")

INSTALL = Install(program="/opt/torokiki-pipe/bin/torokiki-pipe", config="/etc/torokiki-pipe/torokiki-pipe.env",
                  address=GATEWAY, user="torokiki", home="/var/lib/torokiki-pipe",
                  log_dir="/var/lib/torokiki-pipe/logs", postfix_dir="/etc/postfix", max_message_bytes=26214400)


def fresh(**changed) -> Current:
    """What a fresh Debian Postfix (running) and a host without the gateway report."""
    values = dict(explicit={"mydestination": DEBIAN_DESTINATIONS, "myhostname": "vm"},
                  values={"mydestination": DEBIAN_DESTINATIONS, "transport_maps": "",
                          "local_recipient_maps": "proxy:unix:passwd.byname $alias_maps",
                          "virtual_alias_domains": "$virtual_alias_maps", "virtual_mailbox_domains":
                          "$virtual_mailbox_maps", "default_database_type": "hash"},
                  expanded={"mydestination": "vm, vm, localhost.localdomain, , localhost",
                            "virtual_alias_domains": "", "virtual_mailbox_domains": ""},
                  service="", transport_text=None, transport_answer="", user_group=None, home_exists=False,
                  log_dir_owner=None, config_exists=False, config_dir_exists=False, running=True)
    values.update(changed)
    return Current(**values)


def installed(current: Current, install: Install = INSTALL) -> Current:
    """`current` after the plan's changes, as postconf would then report it."""
    explicit, values, expanded = dict(current.explicit), dict(current.values), dict(current.expanded)
    service, text = current.service, current.transport_text
    for change in plan(install, current, *TOOLS).changes:
        if change.kind == "main.cf":
            name, _, value = change.argv[-1].partition(" = ")
            explicit[name] = values[name] = value
            if name in expanded:
                expanded[name] = value.replace("$myhostname", "vm")
        elif change.kind == "master.cf":
            service = change.argv[-1].split("=", 1)[1]
        elif change.kind == "map" and change.path:
            text = change.text
    return current._replace(explicit=explicit, values=values, expanded=expanded, service=service,
                            transport_text=text, transport_answer="torokiki:", user_group=install.user,
                            home_exists=True, log_dir_owner=install.user, config_exists=True,
                            config_dir_exists=True, running=True)


def settings_of(changes) -> dict[str, str]:
    return dict(c.argv[-1].split(" = ", 1) for c in changes if c.kind == "main.cf")


# --------------------------------------------------------------------------- the planner

def test_a_fresh_debian_host_gets_everything_in_order_and_debians_destinations_are_kept():
    changes = plan(INSTALL, fresh(), *TOOLS).changes
    assert [c.kind for c in changes] == ["host"] * 5 + ["map"] * 2 + ["main.cf"] * 7 + ["master.cf", "run"]
    settings = settings_of(changes)
    assert settings["mydestination"] == DEBIAN_DESTINATIONS + ", torokiki.net"
    assert settings["transport_maps"] == "hash:/etc/postfix/transport"
    assert settings["local_recipient_maps"] == "proxy:unix:passwd.byname $alias_maps, hash:/etc/postfix/transport"
    assert settings["torokiki_destination_recipient_limit"] == "1"
    assert settings["message_size_limit"] == "26214400"
    assert changes[-1].argv == ("/usr/sbin/postfix", "-c", "/etc/postfix", "reload")
    assert all(c.argv[:3] == ("/usr/sbin/postconf", "-c", "/etc/postfix") for c in changes
               if c.kind in ("main.cf", "master.cf"))
    [env] = [c for c in changes if c.path == INSTALL.config]
    assert env.mode == 0o600 and env.owner == "torokiki"
    assert "TOROKIKI_GATEWAY_ADDRESS=gateway@torokiki.net\n" in env.text
    assert "TOROKIKI_LOG_DIR=/var/lib/torokiki-pipe/logs\n" in env.text
    assert "TOROKIKI_API_KEY=\n" in env.text


def test_planned_twice_the_second_plan_is_empty():
    assert plan(INSTALL, installed(fresh()), *TOOLS) == setup.Plan((), ())


def test_other_maps_are_kept_and_the_gateways_transport_map_goes_first():
    current = fresh(values={**fresh().values, "transport_maps": "hash:/etc/postfix/other, regexp:/etc/postfix/re"})
    settings = settings_of(plan(INSTALL, current, *TOOLS).changes)
    assert settings["transport_maps"] == "hash:/etc/postfix/transport, hash:/etc/postfix/other, regexp:/etc/postfix/re"


def test_a_domain_already_local_through_a_variable_is_not_added_again():
    current = fresh(expanded={**fresh().expanded, "mydestination": "torokiki.net, localhost"},
                    values={**fresh().values, "mydestination": "$mydomain, localhost"})
    assert "mydestination" not in settings_of(plan(INSTALL, current, *TOOLS).changes)


def test_an_empty_local_recipient_maps_accepts_everyone_and_is_left_alone():
    current = fresh(values={**fresh().values, "local_recipient_maps": ""})
    assert "local_recipient_maps" not in settings_of(plan(INSTALL, current, *TOOLS).changes)


def test_the_administrators_tunings_are_kept_but_the_recipient_limit_is_required():
    explicit = {**fresh().explicit, "torokiki_destination_concurrency_limit": "20",
                "message_size_limit": "52428800", "torokiki_destination_recipient_limit": "10"}
    changes = plan(INSTALL, fresh(explicit=explicit), *TOOLS).changes
    settings = settings_of(changes)
    assert "torokiki_destination_concurrency_limit" not in settings and "message_size_limit" not in settings
    assert settings["torokiki_destination_recipient_limit"] == "1"
    assert any("(was: 10)" in c.what for c in changes)


def test_a_service_that_differs_is_replaced_and_postfix_reloaded():
    current = installed(fresh())
    current = current._replace(service=current.service.replace("flags=DRX", "flags=R"))
    [service, reload] = plan(INSTALL, current, *TOOLS).changes
    assert service.kind == "master.cf" and service.what.startswith("master.cf: replace")
    assert reload.what == "reload Postfix"


def test_a_postfix_that_is_not_running_is_started_even_with_nothing_else_to_do():
    [start] = plan(INSTALL, installed(fresh())._replace(running=False), *TOOLS).changes
    assert start.argv == ("/usr/sbin/postfix", "-c", "/etc/postfix", "start")


def test_only_host_changes_need_no_reload():
    changes = plan(INSTALL, installed(fresh())._replace(log_dir_owner="root"), *TOOLS).changes
    assert [c.argv for c in changes] == [("install", "-d", "-o", "torokiki", "-g", "torokiki", "-m", "0700",
                                          "/var/lib/torokiki-pipe/logs")]


def test_an_existing_transport_map_keeps_its_lines_and_a_wrong_route_is_corrected():
    text = "# mine\nother@torokiki.net  smtp:[mx2]\n"
    assert setup.transport_text(text, GATEWAY) == text + "gateway@torokiki.net    torokiki:\n"
    wrong = text + "Gateway@torokiki.net  smtp:[old]\n"
    assert setup.transport_text(wrong, GATEWAY) == text + "gateway@torokiki.net    torokiki:\n"
    assert setup.transport_text(text + "gateway@torokiki.net\ttorokiki:\n", GATEWAY) is None


def test_what_cannot_be_set_up_changes_nothing():
    virtual = fresh(expanded={**fresh().expanded, "virtual_alias_domains": "torokiki.net"})
    assert plan(INSTALL, virtual, *TOOLS).changes == ()
    assert "virtual_alias_domains" in plan(INSTALL, virtual, *TOOLS).problems[0]
    spaced = INSTALL._replace(config="/etc/my config.env")
    assert "white space" in plan(spaced, fresh(), *TOOLS).problems[0]
    assert "not local@domain" in plan(INSTALL._replace(address="gateway"), fresh(), *TOOLS).problems[0]


def test_the_service_is_the_one_postfix_master_cf_documents():
    text = (POSTFIX_EXAMPLES / "master.cf").read_text().splitlines()
    start = next(i for i, line in enumerate(text) if line.startswith("torokiki "))
    documented = [text[start]] + [line for line in text[start + 1:] if line[:1].isspace() and line.strip()]
    assert setup.service_entry(INSTALL).split() == " ".join(documented).split()


def test_the_settings_are_the_ones_postfix_main_cf_documents():
    documented = dict(line.split(" = ", 1) for line in (POSTFIX_EXAMPLES / "main.cf").read_text().splitlines()
                      if line.strip() and not line.startswith(("#", " ", "\t")))
    planned = settings_of(plan(INSTALL, fresh(), *TOOLS).changes)
    for name in ("torokiki_destination_recipient_limit", "torokiki_destination_concurrency_limit",
                 "torokiki_time_limit", "message_size_limit", "transport_maps"):
        assert planned[name] == documented[name], name


def test_without_apply_each_change_is_shown_with_what_makes_it():
    lines = [line for c in plan(INSTALL, fresh(), *TOOLS).changes for line in setup.show(c)]
    assert "    $ /usr/sbin/postconf -c /etc/postfix -e 'torokiki_destination_recipient_limit = 1'" in lines
    assert "    | TOROKIKI_GATEWAY_ADDRESS=gateway@torokiki.net" in lines
    assert sum(line.startswith("would: ") for line in lines) == 16


@pytest.mark.integration  # runs postconf
def test_apply_by_anyone_but_root_is_refused_with_the_commands(monkeypatch, capsys, tmp_path):
    if setup.find_tools() is None:
        pytest.skip("Postfix is not installed")
    config = tmp_path / "etc"
    config.mkdir()
    (config / "main.cf").write_text("compatibility_level = 3.6\n")
    (config / "master.cf").write_text("")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    code = setup.main(["postfix", "--apply", "-c", str(config), "--address", GATEWAY,
                       "--config", str(tmp_path / "env"), "--home", str(tmp_path / "home")])
    out, err = capsys.readouterr()
    assert code == os.EX_NOPERM and "needs root" in err
    assert "would: main.cf: torokiki_destination_recipient_limit = 1" in out
    assert (config / "main.cf").read_text() == "compatibility_level = 3.6\n"


@pytest.mark.integration  # runs postconf
def test_a_folder_without_main_cf_is_no_postfix_to_set_up(capsys, tmp_path):
    if setup.find_tools() is None:
        pytest.skip("Postfix is not installed")
    code = setup.main(["postfix", "-c", str(tmp_path), "--address", GATEWAY, "--config", str(tmp_path / "env")])
    assert code == os.EX_CONFIG and "no main.cf" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.integration  # runs postconf
def test_no_address_or_another_than_the_configs_is_a_usage_error(capsys, tmp_path):
    if setup.find_tools() is None:
        pytest.skip("Postfix is not installed")
    assert setup.main(["postfix", "--config", str(tmp_path / "absent.env")]) == os.EX_USAGE
    assert "--address" in capsys.readouterr().err
    env = tmp_path / "torokiki.env"
    env.write_text("TOROKIKI_GATEWAY_ADDRESS=other@torokiki.net\n")
    assert setup.main(["postfix", "--config", str(env), "--address", GATEWAY]) == os.EX_USAGE
    assert "other@torokiki.net" in capsys.readouterr().err


# --------------------------------------------------------------------------- a real Postfix

def _skip_unless_postfix_can_run():
    if not (SBIN / "postfix").is_file() or not Path("/etc/postfix/main.cf").is_file():
        pytest.skip("Postfix is not installed (apt-get install postfix; `make test` does it)")
    if os.geteuid() != 0:
        pytest.skip("a private Postfix instance needs root (its master runs as root, the pipe switches users)")



class Instance:
    def __init__(self, base: Path, program: str):
        self.base, self.program = base, program
        self.config = base / "etc"                      # Postfix's
        self.home = base / "pipe"                       # made by setup
        self.env = base / "gateway" / "torokiki-pipe.env"  # made by setup
        self.port = 0

    def run(self, name: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run([str(SBIN / name), "-c", str(self.config), *args], capture_output=True,
                              text=True, timeout=60, env=ADMIN_ENV)
        assert not check or done.returncode == 0, f"{name} {args}: {done.stderr}\n{self.maillog()}"
        return done

    def setup(self, pipe_program: str, *args: str) -> subprocess.CompletedProcess:
        environ = {k: v for k, v in os.environ.items() if not k.startswith(("TOROKIKI_", "MAIL_"))}
        return subprocess.run([pipe_program, "setup", "postfix", "-c", str(self.config), "--address", GATEWAY,
                               "--config", str(self.env), "--user", PIPE_USER, "--home", str(self.home),
                               "--program", self.program, *args],
                              capture_output=True, text=True, timeout=120, env=environ)

    def maillog(self, last: int = 4000) -> str:
        try:
            return (self.base / "maillog").read_text(errors="replace")[-last:]
        except OSError:
            return "(no maillog)"

    def files(self) -> dict[str, bytes]:
        return {name: (self.config / name).read_bytes() for name in ("main.cf", "master.cf")}


def _stop(instance: Instance) -> None:
    instance.run("postfix", "stop", check=False)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        busy = []
        for entry in Path("/proc").iterdir():
            try:
                where = Path(os.readlink(entry / "cwd")) if entry.name.isdigit() else None
            except OSError:
                continue
            if where is not None and (where == instance.base or instance.base in where.parents):
                busy.append(int(entry.name))
        if not busy:
            return
        time.sleep(0.2)
    for pid in busy:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="module")
def debian(pipe_program):
    """A private Postfix whose main.cf is Debian's fresh one, not yet running, and no gateway."""
    _skip_unless_postfix_can_run()
    base = Path(tempfile.mkdtemp(prefix="torokiki-setup-", dir="/tmp"))
    try:
        base.chmod(0o755)
        instance = Instance(base, program_for(PIPE_USER, pipe_program, base))
        instance.config.mkdir(mode=0o755)
        (base / "spool").mkdir(mode=0o755)
        shutil.copy("/etc/postfix/main.cf", instance.config / "main.cf")
        instance.port = free_port()
        (instance.config / "master.cf").write_text(PRIVATE_MASTER_CF.format(port=instance.port))
        instance.run("postconf", "-e", *(f"{k} = {v}" for k, v in private_settings(base).items()))
        yield instance
    finally:
        try:
            _stop(instance)
        finally:
            shutil.rmtree(base, ignore_errors=True)


def _wait(condition, what: str, instance: Instance, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}\n--- maillog:\n{instance.maillog()}")
        time.sleep(0.1)
    return value


@pytest.mark.integration
def test_setup_shows_and_changes_nothing_without_apply(debian, pipe_program):
    before = debian.files()
    done = debian.setup(pipe_program)
    assert done.returncode == os.EX_OK, done.stderr
    assert f"would: main.cf: mydestination = {DEBIAN_DESTINATIONS}, torokiki.net" in done.stdout
    assert "would: start Postfix" in done.stdout
    assert debian.files() == before and not debian.env.exists()


@pytest.mark.integration
def test_setup_applied_to_a_fresh_debian_main_cf_delivers_a_mail_saved_and_answered(
        debian, pipe_program, website, smtp_sink, msmtp):
    before = debian.files()
    done = debian.setup(pipe_program, "--apply")
    assert done.returncode == os.EX_OK, done.stdout + done.stderr + debian.maillog()
    lines = done.stdout.splitlines()
    assert lines[-3:-1] == ["checked: postfix check", "done: start Postfix"]
    assert lines[-1].startswith(f"next: put the website's key in {debian.env} ")
    assert sum(line.startswith("backup: ") for line in lines) == 2
    [backup] = debian.config.glob("main.cf.torokiki-backup-*")
    assert backup.read_bytes() == before["main.cf"]
    # Debian's destinations kept as written, the gateway's domain added.
    assert debian.run("postconf", "-h", "mydestination").stdout.strip() == DEBIAN_DESTINATIONS + ", torokiki.net"
    assert debian.run("postmap", "-q", GATEWAY, f"hash:{debian.config}/transport").stdout.strip() == "torokiki:"
    # The config file from the template, and logs/, the pipe user's.
    user = pwd.getpwnam(PIPE_USER)
    assert stat.S_IMODE(debian.env.stat().st_mode) == 0o600 and debian.env.stat().st_uid == user.pw_uid
    assert "TOROKIKI_API_KEY=\n" in debian.env.read_text()
    assert (debian.home / "logs").stat().st_uid == user.pw_uid

    # "Edit the key": here the test's website and msmtp instead of the real ones.
    rc = debian.home / "msmtprc"
    rc.write_text(msmtp.rc.read_text())
    os.chown(rc, user.pw_uid, user.pw_gid)
    rc.chmod(0o600)
    text = debian.env.read_text().replace("TOROKIKI_API_KEY=\n", f"TOROKIKI_API_KEY={website.api_key}\n")
    text += f"TOROKIKI_API_URL={website.url}\nTOROKIKI_SENDMAIL={shlex.join([msmtp.path, '-C', str(rc)])}\n"
    debian.env.write_text(text)
    # The administrator's last step: check says mail will flow, Postfix side included.
    checked = subprocess.run([debian.program, "check", "--config", str(debian.env), "--postfix-config",
                              str(debian.config)], capture_output=True, text=True, timeout=120, env=ADMIN_ENV)
    assert checked.returncode == os.EX_OK and "problem" not in checked.stdout, checked.stdout + checked.stderr

    message = (f"From: Kiri Tane <kiri@example.net>\r\nTo: {GATEWAY}\r\n"
               "Subject: create-response-to: 'http://torokiki.net/image/1/response'\r\n"
               "Message-ID: <setup-1@example.net>\r\nDate: Tue, 14 May 2024 08:12:24 +1200\r\n\r\n"
               "text: 'Trams ran here until 1964'\r\n").encode()
    with smtplib.SMTP("127.0.0.1", debian.port, timeout=30) as smtp:
        smtp.sendmail("kiri@example.net", [GATEWAY], message)
    [reply] = _wait(lambda: smtp_sink.messages, "the reply", debian)
    [item] = website.stats()["items"]
    assert item["content"]["Text"] == "Trams ran here until 1964"
    assert list(reply.rcpt_tos) == ["kiri@example.net"]
    assert item["location"] in reply.message().get_body(("plain",)).get_content()
    _wait(lambda: re.search(r"to=<gateway@torokiki\.net>, relay=torokiki, .*status=sent", debian.maillog(0)),
          "pipe(8)'s status=sent", debian)


@pytest.mark.integration
def test_setup_applied_twice_changes_nothing(debian, pipe_program):
    first = debian.setup(pipe_program, "--apply")   # done already when the test above ran
    assert first.returncode == os.EX_OK, first.stdout + first.stderr
    before = debian.files()
    backups = sorted(debian.config.glob("*.torokiki-backup-*"))
    env = debian.env.read_bytes()
    done = debian.setup(pipe_program, "--apply")
    assert done.returncode == os.EX_OK, done.stdout + done.stderr
    assert done.stdout.startswith("nothing to change: ") and len(done.stdout.splitlines()) == 1
    assert debian.files() == before and debian.env.read_bytes() == env
    assert sorted(debian.config.glob("*.torokiki-backup-*")) == backups


@pytest.mark.integration
def test_a_failing_postfix_check_stops_before_postfix_is_started(pipe_program, tmp_path):
    _skip_unless_postfix_can_run()
    tmp_path.chmod(0o755)
    instance = Instance(tmp_path, pipe_program)
    instance.config.mkdir()
    (tmp_path / "spool").mkdir()
    shutil.copy("/etc/postfix/main.cf", instance.config / "main.cf")
    (instance.config / "master.cf").write_text(PRIVATE_MASTER_CF.format(port=free_port()))
    settings = {**private_settings(tmp_path), "daemon_directory": f"{tmp_path}/no-daemons-here"}
    instance.run("postconf", "-e", *(f"{k} = {v}" for k, v in settings.items()))
    try:
        done = instance.setup(pipe_program, "--apply")
        assert done.returncode == os.EX_CONFIG, done.stdout + done.stderr
        last = done.stdout.splitlines()[-1]
        assert last.startswith("failed: postfix check exited 1: ") and "maillog" in last
        assert "start Postfix" not in last and instance.run("postfix", "status", check=False).returncode != 0
    finally:
        _stop(instance)
