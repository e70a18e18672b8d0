"""``torokiki-pipe setup postfix [--apply]``: route the gateway's address into Postfix.

Without ``--apply`` it changes nothing and prints every change it would make,
one line each with the command that makes it.  With ``--apply`` (as root) it
makes them in that order, one line per change done, and then runs
``postfix check`` and starts Postfix (not running) or reloads it (running and
changed).  A second run finds nothing to change and says so.

What it installs is postfix/README.md's transport way, from this
installation's real paths (the ``torokiki-pipe`` beside this Python, the
``--config`` file) and the gateway's address (``--address``, else the config
file's TOROKIKI_GATEWAY_ADDRESS):

- on the host: the pipe user (``--user``), its home (``directory=`` of the
  service), the logs folder owned by it, and the config file, 0600, from
  templates/torokiki-pipe.env when there is none (an existing one is never
  touched);
- the transport map ``<config_directory>/transport`` (the address to
  ``torokiki:``) and its ``postmap``;
- main.cf through ``postconf -e``: the address's domain added to
  ``mydestination``, the map added to ``transport_maps`` (first, so that it
  wins) and to ``local_recipient_maps``, existing entries kept as written;
  ``torokiki_destination_recipient_limit = 1`` always; the concurrency, time
  and size limits of postfix/main.cf only where main.cf sets none;
- master.cf's ``torokiki`` service through ``postconf -M -e``, replaced when
  it differs from the one postfix/master.cf documents.

Before the first main.cf or master.cf change both files are copied beside
themselves (``.torokiki-backup-<UTC time>``).  Deciding is pure: `plan` maps
what Postfix and the host have now (`Current`, read by `read_current`) to a
list of `Change` values, which `apply` carries out with argument lists, never
a shell.  ``-c DIR`` is Postfix's ``-c``: another instance's configuration.

Exit codes: EX_OK; EX_USAGE for a wrong command line, no address, or one the
config file contradicts; EX_CONFIG when postconf or main.cf is missing, the
config file does not parse, the setup cannot be made (a domain that is
virtual here, a path with a space), a command fails or ``postfix check``
fails; EX_NOPERM for ``--apply`` by anyone but root.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from string import Template
from typing import Mapping, NamedTuple, Optional, Sequence

from torokiki_pipe.arguments import UsageParser

SERVICE = "torokiki"
NEXT_HOP = f"{SERVICE}:"
DEFAULT_CONFIG = "/etc/torokiki-pipe/torokiki-pipe.env"
DEFAULT_USER = "torokiki"
DEFAULT_HOME = "/var/lib/torokiki-pipe"
DEFAULT_MAX_MESSAGE_BYTES = 26214400
TEMPLATE = Path(__file__).resolve().parent.parent / "templates" / "torokiki-pipe.env"
# What Postfix's commands run with: none of the caller's MAIL_CONFIG or locale.
COMMAND_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"}
# postfix/main.cf explains each.  The recipient limit is what the gateway needs
# (one --recipient, the D flag); the others are tunings an administrator may
# have chosen, so only set where main.cf has none.
REQUIRED = (("torokiki_destination_recipient_limit", "1"),)
TUNABLE = (("torokiki_destination_concurrency_limit", "5"), ("torokiki_time_limit", "1000s"))
# Read as Postfix has them (defaults included), and expanded ($myhostname).
LISTS = ("mydestination", "transport_maps", "local_recipient_maps", "virtual_alias_domains",
         "virtual_mailbox_domains", "default_database_type")
EXPANDED = ("mydestination", "virtual_alias_domains", "virtual_mailbox_domains")


class Install(NamedTuple):
    """What is being installed, and where."""
    program: str            # the torokiki-pipe that master.cf's argv= runs
    config: str             # its env file
    address: str            # TOROKIKI_GATEWAY_ADDRESS
    user: str               # the pipe user (master.cf user=)
    home: str               # its home and the service's directory=
    log_dir: str            # TOROKIKI_LOG_DIR
    postfix_dir: str        # Postfix's config_directory
    max_message_bytes: int  # TOROKIKI_MAX_MESSAGE_BYTES, for message_size_limit


class Current(NamedTuple):
    """What Postfix and the host have now."""
    explicit: Mapping[str, str]      # `postconf -n`: what main.cf sets
    values: Mapping[str, str]        # `postconf`: LISTS as Postfix uses them
    expanded: Mapping[str, str]      # `postconf -x`: EXPANDED with $names resolved
    service: str                     # `postconf -M torokiki/unix`, "" when there is none
    transport_text: Optional[str]    # the transport map's source, None when absent
    transport_answer: str            # `postmap -q ADDRESS MAP`, "" when not found
    user_group: Optional[str]        # the pipe user's group, None when there is no such user
    home_exists: bool
    log_dir_owner: Optional[str]     # None when absent
    config_exists: bool
    config_dir_exists: bool
    running: bool


class Change(NamedTuple):
    """One change: a command (`argv`), or a file written (`path`, `text`, `mode`, `owner`)."""
    kind: str               # "host", "map", "main.cf", "master.cf", "run" (start or reload)
    what: str               # one line for the administrator
    argv: tuple = ()
    path: str = ""
    text: str = ""
    mode: int = 0o644
    owner: str = ""


class Plan(NamedTuple):
    changes: tuple          # of Change
    problems: tuple         # of str: why the setup cannot be made; nothing is changed then


def entries(value: str) -> list[str]:
    """The entries of a Postfix list value (separated by commas and/or white space)."""
    return value.replace(",", " ").split()


def merged(value: str, entry: str, *, first: bool = False) -> str:
    """`value` with `entry` added (at the front or the end), its own text kept as written."""
    value = value.strip()
    if not value:
        return entry
    return f"{entry}, {value}" if first else f"{value}, {entry}"


def service_entry(install: Install) -> str:
    """The `torokiki` service of postfix/master.cf for this installation, on one line."""
    return (f"{SERVICE} unix - n n - - pipe flags=DRX user={install.user} null_sender= "
            f"directory={install.home} argv={install.program} --config {install.config} "
            "--sender ${sender} --recipient ${recipient}")


def transport_map(install: Install, database_type: str) -> str:
    return f"{database_type or 'hash'}:{install.postfix_dir}/transport"


def transport_text(existing: Optional[str], address: str) -> Optional[str]:
    """The transport map's source with `address` routed to the service; None when it already is."""
    line = f"{address}    {NEXT_HOP}\n"
    if existing is None:
        return ("# Written by `torokiki-pipe setup postfix`: the gateway's address to the "
                f"`{SERVICE}` service of master.cf.\n# After an edit: postmap this file.\n\n" + line)
    lines = existing.splitlines(keepends=True)
    for number, text in enumerate(lines):
        words = text.split()
        if words and not text[:1].isspace() and words[0].lower() == address.lower():
            if words[1:] == [NEXT_HOP]:
                return None
            lines[number] = line
            return "".join(lines)
    return existing + ("" if not existing or existing.endswith("\n") else "\n") + line


def plan(install: Install, current: Current, postconf: str, postmap: str, postfix: str) -> Plan:
    """The changes that make `current` into the installation; the commands are argument lists."""
    problems = [f"{name} {value!r} holds white space, which master.cf's argv= cannot carry"
                for name, value in (("program", install.program), ("config", install.config),
                                    ("home", install.home)) if any(c.isspace() for c in value)]
    local, _, domain = install.address.rpartition("@")
    if not local or not domain or any(c.isspace() for c in install.address):
        problems.append(f"the gateway address {install.address!r} is not local@domain")
    domain = domain.lower()
    for name in ("virtual_alias_domains", "virtual_mailbox_domains"):
        if domain in (e.lower() for e in entries(current.expanded.get(name, ""))):
            problems.append(f"{domain} is in {name} here: route it by hand with virtual_alias_maps "
                            "(postfix/README.md, the manual way)")
    if problems:
        return Plan((), tuple(problems))
    dash_c = ("-c", install.postfix_dir)
    changes = []

    # The host: the pipe user, its folders, the config file.
    group = current.user_group or install.user
    if current.user_group is None:
        changes.append(Change("host", f"create the system user {install.user}",
                              ("useradd", "--system", "--user-group", "--home-dir", install.home,
                               "--shell", "/usr/sbin/nologin", install.user)))
    if not current.home_exists:
        changes.append(Change("host", f"create {install.home}, the service's directory= (0700, {install.user})",
                              ("install", "-d", "-o", install.user, "-g", group, "-m", "0700", install.home)))
    if current.log_dir_owner != install.user:
        changes.append(Change("host", f"create {install.log_dir}, the logs folder (0700, {install.user})",
                              ("install", "-d", "-o", install.user, "-g", group, "-m", "0700", install.log_dir)))
    if not current.config_exists:
        folder = str(Path(install.config).parent)
        if not current.config_dir_exists and folder != install.home:   # else made above
            changes.append(Change("host", f"create {folder} (0750, group {group})",
                                  ("install", "-d", "-o", "root", "-g", group, "-m", "0750", folder)))
        text = Template(TEMPLATE.read_text(encoding="utf-8")).safe_substitute(
            address=install.address, log_dir=install.log_dir)
        changes.append(Change("host", f"write {install.config} (0600, {install.user}) from the template; "
                                      "TOROKIKI_API_KEY is still to be filled in",
                              path=install.config, text=text, mode=0o600, owner=install.user))

    # The transport map and its database.
    database = transport_map(install, current.values.get("default_database_type", "hash"))
    source = transport_text(current.transport_text, install.address)
    if source is not None:
        changes.append(Change("map", f"route {install.address} to {NEXT_HOP} in {install.postfix_dir}/transport",
                              path=f"{install.postfix_dir}/transport", text=source, mode=0o644, owner="root"))
    if source is not None or current.transport_answer != NEXT_HOP:
        changes.append(Change("map", f"postmap {database}", (postmap, *dash_c, database)))

    # main.cf: merged lists, then the settings.
    settings = []
    destinations = (e.lower() for e in entries(current.expanded.get("mydestination", "")))
    if domain not in destinations:
        settings.append(("mydestination", merged(current.values.get("mydestination", ""), domain)))
    if database not in entries(current.values.get("transport_maps", "")):
        settings.append(("transport_maps", merged(current.values.get("transport_maps", ""), database, first=True)))
    recipients = current.values.get("local_recipient_maps", "")
    # An empty local_recipient_maps accepts every local address, the gateway's too.
    if recipients.strip() and database not in entries(recipients):
        settings.append(("local_recipient_maps", merged(recipients, database)))
    for name, value in REQUIRED:
        if current.explicit.get(name) != value:
            settings.append((name, value))
    for name, value in TUNABLE + (("message_size_limit", str(install.max_message_bytes)),):
        if name not in current.explicit:
            settings.append((name, value))
    for name, value in settings:
        was = current.explicit.get(name)
        changes.append(Change("main.cf", f"main.cf: {name} = {value}" + ("" if was is None else f"  (was: {was})"),
                              (postconf, *dash_c, "-e", f"{name} = {value}")))

    # master.cf: the service.
    wanted = service_entry(install)
    if current.service.split() != wanted.split():
        verb = "replace" if current.service.strip() else "add"
        changes.append(Change("master.cf", f"master.cf: {verb} the {SERVICE} service: {wanted}",
                              (postconf, *dash_c, "-M", "-e", f"{SERVICE}/unix={wanted}")))

    # Postfix itself: running, and with the new settings.
    if not current.running:
        changes.append(Change("run", "start Postfix", (postfix, *dash_c, "start")))
    elif any(c.kind != "host" for c in changes):
        changes.append(Change("run", "reload Postfix", (postfix, *dash_c, "reload")))
    return Plan(tuple(changes), ())


# --------------------------------------------------------------------------- effects

class Tools(NamedTuple):
    postconf: str
    postmap: str
    postfix: str


def find_tools() -> Optional[Tools]:
    found = shutil.which("postconf", path=COMMAND_ENV["PATH"])
    if found is None:
        return None
    folder = Path(found).parent
    return Tools(found, str(folder / "postmap"), str(folder / "postfix"))


def _run(argv: Sequence[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, env=COMMAND_ENV)


def _settings(output: str) -> dict[str, str]:
    found = {}
    for line in output.splitlines():
        name, equals, value = line.partition("=")
        if equals:
            found[name.strip()] = value.strip()
    return found


def read_current(install: Install, tools: Tools) -> Current:
    import grp
    import pwd

    dash_c = ["-c", install.postfix_dir]
    explicit = _settings(_run([tools.postconf, *dash_c, "-n"]).stdout)
    values = _settings(_run([tools.postconf, *dash_c, *LISTS]).stdout)
    expanded = _settings(_run([tools.postconf, *dash_c, "-x", *EXPANDED]).stdout)
    service = _run([tools.postconf, *dash_c, "-M", f"{SERVICE}/unix"]).stdout.strip()
    source = Path(install.postfix_dir) / "transport"
    try:
        text: Optional[str] = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = None
    database = transport_map(install, values.get("default_database_type", "hash"))
    answer = _run([tools.postmap, *dash_c, "-q", install.address, database]).stdout.strip() if text else ""
    try:
        group: Optional[str] = grp.getgrgid(pwd.getpwnam(install.user).pw_gid).gr_name
    except KeyError:
        group = None
    try:
        owner: Optional[str] = Path(install.log_dir).owner() if Path(install.log_dir).is_dir() else None
    except KeyError:
        owner = "?"
    running = _run([tools.postfix, *dash_c, "status"]).returncode == 0
    return Current(explicit, values, expanded, service, text, answer, group, Path(install.home).is_dir(),
                   owner, Path(install.config).exists(), Path(install.config).parent.is_dir(), running)


def _write(change: Change) -> None:
    """Write the file whole (a temporary file beside it, then renamed); the config file never over one."""
    import pwd

    path = Path(change.path)
    user = pwd.getpwnam(change.owner)
    temporary = path.with_name(f".{path.name}.torokiki-setup")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, change.mode)
    with os.fdopen(fd, "w", encoding="utf-8") as stream:
        stream.write(change.text)
    os.chmod(temporary, change.mode)
    os.chown(temporary, user.pw_uid, user.pw_gid)
    if change.mode == 0o600:            # the config file: an existing one is the administrator's
        os.link(temporary, path)
        os.unlink(temporary)
    else:
        os.replace(temporary, path)


def _backup(postfix_dir: str) -> list[str]:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    made = []
    for name in ("main.cf", "master.cf"):
        original = Path(postfix_dir) / name
        if original.exists():
            copy = original.with_name(f"{name}.torokiki-backup-{stamp}")
            for number in range(1, 100):    # two runs in one second: never over an earlier backup
                if not copy.exists():
                    break
                copy = original.with_name(f"{name}.torokiki-backup-{stamp}.{number}")
            shutil.copy2(original, copy)
            made.append(str(copy))
    return made


def apply(changes: Sequence[Change], install: Install, tools: Tools, say) -> int:
    """Make `changes` in order; stop at the first that fails.  `say` gets one line per change."""
    backed_up = False
    for change in changes:
        if change.kind in ("main.cf", "master.cf") and not backed_up:
            for copy in _backup(install.postfix_dir):
                say(f"backup: {copy}")
            backed_up = True
        if change.kind == "run":
            checked = _run([tools.postfix, "-c", install.postfix_dir, "check"])
            if checked.returncode != 0:
                say(f"failed: postfix check exited {checked.returncode}: "
                    f"{(checked.stderr or checked.stdout).strip() or 'see the maillog for its error'}")
                return os.EX_CONFIG
            say("checked: postfix check")
        try:
            if change.path:
                _write(change)
            if change.argv:
                done = _run(change.argv)
                if done.returncode != 0:
                    say(f"failed: {change.what}: {shlex.join(change.argv)} exited {done.returncode}: "
                        f"{(done.stderr or done.stdout).strip()}")
                    return os.EX_CONFIG
        except (OSError, KeyError, subprocess.SubprocessError) as error:
            say(f"failed: {change.what}: {error}")
            return os.EX_CONFIG
        say(f"done: {change.what}")
    return os.EX_OK


def show(change: Change) -> list[str]:
    """The change, and what makes it by hand."""
    lines = [f"would: {change.what}"]
    if change.path:
        lines.append(f"    write {change.path} (mode {change.mode:04o}, owner {change.owner}):")
        lines += [f"    | {line}" for line in change.text.splitlines()]
    if change.argv:
        lines.append(f"    $ {shlex.join(change.argv)}")
    return lines


# --------------------------------------------------------------------------- command line

def parse_args(argv):
    parser = UsageParser(prog="torokiki-pipe setup",
                         description="Show, and with --apply make, what routes the gateway's address through "
                                     "Postfix to this torokiki-pipe: master.cf's service, main.cf's settings, "
                                     "the transport map, the pipe user, logs/ and the config file.")
    parser.add_argument("what", choices=["postfix"], help="what to set up")
    parser.add_argument("--apply", action="store_true", help="make the changes (as root); without it, only show them")
    parser.add_argument("--address", metavar="ADDR", help="the gateway's address (default: the config file's "
                                                          "TOROKIKI_GATEWAY_ADDRESS)")
    parser.add_argument("--user", default=DEFAULT_USER, help=f"the pipe user (default: {DEFAULT_USER})")
    parser.add_argument("--home", default=DEFAULT_HOME, help=f"its home, the service's directory= (default: {DEFAULT_HOME})")
    parser.add_argument("--program", metavar="PATH", help="the torokiki-pipe master.cf runs "
                                                          "(default: the one beside this Python)")
    parser.add_argument("-c", "--postfix-config", metavar="DIR",
                        help="Postfix's configuration directory (postconf -c; default: Postfix's own)")
    return parser.parse_args(argv)


def _installation(args, tools: Tools) -> tuple[Optional[Install], str, int]:
    """The installation the arguments and the config file describe, or why there is none and the exit code."""
    from torokiki_pipe import config as configuration

    path = Path(args.config or DEFAULT_CONFIG).absolute()
    values: dict[str, str] = {}
    if path.exists():
        try:
            values = configuration.parse_env_text(path.read_text(encoding="utf-8"), str(path))
        except (OSError, UnicodeDecodeError, configuration.ConfigError) as error:
            return None, f"{path}: {error}", os.EX_CONFIG
    configured = values.get("TOROKIKI_GATEWAY_ADDRESS", "").strip()
    address = (args.address or configured).strip()
    if not address:
        return None, f"no gateway address: give --address (there is none in {path})", os.EX_USAGE
    if configured and configured.lower() != address.lower():
        # Postfix would route one address and the gateway answer as another.
        return None, f"--address {address} is not {path}'s TOROKIKI_GATEWAY_ADDRESS {configured}", os.EX_USAGE
    log_dir = values.get("TOROKIKI_LOG_DIR", "").strip()
    if not os.path.isabs(log_dir):
        log_dir = os.path.join(args.home, "logs")
    size = values.get("TOROKIKI_MAX_MESSAGE_BYTES", "").strip()
    postfix_dir = args.postfix_config or _run([tools.postconf, "-h", "config_directory"]).stdout.strip()
    if not postfix_dir or not (Path(postfix_dir) / "main.cf").is_file():
        return None, f"no Postfix configuration: there is no main.cf in {postfix_dir or 'config_directory'}", os.EX_CONFIG
    program = args.program or str(Path(sys.executable).parent / "torokiki-pipe")
    return Install(program, str(path), address, args.user, args.home, log_dir, str(Path(postfix_dir).absolute()),
                   int(size) if size.isdigit() else DEFAULT_MAX_MESSAGE_BYTES), "", os.EX_OK


def main(argv) -> int:
    args = parse_args(argv)
    tools = find_tools()
    if tools is None:
        print("torokiki-pipe setup: postconf not found: is Postfix installed (apt-get install postfix)?",
              file=sys.stderr)
        return os.EX_CONFIG
    install, why, code = _installation(args, tools)
    if install is None:
        print(f"torokiki-pipe setup: {why}", file=sys.stderr)
        return code
    result = plan(install, read_current(install, tools), *tools)
    for problem in result.problems:
        print(f"torokiki-pipe setup: cannot set up: {problem}", file=sys.stderr)
    if result.problems:
        return os.EX_CONFIG
    if not result.changes:
        print(f"nothing to change: Postfix routes {install.address} to {install.program} as user {install.user}")
        return os.EX_OK
    if not args.apply:
        for change in result.changes:
            print("\n".join(show(change)))
        print("run again with --apply (as root) to make these changes")
        return os.EX_OK
    if os.geteuid() != 0:
        for change in result.changes:
            print("\n".join(show(change)))
        print("torokiki-pipe setup: --apply needs root; the commands above make the same changes", file=sys.stderr)
        return os.EX_NOPERM
    code = apply(result.changes, install, tools, lambda line: print(line, flush=True))
    if code == os.EX_OK and any(c.path == install.config for c in result.changes):
        print(f"next: put the website's key in {install.config} (TOROKIKI_API_KEY=), then "
              f"runuser -u {install.user} -- {install.program} check --config {install.config}")
    return code
