"""``torokiki-pipe check [--config FILE]``: is this installation ready for mail?

Checks, in order: the configuration loads; the config file is not readable by
everyone nor writable by its group or others (it holds the API key); the
website takes the API key (the key probe, README "The website's API": a POST
of {} that nothing can be saved from, answered 400/422); the sendmail
command exists and is executable, and whether it carries internationalised
addresses (SMTPUTF8: an ok or a note); the log dir exists or can be created, and
files can be written in it (and in the log file and stash folders already
there); a syslog daemon listens on TOROKIKI_SYSLOG_SOCKET (a warning when
TOROKIKI_SYSLOG=mail and none does); the Postfix side when Postfix is
installed (`check_postfix`: the route, the master.cf service, whether it runs,
its size and time limits; --postfix-config DIR reads another configuration
directory, postconf -c DIR); who vouches for the From (`check_authserv`: with
TOROKIKI_AUTHSERV_ID, whether Postfix runs milters and whether OpenDMARC,
OpenDKIM or rspamd, read from --milter-config DIR, default /etc, write that
authserv-id and remove forged headers claiming it; without it, a note that the
From is not verified).  Prints ``ok: ...`` and ``note: ...`` lines on stdout, one
``problem: ...`` line per problem on stderr, and a ``warning: ...`` line on
stderr for each TOROKIKI_* key the gateway does not know (a typo leaves a
setting at its default; a warning, not a problem, as the pipe itself runs
with it); exits 0, or 78 (EX_CONFIG) when anything is wrong.  A reader that
stops reading (``check | head -1``) costs nothing: the checks go on with the
output sent nowhere, and the exit code is still the verdict.

Nothing is left behind: the write test creates and removes a temporary file,
and a missing log dir is only proven creatable (a temporary folder in its
nearest existing parent), not created, so that running `check` as root never
leaves a root-owned logs/ the pipe cannot write.  The API key is sent only
in the key probe's header, through the pipe's own website adapter (its
deadline, its redaction of what the website says), and never printed.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

from torokiki_pipe.arguments import UsageParser
from torokiki_pipe import config as configuration
from torokiki_pipe.stages.s8_record import one_line
from torokiki_pipe.stages.s8_record import LOG_FILE, STASH_KINDS

PROBE_TIMEOUT = 10.0                  # seconds, at most
MILTER_CONFIG_DIR = "/etc"            # where Debian's opendmarc.conf, opendkim.conf and rspamd/ are
POSTFIX_QUEUE_LIFETIME = 5 * 86400    # maximal_queue_lifetime's default


def parse_args(argv):
    parser = UsageParser(prog="torokiki-pipe check",
                     description="Check the configuration, the website API and its key, the sendmail command, "
                                 "the log dir, the config file's permissions, syslog and the Postfix side; "
                                 "exit 0 when all is well, else 78.")
    parser.add_argument("--postfix-config", metavar="DIR",
                        help="the Postfix configuration directory to read (postconf -c DIR); default Postfix's own")
    parser.add_argument("--milter-config", metavar="DIR", default=MILTER_CONFIG_DIR,
                        help="the folder holding opendmarc.conf, opendkim.conf and rspamd/; default /etc")
    return parser.parse_args(argv)


class Findings:
    def __init__(self, secret: str = ""):
        self.problems: list[str] = []
        self.secret = secret

    @property
    def secret(self) -> str:
        return self._redactor.secret if self._redactor else ""

    @secret.setter
    def secret(self, value: str) -> None:
        # The pipe's own redaction, built once: what the website says may echo the key in other forms.
        from torokiki_pipe.adapters.website import Redactor

        self._redactor = Redactor(value) if value else None

    def _clean(self, text: str) -> str:
        return one_line(self._redactor.text(str(text)) if self._redactor else text)

    def ok(self, text: str) -> None:
        emit(sys.stdout, f"ok: {self._clean(text)}")

    def note(self, text: str) -> None:
        emit(sys.stdout, f"note: {self._clean(text)}")

    def warning(self, text: str) -> None:
        emit(sys.stderr, f"warning: {self._clean(text)}")

    def problem(self, text: str) -> None:
        self.problems.append(text)
        emit(sys.stderr, f"problem: {self._clean(text)}")


def emit(stream, line: str) -> None:
    """Write one line now; if its reader has gone, send the rest of that stream nowhere.

    Flushed line by line so that a slow website check does not hold back what
    is known, and so that a closed pipe shows up here rather than as a
    traceback at exit (the recipe of Python's signal documentation).
    """
    try:
        stream.write(line + "\n")
        stream.flush()
    except BrokenPipeError:
        silence(stream)


def silence(stream) -> None:
    try:
        fd = stream.fileno()
    except (OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def main(argv) -> int:
    try:
        args = parse_args(argv)
    except SystemExit:
        # --help and usage errors print too: the same closed pipe must not turn into a traceback.
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BrokenPipeError:
                silence(stream)
        raise
    except BrokenPipeError:
        # Python 3.9's argparse lets it out of print_help: parse again into nowhere for the right exit code.
        silence(sys.stdout)
        silence(sys.stderr)
        args = parse_args(argv)
    found = Findings()
    try:
        settings = configuration.load(args.config)
    except configuration.ConfigError as error:
        found.problem(f"configuration: {error}")
        path = configuration.find_config_file(args.config, os.environ)
        if path is not None and path.is_file():
            check_config_file(path, found)
        return os.EX_CONFIG
    found.secret = settings.api_key
    found.ok("configuration loads" + (f" from {settings.source}" if settings.source else " from the environment"))
    check_keys(settings, found)
    if os.geteuid() == 0:
        found.note("running as root: the file checks say what root may do; run `check` as the user "
                   "Postfix runs the pipe as (e.g. sudo -u torokiki) to be sure")
    if settings.source is not None:
        check_config_file(settings.source, found)
    check_website(settings, found)
    check_sendmail(settings.sendmail, found)
    check_smtputf8(settings, found)
    check_subaddress(settings, found)
    check_log_dir(Path(settings.log_dir), found)
    check_syslog(settings, found)
    postfix = check_postfix(settings, args.postfix_config, found)
    check_authserv(settings, postfix, Path(args.milter_config), found)
    return os.EX_CONFIG if found.problems else os.EX_OK


def check_keys(settings, found: Findings) -> None:
    """Warn about TOROKIKI_* keys the gateway does not read, and about a give-up the MTA pre-empts."""
    for key in settings.unknown_keys:
        where = "the environment" if key in os.environ else f"config file {settings.source}"
        found.warning(f"{key} (in {where}) is not a setting of the gateway and is ignored"
                      f"{configuration.suggest(key)}")
    if settings.give_up_after > POSTFIX_QUEUE_LIFETIME:
        found.note("TOROKIKI_GIVE_UP_AFTER is longer than Postfix's default maximal_queue_lifetime (5d): "
                   "unless the MTA keeps mail longer, it bounces a message before the gateway answers it")


def check_config_file(path: Path, found: Findings) -> None:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as error:
        found.problem(f"config file {path}: {error.strerror}")
        return
    bad = False
    if configuration.world_readable(path):
        found.problem(f"config file {path} is readable by everyone (mode {mode:04o}); it holds the API key: "
                      f"chmod o-rwx {path}")
        bad = True
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        found.problem(f"config file {path} is writable by others than its owner (mode {mode:04o}): "
                      f"chmod go-w {path}")
        bad = True
    if not bad:
        found.ok(f"config file {path} is private (mode {mode:04o})")


def check_website(settings, found: Findings) -> None:
    """The key probe of README's "The website's API": a POST of {} that nothing can be saved from."""
    from torokiki_pipe.adapters.website import KEY_PROBE_PATH, Website

    website = Website(settings.api_url, settings.api_key, min(PROBE_TIMEOUT, settings.http_timeout),
                      settings.site_url)
    url = website.api_url + KEY_PROBE_PATH
    probe = website.probe_key()
    if probe.verdict == "accepted":
        found.ok(f"website API takes the API key: POST {{}} to {url}: {probe.detail}; nothing saved")
    elif probe.verdict == "refused":
        found.problem(f"website API {url}: {probe.detail}: every mail waits in the queue; set TOROKIKI_API_KEY "
                      f"to the key the website issued for this gateway")
    elif probe.code == 0:
        found.problem(f"website API {url} cannot be reached: {probe.detail}: mail waits in the queue until it "
                      f"can; check TOROKIKI_API_URL and the network")
    elif probe.verdict == "unavailable":
        found.problem(f"website API {url}: {probe.detail}: mail waits in the queue until it answers")
    else:
        found.problem(f"website API {url}: {probe.detail}; is TOROKIKI_API_URL the Torokiki API "
                      f"(it must answer POST /image/N/response as README's \"The website's API\" says)?")


def check_sendmail(command, found: Findings) -> None:
    program = command[0]
    if not os.path.exists(program):
        found.problem(f"sendmail command {program} does not exist (TOROKIKI_SENDMAIL)")
    elif not os.path.isfile(program):
        found.problem(f"sendmail command {program} is not a file (TOROKIKI_SENDMAIL)")
    elif not os.access(program, os.X_OK):
        found.problem(f"sendmail command {program} is not executable (TOROKIKI_SENDMAIL)")
    else:
        found.ok(f"sendmail command {program} is executable")


def check_smtputf8(settings, found: Findings) -> None:
    """Whether mail from an internationalised address (SMTPUTF8) is answered: ok, or a note."""
    from torokiki_pipe.adapters.sendmail import Sendmail

    carries, why = Sendmail(settings.sendmail, smtputf8=settings.smtputf8).smtputf8()
    if carries:
        found.ok(f"internationalised addresses (SMTPUTF8) are answered: {why}")
    else:
        found.note(f"internationalised (non-ASCII, SMTPUTF8) addresses are not answered: {why}")


def check_subaddress(settings, found: Findings) -> None:
    if settings.reply_subaddress:
        from torokiki_pipe.stages.s5_understand.urls import ContentUrl, subaddress_about

        example = subaddress_about(ContentUrl("image", 1, None), settings.gateway_address, settings.reply_subaddress)
        found.note(f"replies about content say Reply-To: {example}; the MTA must deliver such sub-addresses "
                   f"to the pipe (Postfix: recipient_delimiter = {settings.reply_subaddress}), or answers bounce")


def check_syslog(settings, found: Findings) -> None:
    """Whether a syslog daemon takes the summary lines (TOROKIKI_SYSLOG=mail), or the last-resort one."""
    from torokiki_pipe.adapters import syslogger

    path = settings.syslog_socket
    why = syslogger.probe(path)
    if not why:
        found.ok(f"syslog: a daemon listens on {path}" + ("" if settings.syslog else
                 " (used only when logs/ cannot be written; TOROKIKI_SYSLOG=mail sends every summary)"))
    elif settings.syslog:
        # A warning, not a problem: mail flows, only its syslog copy is lost.
        found.warning(f"TOROKIKI_SYSLOG=mail, but {why}: every syslog line is silently dropped; start the "
                      f"syslog daemon (Debian: apt-get install rsyslog) or set TOROKIKI_SYSLOG_SOCKET to its socket")
    else:
        found.note(f"syslog: {why}; the gateway writes to syslog only when logs/ cannot be written, "
                   f"and that last record would be lost")


def check_log_dir(log_dir: Path, found: Findings) -> None:
    if not log_dir.exists():
        _check_creatable(log_dir, found)
        return
    if not log_dir.is_dir():
        found.problem(f"log dir {log_dir} is not a folder (TOROKIKI_LOG_DIR)")
        return
    problems = len(found.problems)
    _check_writable(log_dir, f"log dir {log_dir}", found)
    log_file = log_dir / LOG_FILE
    if log_file.exists():
        try:
            os.close(os.open(log_file, os.O_WRONLY | os.O_APPEND))
        except OSError as error:
            found.problem(f"log file {log_file} cannot be appended to: {error.strerror}")
    for kind in STASH_KINDS:
        if (log_dir / kind).is_dir():
            _check_writable(log_dir / kind, f"stash folder {log_dir / kind}", found)
    if len(found.problems) == problems:
        found.ok(f"log dir {log_dir} is writable")


def _check_writable(folder: Path, what: str, found: Findings) -> None:
    try:
        fd, name = tempfile.mkstemp(dir=folder, prefix=".check-")
    except OSError as error:
        found.problem(f"{what} is not writable: {error.strerror}")
        return
    os.close(fd)
    try:
        os.unlink(name)
    except OSError as error:
        found.problem(f"{what}: a file written there cannot be removed: {error.strerror}")


def _check_creatable(log_dir: Path, found: Findings) -> None:
    parent = log_dir.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        found.problem(f"log dir {log_dir} cannot be created: {parent} is not a folder (TOROKIKI_LOG_DIR)")
        return
    try:
        probe = tempfile.mkdtemp(dir=parent, prefix=".check-")
    except OSError as error:
        found.problem(f"log dir {log_dir} cannot be created in {parent}: {error.strerror}")
        return
    try:
        os.rmdir(probe)
    except OSError:
        pass
    found.ok(f"log dir {log_dir} does not exist yet; it can be created (the pipe does so on the first mail)")


# --------------------------------------------------------------------------- the Postfix side

POSTFIX_TIMEOUT = 10.0              # seconds for each Postfix command; they read files and answer
POSTFIX_SBIN = "/usr/sbin"          # where Debian puts them, often not on a user's PATH
DEFAULT_MESSAGE_SIZE_LIMIT = 10240000
_POSTFIX_TIME = re.compile(r"([0-9]+)([smhdw]?)", re.ASCII)
_POSTFIX_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class Postfix(NamedTuple):
    """Postfix's commands, reading configuration directory `config_dir` (None: its default)."""
    sbin: str
    config_dir: str | None

    def run(self, program: str, *args: str) -> tuple[int | None, str]:
        """(exit status, stdout), or (None, why it did not run)."""
        code, out, _ = self.run_both(program, *args)
        return code, out

    def run_both(self, program: str, *args: str) -> tuple[int | None, str, str]:
        """(exit status, stdout, stderr), or (None, "", why it did not run)."""
        argv = [os.path.join(self.sbin, program), *(["-c", self.config_dir] if self.config_dir else []), *args]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=POSTFIX_TIMEOUT,
                                  stdin=subprocess.DEVNULL, errors="replace")
        except subprocess.TimeoutExpired:
            return None, "", f"{program} gave no answer within {POSTFIX_TIMEOUT:g} s"
        except OSError as error:
            return None, "", f"{program} cannot be run: {error.strerror}"
        return done.returncode, done.stdout, done.stderr

    def parameter(self, name: str, only_set: bool = False) -> str:
        """The parameter's value, $names expanded; "" when unset or unknown (`only_set`: or not in main.cf)."""
        code, out = self.run("postconf", "-nxh" if only_set else "-xh", name)
        return out.strip() if code == 0 else ""

    def lookup(self, key: str, maps: str) -> str:
        """What the first of `maps` (a main.cf list) that knows `key` answers; "" when none does."""
        for table in re.split(r"[\s,]+", maps.strip()):
            if not table:
                continue
            # postmap reads the table itself; proxymap is a running Postfix's go-between only.
            table = table[len("proxy:"):] if table.startswith("proxy:") else table
            code, out = self.run("postmap", "-q", key, table)
            if code == 0 and out.strip():
                return out.strip().splitlines()[0].strip()
        return ""


def find_postfix() -> str | None:
    """The folder of postconf (on PATH, else Postfix's sbin), or None when Postfix is not installed."""
    found = shutil.which("postconf") or shutil.which("postconf", path=POSTFIX_SBIN)
    return os.path.dirname(found) if found else None


def check_postfix(settings, config_dir: str | None, found: Findings) -> Postfix | None:
    """The service in master.cf, the route to it, whether Postfix runs, and its limits against ours.

    Checked when Postfix evidently feeds this gateway: --postfix-config names
    its configuration, a master.cf service runs torokiki-pipe, or the transport
    map routes the gateway address.  Otherwise one note: the gateway may be fed
    by procmail or imapfilter (contrib/) on a host whose Postfix only sends.
    Returns that Postfix, or None when it was not checked.
    """
    sbin = find_postfix()
    if sbin is None:
        found.note("Postfix checks skipped: postconf is not installed (not on PATH nor in /usr/sbin)")
        return None
    postfix = Postfix(sbin, config_dir)
    if config_dir is not None and not os.path.isfile(os.path.join(config_dir, "main.cf")):
        found.problem(f"Postfix: there is no main.cf in {config_dir} (--postfix-config)")
        return None
    target, via, answer = route_of(settings.gateway_address, postfix)
    services = gateway_services(postfix)
    if config_dir is None and not services and not answer:
        found.note(f"Postfix checks skipped: no master.cf service runs torokiki-pipe and the transport map "
                   f"does not route {settings.gateway_address}; if Postfix is to deliver to the gateway, "
                   f"follow postfix/README.md (or use --postfix-config DIR)")
        return None
    if answer:
        found.ok(f"Postfix routes {settings.gateway_address}{via} to the transport {answer}")
        service = answer.split(":", 1)[0] or "torokiki"
    else:
        found.problem(f"Postfix: transport_maps ({postfix.parameter('transport_maps') or 'not set'}) route "
                      f"{target}{via} nowhere: add '{target}  torokiki:' to the transport map, run postmap on "
                      f"it, and name it in transport_maps (postfix/README.md)")
        service = services[0] if services else "torokiki"
    check_service(settings, postfix, service, found)
    check_running(postfix, found)
    check_size_limit(settings, postfix, found)
    check_time_limit(postfix, service, found)
    return postfix


def route_of(address: str, postfix: Postfix) -> tuple[str, str, str]:
    """(the address after virtual_alias_maps, a note saying so or "", what transport_maps answer or "")."""
    rewritten = postfix.lookup(address, postfix.parameter("virtual_alias_maps"))
    target = rewritten.split(",")[0].strip() if rewritten else address
    via = f" (virtual_alias_maps: {target})" if rewritten else ""
    maps = postfix.parameter("transport_maps")
    if not maps:
        return target, via, ""
    domain = target.rpartition("@")[2]
    return target, via, postfix.lookup(target, maps) or postfix.lookup(domain, maps)


def gateway_services(postfix: Postfix) -> list[str]:
    """The master.cf pipe services whose command runs a torokiki-pipe."""
    code, out = postfix.run("postconf", "-M")
    names = []
    for line in out.splitlines() if code == 0 else ():
        fields = line.split()
        if len(fields) > 8 and fields[7] == "pipe" and any(
                os.path.basename(word.partition("argv=")[2] or word) == "torokiki-pipe" for word in fields[8:]):
            names.append(fields[0])
    return names


def this_program() -> str:
    """The installed torokiki-pipe beside this interpreter (what postfix/master.cf's argv= names)."""
    beside = os.path.join(os.path.dirname(sys.executable), "torokiki-pipe")
    return beside if os.path.isfile(beside) else os.path.abspath(sys.argv[0])


def check_service(settings, postfix: Postfix, service: str, found: Findings) -> None:
    code, out = postfix.run("postconf", "-M", f"{service}/unix")
    fields = out.split()
    if code != 0 or len(fields) < 8:
        found.problem(f"Postfix: master.cf has no service {service}/unix: add the torokiki service of "
                      f"postfix/master.cf, then postfix reload")
        return
    if fields[7] != "pipe":
        found.problem(f"Postfix: master.cf's {service}/unix runs {fields[7]}, not pipe: use the torokiki "
                      f"service of postfix/master.cf")
        return
    start = next((i for i, word in enumerate(fields) if word.startswith("argv=")), None)
    argv = [fields[start][len("argv="):], *fields[start + 1:]] if start is not None else []
    if not argv or not argv[0]:
        found.problem(f"Postfix: master.cf's {service}/unix has no argv=: use the torokiki service of "
                      f"postfix/master.cf")
        return
    mine, bad = this_program(), False
    if os.path.realpath(argv[0]) != os.path.realpath(mine):
        found.problem(f"Postfix: master.cf's {service}/unix runs {argv[0]}, not this installation's {mine}: "
                      f"put {mine} in its argv=, then postfix reload")
        bad = True
    config = argv[argv.index("--config") + 1] if "--config" in argv[:-1] else None
    if config is None:
        found.problem(f"Postfix: master.cf's {service}/unix gives no --config: add --config "
                      f"{settings.source or '/etc/torokiki-pipe/torokiki-pipe.env'} to its argv=")
        bad = True
    elif settings.source is None or os.path.realpath(config) != os.path.realpath(settings.source):
        found.problem(f"Postfix: master.cf's {service}/unix reads --config {config}, but this check read "
                      f"{settings.source or 'the environment'}: check that file "
                      f"(torokiki-pipe check --config {config})")
        bad = True
    if not bad:
        found.ok(f"Postfix: master.cf's {service}/unix runs {argv[0]} --config {config}")


def check_running(postfix: Postfix, found: Findings) -> None:
    """postfix status as root; for others (it is root's only) whether postqueue can read the queue."""
    where = f" -c {postfix.config_dir}" if postfix.config_dir else ""
    start = f"start it (as root) with postfix{where} start"
    if os.geteuid() != 0:
        # postqueue asks the running master's showq, and any user may: "mail system is down" says it does not run.
        code, _, said = postfix.run_both("postqueue", "-p")
        if code == 0:
            found.ok("Postfix is running (postqueue -p reads its queue)")
        elif "mail system is down" in said:
            found.problem(f"Postfix is not running (postqueue -p: mail system is down): {start}")
        else:
            why = next((line for line in said.splitlines() if line.strip()), f"postqueue -p exited {code}")
            found.note(f"Postfix: whether it runs cannot be told as this user ({why}); ask root: "
                       f"postfix{where} status")
        return
    code, _, why = postfix.run_both("postfix", "status")
    if code == 0:
        found.ok("Postfix is running")
    elif code is None:
        found.problem(f"Postfix: {why}")
    else:
        # postfix status says why only in the mail log.
        found.problem(f"Postfix is not running (postfix status exited {code}): {start}")


def check_size_limit(settings, postfix: Postfix, found: Findings) -> None:
    text = postfix.parameter("message_size_limit")
    limit = int(text) if text.isdigit() else DEFAULT_MESSAGE_SIZE_LIMIT
    ours = settings.max_message_bytes
    fix = f"set both to the same: postconf -e message_size_limit={ours}, or TOROKIKI_MAX_MESSAGE_BYTES={limit}"
    if limit == ours:
        found.ok(f"Postfix's message_size_limit is TOROKIKI_MAX_MESSAGE_BYTES ({ours} bytes)")
    elif limit == 0 or limit > ours:
        found.note(f"Postfix takes mail of up to {'any size' if limit == 0 else f'{limit} bytes'} "
                   f"(message_size_limit), the gateway reads {ours} (TOROKIKI_MAX_MESSAGE_BYTES): a mail "
                   f"between the two is answered 'too large'; {fix}")
    else:
        found.note(f"Postfix refuses mail over {limit} bytes (message_size_limit) before the gateway's {ours} "
                   f"(TOROKIKI_MAX_MESSAGE_BYTES): larger photos are bounced by the sender's server; {fix}")


def postfix_seconds(text: str) -> int | None:
    """A Postfix time value ("1000s", "17m", "1000") in seconds; None when it is not one."""
    found = _POSTFIX_TIME.fullmatch(text.strip())
    return int(found.group(1)) * _POSTFIX_UNITS[found.group(2)] if found else None


def check_time_limit(postfix: Postfix, service: str, found: Findings) -> None:
    """Postfix's limit for the service against the longest run the gateway allows itself."""
    from torokiki_pipe.adapters.sendmail import SEND_TIMEOUT
    from torokiki_pipe.run import RUN_TIME_LIMIT

    name = f"{service}_time_limit"
    code, out = postfix.run("postconf", "-P", f"{service}/unix/{name}")
    given = out.partition("=")[2].strip() if code == 0 else ""
    where = f"-o {name} in master.cf" if given else name
    if not given:
        given = postfix.parameter(name, only_set=True)
    if not given:
        given, where = postfix.parameter("command_time_limit"), "command_time_limit"
    limit = postfix_seconds(given or "1000s")
    # The run's alarm stops anything but the reply's hand-over, which it lets finish.
    longest = RUN_TIME_LIMIT + int(SEND_TIMEOUT)
    if limit is None:
        found.problem(f"Postfix: {where} = {given} is not a time: set {name} = 1000s in main.cf")
    elif limit <= longest:
        found.problem(f"Postfix kills the gateway after {limit} s ({where}), before its own limit of "
                      f"{longest} s ({RUN_TIME_LIMIT} s run alarm + {int(SEND_TIMEOUT)} s reply hand-over): a "
                      f"killed run is bounced, not retried; set {name} = 1000s in main.cf")
    else:
        found.ok(f"Postfix's time limit for {service} is {limit} s ({where}), above the gateway's own "
                 f"{longest} s at most")


# --------------------------------------------------------------------------- who vouches for the From

WHO_REALLY_SENT_IT = 'see "Who really sent it" in postfix/README.md'
_TRUE = ("yes", "true", "1", "on")
_LOOPBACK = ("", "localhost", "127.0.0.1", "::1", "[::1]", "localhost.localdomain")


def check_authserv(settings, postfix: Postfix | None, etc: Path, found: Findings) -> None:
    """Whether something on this host writes Authentication-Results under TOROKIKI_AUTHSERV_ID.

    What can be read for certain: Postfix's milters and content_filter (when
    Postfix feeds the gateway), OpenDMARC's and OpenDKIM's AuthservID (unset:
    the MTA's name, Postfix's myhostname; HOSTNAME: this host's name), the
    options by which OpenDKIM removes forged headers claiming its id (OpenDMARC
    removes none), and whether OpenDMARC believes a sender's Received-SPF.
    rspamd's id is the name its milter proxy is given (Postfix's
    milter_macro_daemon_name), and whether mail goes through it check cannot
    read: a note.  All warnings and notes, never problems: mail flows, only the
    verdict on its From is weaker.
    """
    ids = settings.authserv_ids
    if not ids:
        found.note("From addresses are not verified (TOROKIKI_AUTHSERV_ID is not set): a mail with a forged From is "
                   f"posted and answered as if that address wrote it; {WHO_REALLY_SENT_IT}")
        return
    shown = " or ".join(ids)
    held = "; with TOROKIKI_REQUIRE_AUTH=create every response is held" if settings.require_auth == "create" else ""
    milters: list[str] = []
    mta_name, queue_dir, daemon_name = "", "", ""
    if postfix is not None:
        milters, filters = postfix_milters(postfix)
        daemon_name = postfix.parameter("milter_macro_daemon_name").lower()
        mta_name, queue_dir = postfix.parameter("myhostname").lower(), postfix.parameter("queue_directory")
        if not milters and not filters:
            found.warning(f"From verdict: Postfix runs no milter (smtpd_milters and non_smtpd_milters are empty) and "
                          f"no content_filter: nothing writes Authentication-Results by {shown}, so every sender is "
                          f"unknown{held}; {WHO_REALLY_SENT_IT}")
            return
        if not milters:
            found.note(f"From verdict: Postfix runs no milter, only content_filter {filters[0]}: check cannot tell "
                       f"whether it writes Authentication-Results by {shown} (if not, every sender is unknown{held})")
    confs = {name: read_milter_conf(etc / f"{name}.conf") for name in ("opendmarc", "opendkim")}
    written = {}
    for name, conf in confs.items():
        if conf is None:
            continue
        path = etc / f"{name}.conf"
        authserv, how = milter_authserv_id(conf, path, mta_name)
        written[name] = authserv
        listens = conf.get("socket", "")
        via = milter_for(listens, milters, queue_dir)      # "" without Postfix: no milters
        if postfix is not None and not via:
            found.note(f"From verdict: {name} ({path}) listens on {listens or 'no Socket'}, which neither "
                       f"smtpd_milters nor non_smtpd_milters names: unless they reach it otherwise, it sees no mail")
        if not authserv:
            found.note(f"From verdict: {name} writes Authentication-Results under the name the MTA gives it "
                       f"({how}); check could not confirm that is {shown}")
        elif authserv not in ids:
            found.warning(f"From verdict: {name} writes Authentication-Results by {authserv} ({how}), but "
                          f"TOROKIKI_AUTHSERV_ID is {shown}: its results are ignored and every sender is "
                          f"unknown{held}; set AuthservID {ids[0]} in {path}, or TOROKIKI_AUTHSERV_ID={authserv}")
        else:
            found.ok(f"From verdict: trusting Authentication-Results by {authserv}; {name} writes that id "
                     + (f"(milter {via})" if via else f"({how})"))
    check_forged_headers(confs, written, ids, etc, found)
    seen = any(conf is not None for conf in confs.values())
    if (etc / "rspamd").is_dir():
        seen = True
        check_rspamd(etc / "rspamd", shown, daemon_name, found)
    if not seen:
        found.note(f"From verdict: trusting Authentication-Results by {shown}; check found no opendmarc.conf, "
                   f"opendkim.conf nor rspamd/ in {etc} to confirm that something here writes that id"
                   + (f" (Postfix milters: {', '.join(milters)})" if milters else ""))


def check_forged_headers(confs: dict, written: dict, ids, etc: Path, found: Findings) -> None:
    """Whether incoming headers that claim our id are removed, and OpenDMARC reads OpenDKIM's results."""
    dkim, dmarc = confs.get("opendkim"), confs.get("opendmarc")
    if dkim is not None and written.get("opendkim") in ids:
        path, authserv = etc / "opendkim.conf", written["opendkim"]
        remove_from = dkim.get("removearfrom", "")
        if dkim.get("keepauthresults", "").lower() in _TRUE:
            found.warning(f"From verdict: opendkim keeps incoming Authentication-Results that claim {authserv} "
                          f"(KeepAuthResults in {path}): a sender can write its own dmarc=pass under that id; "
                          f"remove KeepAuthResults")
        elif remove_from and not re.fullmatch(r"[\w.,\s-]+", remove_from):
            found.note(f"From verdict: opendkim removes incoming Authentication-Results of the hosts in "
                       f"RemoveARFrom {remove_from} ({path}); check could not confirm that {authserv} is among them")
        elif remove_from and not any(authserv == one or (one.startswith(".") and authserv.endswith(one))
                                     for one in re.split(r"[\s,]+", remove_from.lower()) if one):
            found.warning(f"From verdict: opendkim's RemoveARFrom ({remove_from}, {path}) leaves incoming "
                          f"Authentication-Results that claim {authserv}: a sender can write its own dmarc=pass "
                          f"under that id; add {authserv} to it")
        elif dkim.get("removearall", "").lower() not in _TRUE:
            found.note(f"From verdict: opendkim removes incoming Authentication-Results by {authserv} only when "
                       f"they hold a dkim result, so a sender's own dmarc=pass under that id stays: set "
                       f"RemoveARAll yes in {path}")
    elif dkim is None and dmarc is not None and written.get("opendmarc") in ids and not (etc / "rspamd").is_dir():
        found.warning(f"From verdict: opendmarc does not remove incoming Authentication-Results that claim "
                      f"{written['opendmarc']}, and no opendkim.conf in {etc} says OpenDKIM does: a sender can "
                      f"write its own dmarc=pass under that id; {WHO_REALLY_SENT_IT}")
    if dmarc is not None and written.get("opendmarc") in ids and \
            dmarc.get("spfignoreresults", "").lower() not in _TRUE:
        # OpenDMARC 1.4.2 reads a Received-SPF field wherever it comes from, when no trusted header gives SPF.
        found.warning(f"From verdict: opendmarc takes an SPF result from a Received-SPF header in the mail, which a "
                      f"sender can write, so a forged From can get dmarc=pass: set SPFIgnoreResults true and "
                      f"SPFSelfValidate true in {etc / 'opendmarc.conf'}")
    # Only when both write one of ours: otherwise the warning above already says to make them the same.
    if dkim is not None and dmarc is not None and written.get("opendkim") in ids and written.get("opendmarc") in ids:
        trusted = {_named(one.strip()) for one in dmarc.get("trustedauthservids", "").split(",") if one.strip()}
        if written["opendkim"] != written["opendmarc"] and written["opendkim"] not in trusted:
            found.warning(f"From verdict: opendmarc reads only the Authentication-Results by "
                          f"{', '.join(sorted(trusted | {written['opendmarc']}))}, not opendkim's "
                          f"{written['opendkim']}: DKIM-signed mail fails DMARC; give both the same AuthservID")


def check_rspamd(folder: Path, shown: str, daemon_name: str, found: Findings) -> None:
    """rspamd's id is the MTA's name its milter is given (else its host's): a note, never certain.

    Its proxy takes that name from Postfix's {daemon_name} macro, i.e.
    milter_macro_daemon_name; whether mail goes through that proxy check cannot see.
    """
    routine = "authentication-results"
    names = [folder / sub / "milter_headers.conf" for sub in ("local.d", "override.d")]
    using = [path for path in names if routine in _uncommented(path)]
    given = f" (Postfix gives {daemon_name}: milter_macro_daemon_name)" if daemon_name else ""
    if using:
        found.note(f"From verdict: rspamd's milter_headers writes Authentication-Results ({using[0]}) under the "
                   f"name the MTA gives it, else its host name{given}; check could not confirm that is {shown}")
    else:
        found.note(f"From verdict: rspamd is installed ({folder}), but no milter_headers.conf there uses the "
                   f"{routine} routine, so rspamd writes no Authentication-Results; {WHO_REALLY_SENT_IT}")


def _uncommented(path: Path) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(line.partition("#")[0] for line in text.splitlines())


def read_milter_conf(path: Path) -> dict[str, str] | None:
    """OpenDKIM's or OpenDMARC's configuration (``Name value`` lines), names in lower case; None if unreadable."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    conf: dict[str, str] = {}
    for line in text.splitlines():
        fields = line.partition("#")[0].split(None, 1)
        if fields:
            conf.setdefault(fields[0].lower(), fields[1].strip() if len(fields) > 1 else "")
    return conf


def _named(authserv_id: str) -> str:
    """An AuthservID as the filters read it: the literal HOSTNAME (case-sensitive) is this host's name."""
    return socket.gethostname().lower() if authserv_id == "HOSTNAME" else authserv_id.lower()


def milter_authserv_id(conf: dict, path: Path, mta_name: str) -> tuple[str, str]:
    """(the authserv-id the filter writes, or "" when check cannot know; where that comes from)."""
    value = conf.get("authservid", "")
    if value == "HOSTNAME":
        return _named(value), f"AuthservID HOSTNAME in {path}: this host's name"
    if value:
        return _named(value), f"AuthservID in {path}"
    if mta_name:
        return mta_name, f"no AuthservID in {path}: the MTA's name, Postfix's myhostname"
    return "", f"no AuthservID in {path}"


def postfix_milters(postfix: Postfix) -> tuple[list[str], list[str]]:
    """(the milters of main.cf and of master.cf's -o overrides, the content filters likewise)."""
    milters = list(dict.fromkeys(one for name in ("smtpd_milters", "non_smtpd_milters")
                                 for one in _milter_list(postfix.parameter(name))))
    filters = [one for one in [postfix.parameter("content_filter")] if one]
    code, out = postfix.run("postconf", "-Px")
    for line in out.splitlines() if code == 0 else ():
        key, _, value = line.partition("=")
        name = key.strip().rpartition("/")[2]
        if name in ("smtpd_milters", "non_smtpd_milters"):
            milters += [one for one in _milter_list(value) if one not in milters]
        elif name == "content_filter" and value.strip():
            filters.append(value.strip())
    return milters, filters


def _milter_list(value: str) -> list[str]:
    """Postfix's milter list: names separated by commas or spaces, or ``{ name, option=... }``."""
    out = []
    for found in re.finditer(r"\{([^}]*)\}|([^\s,{}]+)", value):
        name = re.split(r"[\s,]+", found[1].strip())[0] if found[1] is not None else found[2]
        if name:
            out.append(name)
    return out


def milter_for(listens: str, milters: list[str], queue_dir: str) -> str:
    """The one of Postfix's `milters` that reaches a filter listening on `listens` (its Socket), or ""."""
    kind, _, rest = listens.strip().partition(":")
    if not rest:
        kind, rest = "local", listens.strip()
    kind = kind.lower()
    for milter in milters:
        theirs, _, where = milter.partition(":")
        if kind in ("local", "unix") and theirs in ("unix", "local") and rest:
            # Postfix's smtpd may run chrooted in its queue directory, where a socket path is relative to it.
            if os.path.normpath(where) == os.path.normpath(rest) or (
                    queue_dir and os.path.normpath(queue_dir + "/" + where) == os.path.normpath(rest)):
                return milter
        elif kind in ("inet", "inet6") and theirs in ("inet", "inet6"):
            port, _, host = rest.partition("@")
            their_host, _, their_port = where.rpartition(":")
            if port == their_port and (host.lower() == their_host.lower() or
                                       (host.lower() in _LOOPBACK and their_host.lower() in _LOOPBACK)):
                return milter
    return ""
