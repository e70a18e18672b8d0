"""Every unusable setting, through the installed pipe and `torokiki-pipe check`.

For each hostile value the pipe must defer the mail the same way: exit 75,
exactly one stderr line starting ``4.3.5 config-error:``, no traceback, all
of stdin read; and `check` must name the same problem (exit 78).  Also: a
`check` whose reader goes away (``check | head -1``), and the warning for a
TOROKIKI_* key the gateway does not know.
"""
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from helpers import write_env_file
from test_postfix import gateway, postfix  # noqa: F401  (fixtures: test_postfix.py's private, running Postfix)

pytestmark = pytest.mark.integration  # every test runs the installed program

GATEWAY = "gateway@torokiki.net"
KEY = "s3cret-test-key"
BIG_MAIL = (f"From: kiri@example.net\nTo: {GATEWAY}\nSubject: help\nMessage-ID: <m1@example.net>\n\n"
            + "x" * 300_000).encode()        # more than a pipe buffer: exiting unread would break the MTA's write


@pytest.fixture
def base_env(tmp_path):
    """A usable env file that needs no website: config errors come before any exchange."""
    return write_env_file(tmp_path / "base.env", {
        "TOROKIKI_API_KEY": KEY, "TOROKIKI_GATEWAY_ADDRESS": GATEWAY, "TOROKIKI_SENDMAIL": "/bin/true",
        "TOROKIKI_LOG_DIR": str(tmp_path / "logs"), "TOROKIKI_API_URL": "http://127.0.0.1:9"})


def clean_environment(**extra):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TOROKIKI_")}
    environ.update(extra)
    return environ


def deliver(pipe_program, config, environ):
    """Run the pipe as the MTA does, writing the whole mail; (exit code, stderr, stdin fully read)."""
    process = subprocess.Popen([pipe_program, "--config", os.fspath(config)], stdin=subprocess.PIPE,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=environ)
    drained = True
    try:
        process.stdin.write(BIG_MAIL)
    except BrokenPipeError:
        drained = False
    finally:
        try:
            process.stdin.close()
        except BrokenPipeError:
            drained = False
    err = process.stderr.read()
    process.stderr.close()
    return process.wait(timeout=60), err.decode("utf-8", "replace"), drained


def check(pipe_program, config, environ):
    return subprocess.run([pipe_program, "check", "--config", os.fspath(config)], capture_output=True,
                          text=True, timeout=60, env=environ)


def assert_deferred_and_checked(pipe_program, config, environ, words):
    code, err, drained = deliver(pipe_program, config, environ)
    assert code == os.EX_TEMPFAIL and drained, (code, err)
    [line] = err.splitlines()
    assert line.startswith("4.3.5 config-error: ") and words in line, line
    assert "Traceback" not in err and KEY not in err
    checked = check(pipe_program, config, environ)
    assert checked.returncode == os.EX_CONFIG, checked
    problem = line[len("4.3.5 config-error: "):]
    assert f"problem: configuration: {problem}" in checked.stderr.splitlines(), (line, checked.stderr)
    assert "Traceback" not in checked.stderr and "crashed" not in checked.stderr
    assert KEY not in checked.stdout + checked.stderr


# Set in the environment, which wins over the file (so no quoting to get wrong).
HOSTILE = [
    ("TOROKIKI_GIVE_UP_AFTER", "nan"), ("TOROKIKI_GIVE_UP_AFTER", "inf"), ("TOROKIKI_GIVE_UP_AFTER", "0min"),
    ("TOROKIKI_GIVE_UP_AFTER", "1e-300"), ("TOROKIKI_GIVE_UP_AFTER", "1_000"), ("TOROKIKI_JOURNAL_EXPIRE", "1s"),
    ("TOROKIKI_HTTP_TIMEOUT", "nan"), ("TOROKIKI_HTTP_TIMEOUT", "0"),
    ("TOROKIKI_MAX_MESSAGE_BYTES", "99999999999999999999"), ("TOROKIKI_MAX_MESSAGE_BYTES", "0x10"),
    ("TOROKIKI_REPLY_LIMIT", "99999999999/hour"), ("TOROKIKI_REPLY_LIMIT", "5/0min"),
    ("TOROKIKI_REPLY_LIMIT", "0/hour"),
    ("TOROKIKI_SITE_URL", "http://torokiki.net:99999"), ("TOROKIKI_SITE_URL", "http://torokiki.net:abc"),
    ("TOROKIKI_API_URL", "http://127.0.0.1:65536"), ("TOROKIKI_API_URL", "http://[::1"),
    ("TOROKIKI_API_URL", "http://admin:pw@127.0.0.1:8080"),
    ("TOROKIKI_API_KEY", "two words"), ("TOROKIKI_API_KEY", "line\nbreak"), ("TOROKIKI_API_KEY", "kéy"),
    ("TOROKIKI_GATEWAY_ADDRESS", f"{GATEWAY}\nBcc: x@example.net"),
    ("TOROKIKI_SENDMAIL", "/usr/sbin/sendmail\n-i"), ("TOROKIKI_LOG_DIR", "/tmp/lo\ngs"),
    ("TOROKIKI_SYSLOG_SOCKET", "dev/log"), ("TOROKIKI_SMTPUTF8", "maybe"), ("TOROKIKI_REPLY_SUBADDRESS", "."), ("TOROKIKI_REPLY_SUBADDRESS", "+-"),
]


@pytest.mark.parametrize("key, value", HOSTILE, ids=[f"{k[9:]}={v!r}" for k, v in HOSTILE])
def test_each_unusable_value_defers_and_check_names_it(pipe_program, base_env, key, value):
    assert_deferred_and_checked(pipe_program, base_env, clean_environment(**{key: value}), key)


# Written into the file as bytes: what python-dotenv reads, or cannot.
FILES = [
    (b"TOROKIKI_REPLY_LIMIT: 5/hour\n", "line 6 cannot be parsed"),
    (b"TOROKIKI_API_CALLER_ID='a\nTOROKIKI_SYSLOG=mail\nTOROKIKI_NULL_SENDER='yes' # x\n", "lines 6-8 cannot"),
    (b"TOROKIKI_REPLY_LIMIT\n", "TOROKIKI_REPLY_LIMIT (line 6) has no '='"),
    (b"TOROKIKI_LOG_DIR=\"/tmp/a\x00b\"\n", "TOROKIKI_LOG_DIR holds a control"),
    (b"TOROKIKI_API_CALLER_ID=caf\xe9\n", "not UTF-8 text (line 6)"),
    (b"TOROKIKI_API_KEY=\"" + KEY.encode() + b"\\nX\"\n", "TOROKIKI_API_KEY holds"),
]


@pytest.mark.parametrize("tail, words", FILES, ids=["colon", "open-quote", "no-equals", "nul", "latin-1",
                                                     "key-with-newline"])
def test_each_unusable_file_defers_and_check_names_it(pipe_program, base_env, tail, words):
    base_env.write_bytes(base_env.read_bytes() + tail)
    assert_deferred_and_checked(pipe_program, base_env, clean_environment(), words)


def test_check_warns_about_a_key_it_does_not_know(pipe_program, pipe_env, website):
    config = pipe_env.variant(TOROKIKI_REPLY_LIMT="5/hour", TOROKIKI_IMAP_SERVER="imap.example")
    done = check(pipe_program, config, clean_environment())
    assert done.returncode == 0, done.stderr                # the pipe runs with it: a warning, not a problem
    [line] = [line for line in done.stderr.splitlines() if line.strip()]
    assert line.startswith("warning: TOROKIKI_REPLY_LIMT") and "did you mean TOROKIKI_REPLY_LIMIT?" in line


def test_check_notes_a_give_up_beyond_the_mta_queue_lifetime(pipe_program, pipe_env, website):
    done = check(pipe_program, pipe_env.variant(TOROKIKI_GIVE_UP_AFTER="6d"), clean_environment())
    assert done.returncode == 0 and "note: TOROKIKI_GIVE_UP_AFTER is longer than Postfix's" in done.stdout


@pytest.mark.parametrize("both", [False, True], ids=["stdout", "stdout-and-stderr"])
@pytest.mark.parametrize("healthy", [True, False], ids=["all-well", "problems"])
def test_check_survives_a_reader_that_goes_away(pipe_program, pipe_env, website, tmp_path, both, healthy):
    # `check | head -1`, at its worst: the reader has gone before the first line.
    config = pipe_env if healthy else pipe_env.variant(TOROKIKI_SENDMAIL="/nonexistent/sendmail")
    read_end, write_end = os.pipe()
    os.close(read_end)
    errors = tmp_path / "stderr"
    with open(errors, "wb") as err:
        process = subprocess.run([pipe_program, "check", "--config", os.fspath(config)], stdout=write_end,
                                 stderr=write_end if both else err, timeout=60, env=clean_environment())
    os.close(write_end)
    said = errors.read_text()
    assert process.returncode == (0 if healthy else os.EX_CONFIG), said      # still the verdict
    assert "crashed" not in said and "Traceback" not in said and "BrokenPipe" not in said, said


def test_check_help_into_a_closed_pipe(pipe_program):
    read_end, write_end = os.pipe()
    os.close(read_end)
    process = subprocess.run([pipe_program, "check", "--help"], stdout=write_end, stderr=subprocess.PIPE,
                             timeout=60, env=clean_environment())
    os.close(write_end)
    assert process.returncode == 0 and process.stderr == b""


def test_an_unreadable_file_argument_exits_66(pipe_program, base_env, tmp_path):
    # README, exit codes: EX_NOINPUT, for a FILE given by hand (Postfix gives stdin).
    done = subprocess.run([pipe_program, "--config", os.fspath(base_env), str(tmp_path / "absent.eml")],
                          capture_output=True, text=True, timeout=60, env=clean_environment())
    assert done.returncode == os.EX_NOINPUT == 66
    [line] = done.stderr.splitlines()
    assert line.startswith("5.3.5 ") and "cannot read the message" in line


# --------------------------------------------------------------------------- the API key probe

def probe_lines(done):
    return [line for line in (done.stdout + done.stderr).splitlines() if "website API" in line]


def test_the_key_probe_says_a_right_key_works_and_saves_nothing(pipe_program, pipe_env, website):
    done = check(pipe_program, pipe_env, clean_environment())
    assert done.returncode == 0, done.stderr
    [line] = probe_lines(done)
    assert line.startswith("ok: website API takes the API key: POST {} to ") and "HTTP 400" in line, line
    stats = website.stats()
    assert (stats["posts"], stats["stored"], stats["unauthorized"], stats["items"]) == (1, 0, 0, [])


def test_the_key_probe_names_a_wrong_key_without_printing_it(pipe_program, pipe_env, website):
    wrong = "wrong-key-0123456789"
    done = check(pipe_program, pipe_env.variant(TOROKIKI_API_KEY=wrong), clean_environment())
    assert done.returncode == os.EX_CONFIG
    [line] = probe_lines(done)
    assert line.startswith("problem: website API ") and "refused the API key (HTTP 401" in line, line
    assert "set TOROKIKI_API_KEY" in line
    assert wrong not in done.stdout + done.stderr and website.api_key not in done.stdout + done.stderr
    assert website.stats()["unauthorized"] == 1 and website.stats()["stored"] == 0


@pytest.mark.parametrize("mode, status, verdict, words", [
    ("refuse", 403, "problem", "refused the API key (HTTP 403"),
    ("down", 503, "problem", "unavailable (HTTP 503"),
    ("down", 429, "problem", "unavailable (HTTP 429"),
    ("refuse", 404, "problem", "says nothing about the key"),
    ("refuse", 405, "problem", "is TOROKIKI_API_URL the Torokiki API"),
    ("refuse", 201, "problem", "it may have saved it"),
    ("echo-key", 422, "ok", "HTTP 422"),
], ids=["403", "503", "429", "404", "405", "saves-empty", "422-echoing-the-key"])
def test_the_key_probe_reads_each_answer(pipe_program, pipe_env, website, mode, status, verdict, words):
    website.control(mode, status=status)
    done = check(pipe_program, pipe_env, clean_environment())
    [line] = probe_lines(done)
    assert line.startswith(f"{verdict}: ") and words in line, line
    assert done.returncode == (0 if verdict == "ok" else os.EX_CONFIG), done
    assert website.api_key not in done.stdout + done.stderr        # echo-key: the website repeats it


def test_the_key_probe_has_a_deadline(pipe_program, pipe_env, website):
    website.control("slow", delay=30)
    started = time.monotonic()
    done = check(pipe_program, pipe_env.variant(TOROKIKI_HTTP_TIMEOUT="2"), clean_environment())
    assert time.monotonic() - started < 20
    [line] = probe_lines(done)
    assert line.startswith("problem: ") and "within 2 s" in line and "Traceback" not in done.stderr, line


def test_the_key_probe_network_failure_is_one_line(pipe_program, pipe_env):
    done = check(pipe_program, pipe_env.variant(TOROKIKI_API_URL="http://127.0.0.1:9"), clean_environment())
    [line] = probe_lines(done)
    assert line.startswith("problem: website API http://127.0.0.1:9/image/1/response cannot be reached: "
                           "connection refused"), line
    assert "Traceback" not in done.stderr and done.returncode == os.EX_CONFIG


# --------------------------------------------------------------------------- the Postfix side

POSTCONF = shutil.which("postconf") or shutil.which("postconf", path="/usr/sbin")
needs_postfix = pytest.mark.skipif(POSTCONF is None, reason="Postfix is not installed (apt-get install postfix; "
                                                            "`make test` does it)")
SERVICE = ("torokiki  unix  -       n       n       -       -       pipe{options}\n"
           "  flags=DRX user=nobody null_sender= directory={home}\n"
           "  argv={program} --config {config} --sender ${{sender}} --recipient ${{recipient}}\n")


class PostfixConfig:
    """A private Postfix configuration directory, never started: what postconf -c and postmap -c read."""

    def __init__(self, folder, pipe_program, gateway_env):
        self.folder, self.program, self.env = folder, pipe_program, gateway_env
        folder.mkdir()
        self.main = {"compatibility_level": "3.6", "queue_directory": f"{folder}/spool",
                     "data_directory": f"{folder}/data", "transport_maps": f"hash:{folder}/transport",
                     "torokiki_time_limit": "1000s", "message_size_limit": "26214400"}
        self.transport = {GATEWAY: "torokiki:"}
        self.virtual: dict = {}
        self.service = {"program": pipe_program, "config": os.fspath(gateway_env), "options": ""}

    def write(self):
        main = dict(self.main)
        if self.virtual:
            main["virtual_alias_maps"] = f"hash:{self.folder}/virtual"
        (self.folder / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in main.items() if v is not None))
        for name, table in (("transport", self.transport), ("virtual", self.virtual)):
            (self.folder / name).write_text("".join(f"{k}  {v}\n" for k, v in table.items()))
            subprocess.run([os.path.join(os.path.dirname(POSTCONF), "postmap"), "-c", str(self.folder),
                            f"hash:{self.folder}/{name}"], check=True, timeout=30)
        service = SERVICE.format(home=self.folder, **self.service) if self.service else ""
        (self.folder / "master.cf").write_text(service)
        return self.folder


def check_postfix(pipe_program, config, postfix_dir):
    done = subprocess.run([pipe_program, "check", "--config", os.fspath(config), "--postfix-config",
                           str(postfix_dir)], capture_output=True, text=True, timeout=60, env=clean_environment())
    assert "Traceback" not in done.stderr, done.stderr
    return done, [line for line in (done.stdout + done.stderr).splitlines()
                  if line.partition(": ")[2].startswith("Postfix")]


@pytest.fixture
def postfix_config(tmp_path, pipe_program, pipe_env):
    return PostfixConfig(tmp_path / "postfix", pipe_program, pipe_env)


@needs_postfix
def test_check_reads_a_right_postfix_side(pipe_program, pipe_env, website, postfix_config):
    done, lines = check_postfix(pipe_program, pipe_env, postfix_config.write())
    assert lines == [                              # stdout, then stderr
        f"ok: Postfix routes {GATEWAY} to the transport torokiki:",
        f"ok: Postfix: master.cf's torokiki/unix runs {pipe_program} --config {os.fspath(pipe_env)}",
        "ok: Postfix's message_size_limit is TOROKIKI_MAX_MESSAGE_BYTES (26214400 bytes)",
        "ok: Postfix's time limit for torokiki is 1000 s (torokiki_time_limit), above the gateway's own 720 s at most",
        f"problem: Postfix is not running (postfix status exited 1): start it (as root) with postfix -c "
        f"{postfix_config.folder} start",
    ], done.stdout + done.stderr
    assert done.returncode == os.EX_CONFIG        # not running: mail would not flow


def _no_route(p):
    p.transport = {"other@torokiki.net": "torokiki:"}
    return "problem", f"route {GATEWAY} nowhere: add '{GATEWAY} torokiki:' to the transport map"


def _no_transport_maps(p):
    p.main["transport_maps"] = None
    return "problem", "transport_maps (not set) route"


def _virtual(p):
    p.virtual = {GATEWAY: "gateway@torokiki-pipe.invalid"}
    p.transport = {"torokiki-pipe.invalid": "torokiki:"}
    return "ok", f"routes {GATEWAY} (virtual_alias_maps: gateway@torokiki-pipe.invalid) to the transport torokiki:"


def _other_program(p):
    p.service["program"] = "/opt/elsewhere/bin/torokiki-pipe"
    return "problem", "runs /opt/elsewhere/bin/torokiki-pipe, not this installation's"


def _other_config(p):
    p.service["config"] = "/etc/torokiki-pipe/other.env"
    return "problem", "reads --config /etc/torokiki-pipe/other.env, but this check read"


def _no_service(p):
    p.service = None
    return "problem", "master.cf has no service torokiki/unix"


def _short_time_limit(p):
    p.main["torokiki_time_limit"] = "10m"
    return "problem", "kills the gateway after 600 s (torokiki_time_limit), before its own limit of 720 s"


def _short_limit_in_master_cf(p):
    p.service["options"] = "\n  -o torokiki_time_limit=300s"
    return "problem", "after 300 s (-o torokiki_time_limit in master.cf)"


def _command_time_limit(p):
    p.main["torokiki_time_limit"] = None
    p.main["command_time_limit"] = "700"
    return "problem", "after 700 s (command_time_limit)"


def _smaller_size_limit(p):
    p.main["message_size_limit"] = "10240000"
    return "note", "Postfix refuses mail over 10240000 bytes (message_size_limit) before the gateway's 26214400"


def _no_size_limit(p):
    p.main["message_size_limit"] = "0"
    return "note", "Postfix takes mail of up to any size (message_size_limit), the gateway reads 26214400"


POSTFIX_CASES = [_no_route, _no_transport_maps, _virtual, _other_program, _other_config, _no_service,
                 _short_time_limit, _short_limit_in_master_cf, _command_time_limit, _smaller_size_limit,
                 _no_size_limit]


@needs_postfix
@pytest.mark.parametrize("change", POSTFIX_CASES, ids=[c.__name__[1:] for c in POSTFIX_CASES])
def test_check_names_each_postfix_finding_with_its_fix(pipe_program, pipe_env, website, postfix_config, change):
    kind, words = change(postfix_config)
    done, lines = check_postfix(pipe_program, pipe_env, postfix_config.write())
    [line] = [line for line in lines if words in line] or [repr(lines)]
    assert line.startswith(f"{kind}: "), line
    others = [line for line in lines if line.startswith("problem: ") and "not running" not in line]
    assert others == ([line] if kind == "problem" else []), lines


def test_check_skips_postfix_when_it_is_absent(pipe_program, pipe_env, website, tmp_path):
    # A PATH without Postfix: what check sees on a host without it (it also looks in /usr/sbin).
    if os.path.exists("/usr/sbin/postconf"):
        pytest.skip("Postfix is installed in /usr/sbin here, where check also looks")
    done = check(pipe_program, pipe_env, clean_environment(PATH="/usr/bin:/bin"))
    assert done.returncode == 0, done.stderr
    assert "note: Postfix checks skipped: postconf is not installed" in done.stdout


@needs_postfix
def test_check_skips_a_postfix_that_does_not_feed_the_gateway(pipe_program, pipe_env, website, postfix_config):
    # procmail or imapfilter may feed the gateway on a host whose Postfix only sends: no false problem.
    postfix_config.write()
    env = clean_environment(MAIL_CONFIG=str(postfix_config.folder))      # postconf's default directory
    postfix_config.transport, postfix_config.service = {}, None
    postfix_config.write()
    done = check(pipe_program, pipe_env, env)
    assert done.returncode == 0, done.stderr
    [line] = [line for line in done.stdout.splitlines() if line.startswith("note: Postfix")]
    assert line.startswith("note: Postfix checks skipped: no master.cf service runs torokiki-pipe"), line


@needs_postfix
def test_check_against_a_running_private_postfix(pipe_program, postfix, gateway, website):
    # test_postfix.py's private instance, started, with postfix/master.cf's service and main.cf's settings.
    config = postfix.home / "torokiki-pipe.env"
    done, lines = check_postfix(pipe_program, config, postfix.config)
    program = postfix.command("postconf", "-M", "torokiki/unix").split("argv=")[1].split()[0]
    service = (f"ok: Postfix: master.cf's torokiki/unix runs {program} --config {config}" if program == pipe_program
               else f"problem: Postfix: master.cf's torokiki/unix runs {program}, not this installation's")
    assert [line for line in lines if not line.startswith(service)] == [
        f"ok: Postfix routes {GATEWAY} to the transport torokiki:",
        "ok: Postfix is running",
        "ok: Postfix's message_size_limit is TOROKIKI_MAX_MESSAGE_BYTES (26214400 bytes)",
        "ok: Postfix's time limit for torokiki is 1000 s (torokiki_time_limit), above the gateway's own 720 s at most",
    ], done.stdout + done.stderr
    assert len(lines) == 5, lines
    # A shim stands in for the program when the pipe user cannot run this Python (test_postfix.py).
    assert done.returncode == (0 if program == pipe_program else os.EX_CONFIG), done.stderr


@needs_postfix
@pytest.mark.skipif(os.geteuid() != 0, reason="the private Postfix runs as root")
def test_check_as_the_pipe_user_reads_the_postfix_side(postfix, gateway, website):
    # postfix status is root's only (as anyone else it exits 1 and says why only in the mail log).
    from test_postfix import PIPE_USER

    config = postfix.home / "torokiki-pipe.env"
    program = postfix.command("postconf", "-M", "torokiki/unix").split("argv=")[1].split()[0]
    done = subprocess.run([program, "check", "--config", str(config), "--postfix-config", str(postfix.config)],
                          capture_output=True, text=True, timeout=60, user=PIPE_USER, cwd="/",
                          env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})
    lines = [line for line in (done.stdout + done.stderr).splitlines() if "Postfix" in line]
    assert f"ok: Postfix: master.cf's torokiki/unix runs {program} --config {config}" in lines, lines
    # postqueue, which any user may run, refuses a private configuration directory that the system's
    # main.cf does not list: a note then, never a false "not running".
    [running] = [line for line in lines if "runs cannot be told" in line or "Postfix is running" in line]
    assert running in ("ok: Postfix is running (postqueue -p reads its queue)",
                       f"note: Postfix: whether it runs cannot be told as this user (postqueue: error: "
                       f"unauthorized configuration directory name: {postfix.config}); ask root: "
                       f"postfix -c {postfix.config} status"), running
    assert done.returncode == 0, done.stdout + done.stderr


def test_postfix_time_values():
    from torokiki_pipe.admin.check import postfix_seconds

    assert [postfix_seconds(t) for t in ("1000s", "1000", "17m", "1h", "2d", "1w", "10x", "")] == \
        [1000, 1000, 1020, 3600, 172800, 604800, None, None]


# --------------------------------------------------------------------------- who vouches for the From

AUTHSERV = "mx.example.org"
MILTERS = "inet:localhost:8891, inet:localhost:8893"
OPENDKIM = {"AuthservID": AUTHSERV, "Socket": "inet:8891@localhost", "RemoveARAll": "yes"}
OPENDMARC = {"AuthservID": AUTHSERV, "Socket": "inet:8893@localhost", "SPFIgnoreResults": "true",
             "SPFSelfValidate": "true"}


class MilterConfig:
    """A folder standing in for /etc: opendkim.conf, opendmarc.conf, rspamd/ as the test writes them."""

    def __init__(self, folder):
        self.folder, self.opendkim, self.opendmarc = folder, dict(OPENDKIM), dict(OPENDMARC)
        self.rspamd: str | None = None      # local.d/milter_headers.conf, when rspamd is there
        self.ids = AUTHSERV                 # TOROKIKI_AUTHSERV_ID
        folder.mkdir()

    def write(self):
        for name in ("opendkim", "opendmarc"):
            values = getattr(self, name)
            if values is not None:          # Debian's style: a comment, then "Name<TAB>value"
                (self.folder / f"{name}.conf").write_text(
                    "# written by the test\n" + "".join(f"{k}\t\t{v}\n" for k, v in values.items()))
        if self.rspamd is not None:
            (self.folder / "rspamd" / "local.d").mkdir(parents=True)
            (self.folder / "rspamd" / "local.d" / "milter_headers.conf").write_text(self.rspamd)
        return self.folder


@pytest.fixture
def milter_config(tmp_path):
    return MilterConfig(tmp_path / "etc")


def authserv_env(pipe_env, postfix_config, **values):
    """An env file with `values`, which the private master.cf's service reads too."""
    config = pipe_env.variant(**values)
    postfix_config.service["config"] = os.fspath(config)
    return config


def check_from_verdict(pipe_program, config, postfix_dir, milter_dir):
    done = subprocess.run([pipe_program, "check", "--config", os.fspath(config), "--postfix-config",
                           str(postfix_dir), "--milter-config", str(milter_dir)], capture_output=True, text=True,
                          timeout=60, env=clean_environment())
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in (done.stdout + done.stderr).splitlines() if "From " in line.partition(": ")[2][:20]]
    others = [line for line in done.stderr.splitlines() if line.startswith("problem: ") and "not running" not in line]
    assert not others, others           # never a problem: mail flows, only the verdict on its From is weaker
    return lines


def _milters(postfix_config, **main):
    postfix_config.main.update({"smtpd_milters": MILTERS, "non_smtpd_milters": "$smtpd_milters",
                                "myhostname": AUTHSERV, **main})


@needs_postfix
def test_check_notes_that_the_from_is_not_verified(pipe_program, pipe_env, website, postfix_config, milter_config):
    lines = check_from_verdict(pipe_program, pipe_env, postfix_config.write(), milter_config.write())
    assert lines == ["note: From addresses are not verified (TOROKIKI_AUTHSERV_ID is not set): a mail with a forged "
                     "From is posted and answered as if that address wrote it; see \"Who really sent it\" in "
                     "postfix/README.md"], lines


@needs_postfix
@pytest.mark.parametrize("require", ["off", "create"])
def test_check_warns_when_postfix_runs_no_milter(pipe_program, pipe_env, website, postfix_config, milter_config,
                                                 require):
    config = authserv_env(pipe_env, postfix_config, TOROKIKI_AUTHSERV_ID=AUTHSERV, TOROKIKI_REQUIRE_AUTH=require)
    lines = check_from_verdict(pipe_program, config, postfix_config.write(), milter_config.write())
    held = "; with TOROKIKI_REQUIRE_AUTH=create every response is held" if require == "create" else ""
    assert lines == [f"warning: From verdict: Postfix runs no milter (smtpd_milters and non_smtpd_milters are "
                     f"empty) and no content_filter: nothing writes Authentication-Results by {AUTHSERV}, so every "
                     f"sender is unknown{held}; see \"Who really sent it\" in postfix/README.md"], lines


@needs_postfix
def test_check_trusts_a_consistent_opendkim_and_opendmarc(pipe_program, pipe_env, website, postfix_config,
                                                          milter_config):
    _milters(postfix_config)
    config = authserv_env(pipe_env, postfix_config, TOROKIKI_AUTHSERV_ID=f"{AUTHSERV},mx2.example.org")
    lines = check_from_verdict(pipe_program, config, postfix_config.write(), milter_config.write())
    assert lines == [
        f"ok: From verdict: trusting Authentication-Results by {AUTHSERV}; opendmarc writes that id "
        f"(milter inet:localhost:8893)",
        f"ok: From verdict: trusting Authentication-Results by {AUTHSERV}; opendkim writes that id "
        f"(milter inet:localhost:8891)",
    ], lines


def _other_id(p, m):
    m.opendmarc["AuthservID"] = "mail.example.org"
    return "warning", (f"opendmarc writes Authentication-Results by mail.example.org (AuthservID in {m.folder}/"
                       f"opendmarc.conf), but TOROKIKI_AUTHSERV_ID is {AUTHSERV}: its results are ignored and every "
                       f"sender is unknown; set AuthservID {AUTHSERV} in {m.folder}/opendmarc.conf, or "
                       f"TOROKIKI_AUTHSERV_ID=mail.example.org")


def _unset_id_is_myhostname(p, m):
    del m.opendmarc["AuthservID"], m.opendkim["AuthservID"]
    return "ok", f"trusting Authentication-Results by {AUTHSERV}; opendmarc writes that id (milter inet:localhost:8893)"


def _unset_id_is_another_myhostname(p, m):
    del m.opendkim["AuthservID"]
    p.main["myhostname"] = "vm.example.org"
    return "warning", ("opendkim writes Authentication-Results by vm.example.org (no AuthservID in "
                       f"{m.folder}/opendkim.conf: the MTA's name, Postfix's myhostname), but TOROKIKI_AUTHSERV_ID")


def _hostname_literal(p, m):
    import socket

    m.opendmarc["AuthservID"] = "HOSTNAME"
    if socket.gethostname().lower() == AUTHSERV:
        pytest.skip(f"this host is {AUTHSERV}")
    return "warning", f"opendmarc writes Authentication-Results by {socket.gethostname().lower()} (AuthservID HOSTNAME"


def _no_remove_ar_all(p, m):
    del m.opendkim["RemoveARAll"]
    return "note", (f"opendkim removes incoming Authentication-Results by {AUTHSERV} only when they hold a dkim "
                    f"result, so a sender's own dmarc=pass under that id stays: set RemoveARAll yes in")


def _spf_from_the_sender(p, m):
    del m.opendmarc["SPFIgnoreResults"]
    return "warning", ("opendmarc takes an SPF result from a Received-SPF header in the mail, which a sender can "
                       "write, so a forged From can get dmarc=pass: set SPFIgnoreResults true and SPFSelfValidate "
                       f"true in {m.folder}/opendmarc.conf")


def _keep_auth_results(p, m):
    m.opendkim["KeepAuthResults"] = "yes"
    return "warning", f"opendkim keeps incoming Authentication-Results that claim {AUTHSERV} (KeepAuthResults"


def _remove_ar_from_others(p, m):
    m.opendkim["RemoveARFrom"] = "mx.example.net, .example.com"
    return "warning", f"leaves incoming Authentication-Results that claim {AUTHSERV}: a sender can write its own"


def _remove_ar_from_domain(p, m):
    m.opendkim["RemoveARFrom"] = ".example.org"
    return "ok", "opendkim writes that id (milter inet:localhost:8891)"


def _opendmarc_alone(p, m):
    m.opendkim = None
    return "warning", (f"opendmarc does not remove incoming Authentication-Results that claim {AUTHSERV}, and no "
                       f"opendkim.conf in {m.folder} says OpenDKIM does")


def _dmarc_does_not_trust_dkim(p, m):
    m.opendkim["AuthservID"] = "mx2.example.org"
    m.ids = f"{AUTHSERV},mx2.example.org"
    return "warning", (f"opendmarc reads only the Authentication-Results by {AUTHSERV}, not opendkim's "
                       f"mx2.example.org: DKIM-signed mail fails DMARC")


def _dmarc_trusts_dkim(p, m):
    m.opendkim["AuthservID"] = "mx2.example.org"
    m.ids = f"{AUTHSERV},mx2.example.org"
    m.opendmarc["TrustedAuthservIDs"] = f"{AUTHSERV}, mx2.example.org"
    return "ok", "by mx2.example.org; opendkim writes that id (milter inet:localhost:8891)"


def _socket_not_a_milter(p, m):
    m.opendmarc["Socket"] = "inet:12345@localhost"
    return "note", ("opendmarc ({m}/opendmarc.conf) listens on inet:12345@localhost, which neither smtpd_milters nor "
                    "non_smtpd_milters names").format(m=m.folder)


def _debian_sockets_in_the_chroot(p, m):
    # Debian: the filters' sockets under /var/spool/postfix, named relative to Postfix's chroot.
    p.main["smtpd_milters"] = "unix:/opendkim/opendkim.sock, { unix:/opendmarc/opendmarc.sock, default_action=accept }"
    m.opendkim["Socket"] = f"local:{p.folder}/spool/opendkim/opendkim.sock"
    m.opendmarc["Socket"] = f"local:{p.folder}/spool/opendmarc/opendmarc.sock"
    return "ok", "opendmarc writes that id (milter unix:/opendmarc/opendmarc.sock)"


def _content_filter_only(p, m):
    p.main.update(smtpd_milters=None, non_smtpd_milters=None, content_filter="amavis:[127.0.0.1]:10024")
    m.opendkim = m.opendmarc = None
    return "note", (f"Postfix runs no milter, only content_filter amavis:[127.0.0.1]:10024: check cannot tell "
                    f"whether it writes Authentication-Results by {AUTHSERV}")


def _nothing_to_read(p, m):
    m.opendkim = m.opendmarc = None
    return "note", (f"trusting Authentication-Results by {AUTHSERV}; check found no opendmarc.conf, opendkim.conf "
                    f"nor rspamd/ in {m.folder} to confirm that something here writes that id (Postfix milters: "
                    f"inet:localhost:8891, inet:localhost:8893)")


def _rspamd(p, m):
    m.opendkim = m.opendmarc = None
    m.rspamd = 'use = ["x-spamd-bar", "authentication-results"];\n'
    return "note", (f"rspamd's milter_headers writes Authentication-Results ({m.folder}/rspamd/local.d/"
                    f"milter_headers.conf) under the name the MTA gives it, else its host name (Postfix gives "
                    f"{AUTHSERV}: milter_macro_daemon_name); check could not confirm that is {AUTHSERV}")


def _rspamd_without_the_routine(p, m):
    m.opendkim = m.opendmarc = None
    m.rspamd = '# use = ["authentication-results"];\nuse = ["x-spamd-bar"];\n'
    return "note", "no milter_headers.conf there uses the authentication-results routine"


FROM_CASES = [_other_id, _unset_id_is_myhostname, _unset_id_is_another_myhostname, _hostname_literal,
              _no_remove_ar_all, _spf_from_the_sender, _keep_auth_results, _remove_ar_from_others,
              _remove_ar_from_domain, _opendmarc_alone, _dmarc_does_not_trust_dkim, _dmarc_trusts_dkim, _socket_not_a_milter,
              _debian_sockets_in_the_chroot, _content_filter_only, _nothing_to_read, _rspamd,
              _rspamd_without_the_routine]


@needs_postfix
@pytest.mark.parametrize("change", FROM_CASES, ids=[c.__name__[1:] for c in FROM_CASES])
def test_check_names_each_from_verdict_finding(pipe_program, pipe_env, website, postfix_config, milter_config,
                                               change):
    _milters(postfix_config)
    kind, words = change(postfix_config, milter_config)
    config = authserv_env(pipe_env, postfix_config, TOROKIKI_AUTHSERV_ID=milter_config.ids)
    lines = check_from_verdict(pipe_program, config, postfix_config.write(), milter_config.write())
    [line] = [line for line in lines if words in line] or [repr(lines)]
    assert line.startswith(f"{kind}: From verdict: "), line
    expected_warnings = 1 if kind == "warning" else 0
    assert len([line for line in lines if line.startswith("warning: ")]) == expected_warnings, lines


@needs_postfix
def test_the_documented_milter_settings_satisfy_check(pipe_program, pipe_env, website, postfix_config, milter_config):
    # postfix/main.cf's commented milter lines and postfix/README.md's two .conf blocks, as written there.
    examples = Path(__file__).resolve().parent.parent / "postfix"
    main_cf = (examples / "main.cf").read_text()
    postfix_config.main.update(
        line[1:].strip().split(" = ", 1) for line in main_cf.splitlines()
        if line.startswith("#   ") and line[1:].strip().split(" = ")[0].endswith(("milters", "milter_default_action")))
    postfix_config.main["myhostname"] = "vm.example.org"        # the AuthservIDs must not rely on it
    readme = (examples / "README.md").read_text()
    blocks = [block for block in readme.split("```") if block.lstrip("\n").startswith("AuthservID")]
    assert len(blocks) == 2, blocks
    milter_config.opendkim, milter_config.opendmarc = (
        dict(line.split(None, 1) for line in block.strip().splitlines()) for block in blocks)
    config = authserv_env(pipe_env, postfix_config, TOROKIKI_AUTHSERV_ID=AUTHSERV, TOROKIKI_REQUIRE_AUTH="create")
    lines = check_from_verdict(pipe_program, config, postfix_config.write(), milter_config.write())
    assert lines == [
        f"ok: From verdict: trusting Authentication-Results by {AUTHSERV}; opendmarc writes that id "
        f"(milter inet:localhost:8893)",
        f"ok: From verdict: trusting Authentication-Results by {AUTHSERV}; opendkim writes that id "
        f"(milter inet:localhost:8891)",
    ], lines
