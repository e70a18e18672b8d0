"""The administrator's commands, end to end: `torokiki-pipe check|replay|report`.

Real parts only: the installed program, the loopback reference website, msmtp
delivering into the SMTP sink, files under a temporary logs/.
"""
import gzip
import json
import os
import stat
import subprocess
from datetime import datetime, timedelta, timezone

import pytest

from helpers import mail

pytestmark = pytest.mark.integration  # every test runs the installed program's admin commands

CREATE = "create-response-to: 'http://torokiki.net/image/1/response'"


def files_in(folder):
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")) \
        if folder.is_dir() else []


def problems(done):
    return [line for line in done.stderr.splitlines() if line.strip()]


# --------------------------------------------------------------------------- check

def test_check_all_well(admin, pipe_env, website):
    done = admin("check", pipe_env)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    oks = [line for line in done.stdout.splitlines() if line.startswith("ok: ")]
    assert len(oks) >= 5, done.stdout      # config, file mode, website, sendmail, log dir
    assert "HTTP 400" in done.stdout       # the key probe's empty object (README, The website's API)
    assert website.api_key not in done.stdout
    assert website.stats()["stored"] == 0


def _unreachable(pipe_env, website, tmp_path):
    return pipe_env.variant(TOROKIKI_API_URL="http://127.0.0.1:9"), "cannot be reached"


def _website_down(pipe_env, website, tmp_path):
    website.control("down")
    return pipe_env, "HTTP 503"


def _no_sendmail(pipe_env, website, tmp_path):
    return pipe_env.variant(TOROKIKI_SENDMAIL="/nonexistent/sbin/sendmail -i"), "does not exist"


def _sendmail_not_executable(pipe_env, website, tmp_path):
    program = tmp_path / "not-executable"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o644)
    return pipe_env.variant(TOROKIKI_SENDMAIL=str(program)), "not executable"


def _world_readable(pipe_env, website, tmp_path):
    config = pipe_env.variant()
    config.chmod(0o644)
    return config, "readable by everyone"


def _group_writable(pipe_env, website, tmp_path):
    config = pipe_env.variant()
    config.chmod(0o620)
    return config, "writable by others"


def _log_dir_under_a_file(pipe_env, website, tmp_path):
    (tmp_path / "a-file").write_text("")
    return pipe_env.variant(TOROKIKI_LOG_DIR=str(tmp_path / "a-file" / "logs")), "cannot be created"


@pytest.mark.parametrize("make", [
    _unreachable, _website_down, _no_sendmail, _sendmail_not_executable,
    _world_readable, _group_writable, _log_dir_under_a_file,
], ids=["api-unreachable", "api-503", "sendmail-missing", "sendmail-not-executable",
        "config-world-readable", "config-group-writable", "log-dir-uncreatable"])
def test_check_reports_each_problem_on_one_line(admin, pipe_env, website, tmp_path, make):
    config, words = make(pipe_env, website, tmp_path)
    done = admin("check", config)
    assert done.returncode == os.EX_CONFIG
    [line] = problems(done)
    assert line.startswith("problem: ") and words in line, line
    assert website.api_key not in done.stdout + done.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write in any folder")
def test_check_unwritable_log_dir(admin, pipe_env):
    pipe_env.log_dir.chmod(0o500)
    try:
        done = admin("check", pipe_env)
    finally:
        pipe_env.log_dir.chmod(0o700)
    assert done.returncode == os.EX_CONFIG
    [line] = problems(done)
    assert "not writable" in line


def test_check_missing_log_dir_is_fine_and_not_created(admin, pipe_env, tmp_path):
    config = pipe_env.variant(TOROKIKI_LOG_DIR=str(tmp_path / "new" / "logs"))
    done = admin("check", config)
    assert done.returncode == 0, done.stderr
    assert "can be created" in done.stdout
    assert not (tmp_path / "new").exists()


def test_check_broken_configuration(admin, pipe_env):
    config = pipe_env.variant(TOROKIKI_API_KEY=None)
    config.chmod(0o604)
    done = admin("check", config)
    assert done.returncode == os.EX_CONFIG
    first, second = problems(done)
    assert "TOROKIKI_API_KEY" in first and "readable by everyone" in second


# --------------------------------------------------------------------------- replay

def test_replay_after_the_website_comes_back(admin, run_pipe, pipe_env, website, smtp_sink):
    website.control("down")
    assert run_pipe(mail(CREATE, "text: 'hi'")).returncode == 75
    folder = pipe_env.log_dir / "failed_https"
    kept = files_in(folder)
    assert [p.name.split(".", 1)[-1] for p in kept] == ["eml", "http.txt"]
    website.control("ok")

    done = admin("replay", pipe_env, folder)
    assert done.returncode == 0, done.stdout + done.stderr
    [line] = done.stdout.splitlines()
    assert line.startswith(str(kept[0])) and "exit=0" in line and "outcome=saved" in line
    stats = website.stats()
    assert stats["stored"] == 1
    [received] = smtp_sink.wait_for(1)
    assert list(received.rcpt_tos) == ["kiri@example.net"]
    assert stats["items"][0]["location"] in received.message().get_body(("plain",)).get_content()
    assert files_in(folder) == []
    assert sorted(p.name for p in files_in(folder / "done")) == sorted(p.name for p in kept)
    assert stat.S_IMODE((folder / "done").stat().st_mode) == 0o700
    assert "outcome=saved" in (pipe_env.log_dir / "torokiki-pipe.log").read_text().splitlines()[-1]

    # the same mail replayed once more (a copy put back): the journal knows it is done
    again = folder / kept[0].name
    again.write_bytes((folder / "done" / kept[0].name).read_bytes())
    posts = website.stats()["posts"]
    done = admin("replay", pipe_env, again)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "outcome=duplicate" in done.stdout
    assert website.stats()["stored"] == 1 and website.stats()["posts"] == posts
    assert files_in(folder) == []
    assert len(smtp_sink.messages) == 1


def test_replay_that_fails_again_keeps_one_copy(admin, run_pipe, pipe_env, website, smtp_sink):
    website.control("down")
    assert run_pipe(mail(CREATE, "text: 'hi'")).returncode == 75
    folder = pipe_env.log_dir / "failed_https"
    kept = files_in(folder)
    done = admin("replay", pipe_env, folder)
    assert done.returncode == 75
    [line] = done.stdout.splitlines()
    assert "exit=75" in line and "outcome=website-unavailable" in line
    assert files_in(folder) == kept                  # no second copy stashed beside it
    assert not (folder / "done").exists()
    assert smtp_sink.messages == [] and website.stats()["stored"] == 0


def test_replay_of_a_mail_already_saved_does_not_store_it_twice(admin, run_pipe, pipe_env, website, smtp_sink):
    message = mail(CREATE, "text: 'hi'", msgid="<once@example.net>")
    assert run_pipe(message).returncode == 0
    smtp_sink.wait_for(1)
    crashed = pipe_env.log_dir / "crashed"
    crashed.mkdir(mode=0o700)
    (crashed / "20240514T000000.000000Z-1-00000000.eml").write_bytes(message)
    done = admin("replay", pipe_env, crashed)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "outcome=duplicate" in done.stdout
    stats = website.stats()
    assert stats["stored"] == 1 and stats["posts"] == 1
    assert files_in(crashed) == [] and len(files_in(crashed / "done")) == 1
    assert len(smtp_sink.messages) == 1         # no second reply either


def test_replay_refused_now_moves_the_new_record_along(admin, run_pipe, pipe_env, website, smtp_sink):
    website.control("down")
    assert run_pipe(mail(CREATE, "text: 'hi'")).returncode == 75
    folder = pipe_env.log_dir / "failed_https"
    website.control("refuse", status=422)
    done = admin("replay", pipe_env, folder)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "outcome=refused" in done.stdout
    # one record per message: the mail, and beside it the exchange that ended it, in done/
    assert files_in(folder) == []
    kept = files_in(folder / "done")
    assert len(kept) == 2 and any("HTTP 422" in p.read_text() for p in kept if p.name.endswith(".http.txt"))
    [received] = smtp_sink.wait_for(1)
    assert "did not accept" in received.message().get_body(("plain",)).get_content()


def test_replay_dry_run_changes_nothing(admin, run_pipe, pipe_env, website, smtp_sink):
    website.control("down")
    assert run_pipe(mail(CREATE, "text: 'hi'")).returncode == 75
    website.control("ok")
    folder = pipe_env.log_dir / "failed_https"
    kept = files_in(folder)
    log_before = (pipe_env.log_dir / "torokiki-pipe.log").read_text()
    done = admin("replay", pipe_env, "--dry-run", folder)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "POST " in done.stdout and website.api_key not in done.stdout
    assert f"{kept[0]} exit=0 outcome=saved" in done.stdout
    assert files_in(folder) == kept and not (folder / "done").exists()
    assert website.stats()["stored"] == 0 and smtp_sink.messages == []
    assert (pipe_env.log_dir / "torokiki-pipe.log").read_text() == log_before


def test_replay_usage_errors(admin, pipe_env, tmp_path):
    sends = pipe_env.log_dir / "failed_sends"
    sends.mkdir()
    assert admin("replay", pipe_env).returncode == os.EX_USAGE
    assert admin("replay", pipe_env, tmp_path / "missing.eml").returncode == os.EX_USAGE
    done = admin("replay", pipe_env, sends)
    assert done.returncode == os.EX_USAGE and "--resend" in done.stderr


# --------------------------------------------------------------------------- replay --resend

def _failed_send(run_pipe, pipe_env, tmp_path):
    failing = tmp_path / "failing-sendmail"
    failing.write_text("#!/bin/sh\ncat >/dev/null\necho 'no such user' >&2\nexit 67\n")
    failing.chmod(0o755)
    assert run_pipe(mail("help"), config=pipe_env.variant(TOROKIKI_SENDMAIL=str(failing))).returncode == 0
    [kept] = files_in(pipe_env.log_dir / "failed_sends")
    return kept


def test_resend_sends_the_kept_reply_and_moves_it(admin, run_pipe, pipe_env, smtp_sink, tmp_path):
    kept = _failed_send(run_pipe, pipe_env, tmp_path)
    assert smtp_sink.messages == []
    done = admin("replay", pipe_env, "--resend")
    assert done.returncode == 0, done.stdout + done.stderr
    [line] = done.stdout.splitlines()
    assert "outcome=sent" in line and "to=kiri@example.net" in line
    [received] = smtp_sink.wait_for(1)
    assert list(received.rcpt_tos) == ["kiri@example.net"]
    assert received.message()["Auto-Submitted"] == "auto-replied"
    assert files_in(kept.parent) == [] and [p.name for p in files_in(kept.parent / "done")] == [kept.name]


def test_resend_refuses_what_is_not_one_reply_to_one_address(admin, pipe_env, smtp_sink):
    sends = pipe_env.log_dir / "failed_sends"
    sends.mkdir(mode=0o700)
    two = sends / "two.eml"
    two.write_bytes(b"From: Torokiki <gateway@torokiki.net>\nTo: a@example.net, b@example.net\n"
                    b"X-Loop: torokiki-pipe gateway@torokiki.net\nSubject: x\n\nhi\n")
    foreign = sends / "foreign.eml"
    foreign.write_bytes(b"From: someone@example.net\nTo: a@example.net\nSubject: x\n\nhi\n")
    done = admin("replay", pipe_env, "--resend")
    assert done.returncode == 75
    lines = done.stdout.splitlines()
    assert len(lines) == 2 and all("outcome=refused" in line for line in lines)
    assert "exactly one address" in done.stdout and "X-Loop" in done.stdout
    assert files_in(sends) == sorted([two, foreign]) and smtp_sink.messages == []


# --------------------------------------------------------------------------- report

def test_report_counts(admin, run_pipe, pipe_env, website, smtp_sink):
    assert run_pipe(mail("help", msgid="<a@example.net>")).returncode == 0
    assert run_pipe(mail(CREATE, "text: 'hi'", msgid="<b@example.net>")).returncode == 0
    assert run_pipe(mail("create-response-to: 'http://evil.example/image/1/response'", "text: 'x'",
                         msgid="<c@example.net>")).returncode == 0
    website.control("refuse", status=422)
    assert run_pipe(mail(CREATE, "text: 'no'", msgid="<d@example.net>",
                         sender="tama@example.org")).returncode == 0
    website.control("down")
    assert run_pipe(mail(CREATE, "text: 'later'", msgid="<e@example.net>")).returncode == 75
    with open(pipe_env.log_dir / "torokiki-pipe.log", "a") as log:
        log.write("crash traceback follows\nTraceback (most recent call last):\n\n"
                  "2026-13-45T99:00:00Z outcome=x\nnot a line at all\n")

    done = admin("report", pipe_env, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["messages"] == 5
    assert report["outcomes"] == {"answered": 1, "saved": 1, "invalid": 1, "refused": 1,
                                  "website-unavailable": 1}
    assert report["exit_codes"] == {"0": 4, "75": 1}
    assert report["commands"]["help"] == 1 and report["commands"]["create-response-to"] >= 3
    assert report["top_error_senders"] == [{"sender": "kiri@example.net", "errors": 1},
                                           {"sender": "tama@example.org", "errors": 1}]
    assert [e["outcome"] for e in report["last_errors"]] == ["invalid", "refused", "website-unavailable"]
    assert report["last_errors"][1]["sender"] == "tama@example.org"
    assert "422" in report["last_errors"][1]["detail"]
    assert report["unparsed_lines"] == 4
    assert report["stash"]["failed_https"] == {"mails": 2, "files": 4, "resolved": 0, "waiting": 2}
    assert report["stash"]["erroneous_emails"] == {"mails": 1, "files": 1, "resolved": 0, "waiting": 1}
    assert report["stash"]["crashed"] == {"mails": 0, "files": 0, "resolved": 0, "waiting": 0}
    assert report["runs"] == 5 and report["messages_run_more_than_once"] == 0

    text = admin("report", pipe_env)
    assert text.returncode == 0
    assert "5 message(s)" in text.stdout
    for words in ("By outcome:", "website-unavailable", "tama@example.org", "failed_https", "422"):
        assert words in text.stdout
    assert website.api_key not in text.stdout


def _line(when, outcome, exit_code="0", sender="old@example.net"):
    stamp = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    return (f"{stamp} message-id=<{outcome}@old> sender={sender} command=help url=- outcome={outcome} "
            f"exit={exit_code} duration=0.010s detail=\"an old {outcome}\"\n")


def test_report_reads_rotated_logs_and_since_filters(admin, run_pipe, pipe_env, smtp_sink):
    now = datetime.now(timezone.utc)
    logs = pipe_env.log_dir
    with gzip.open(logs / "torokiki-pipe.log.2.gz", "wt") as old:
        old.write(_line(now - timedelta(days=30), "invalid"))
        old.write("garbage \x00 line\n")
    (logs / "torokiki-pipe.log.1").write_text(_line(now - timedelta(days=3), "answered")
                                              + _line(now - timedelta(hours=2), "crashed", "75"))
    assert run_pipe(mail("help")).returncode == 0

    everything = json.loads(admin("report", pipe_env, "--json").stdout)
    assert everything["messages"] == 4
    assert [p.rsplit("/", 1)[-1] for p in everything["log_files"]] == [
        "torokiki-pipe.log.2.gz", "torokiki-pipe.log.1", "torokiki-pipe.log"]
    assert everything["outcomes"] == {"answered": 2, "crashed": 1, "invalid": 1}
    assert everything["unparsed_lines"] == 1

    week = json.loads(admin("report", pipe_env, "--since", "7d", "--json").stdout)
    assert week["messages"] == 3 and "invalid" not in week["outcomes"]
    hours = json.loads(admin("report", pipe_env, "--since", "3h", "--json").stdout)
    assert hours["outcomes"] == {"answered": 1, "crashed": 1}
    day = (now - timedelta(days=10)).strftime("%Y-%m-%d")
    assert json.loads(admin("report", pipe_env, "--since", day, "--json").stdout)["messages"] == 3
    assert admin("report", pipe_env, "--since", "yesterday").returncode == os.EX_USAGE


def test_replay_force_submits_again_what_was_refused_and_never_what_was_saved(admin, run_pipe, pipe_env, website,
                                                                             smtp_sink):
    website.control("refuse", status=422)
    refused = mail(CREATE, "text: 'try again'", msgid="<refused@example.net>")
    assert run_pipe(refused).returncode == 0
    folder = pipe_env.log_dir / "failed_https"
    [kept] = [p for p in files_in(folder) if p.name.endswith(".eml")]
    website.control("ok")
    plain = admin("replay", pipe_env, kept)
    assert plain.returncode == 0 and "outcome=duplicate" in plain.stdout       # the journal says finished
    assert website.stats()["stored"] == 0
    again = folder / kept.name
    again.write_bytes((folder / "done" / kept.name).read_bytes())
    forced = admin("replay", pipe_env, "--force", again)
    assert forced.returncode == 0 and "outcome=saved" in forced.stdout, forced.stdout + forced.stderr
    assert website.stats()["stored"] == 1

    again.write_bytes((folder / "done" / kept.name).read_bytes())
    once_more = admin("replay", pipe_env, "--force", again)
    assert "outcome=duplicate" in once_more.stdout          # saved mail is never forced a second time
    assert website.stats()["stored"] == 1 and website.stats()["posts"] == 2
    assert len(smtp_sink.wait_for(2)) == 2                   # the refusal, then the saved answer


def test_sigterm_stops_a_replay_after_the_mail_in_hand(pipe_program, run_pipe, pipe_env, website, smtp_sink):
    import signal
    import time

    website.control("down")
    for n in range(3):
        assert run_pipe(mail(CREATE, f"text: '{n}'", msgid=f"<stop{n}@example.net>")).returncode == 75
    folder = pipe_env.log_dir / "failed_https"
    website.control("slow", delay=3)             # the SIGTERM lands inside the first mail's POST
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TOROKIKI_")}
    replay = subprocess.Popen([pipe_program, "replay", "--config", os.fspath(pipe_env), str(folder)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environ)
    time.sleep(1.5)
    replay.send_signal(signal.SIGTERM)
    out, err = replay.communicate(timeout=60)
    assert replay.returncode == 75 and "Traceback" not in err
    [line] = out.splitlines()                    # the other two mails were not started
    assert "outcome=interrupted" in line
    assert len([p for p in files_in(folder) if p.name.endswith(".eml")]) == 3


# --------------------------------------------------------------------------- the command line itself

def test_help_lists_every_subcommand_of_the_table(pipe_program):
    from torokiki_pipe.cli import SUBCOMMANDS

    replay = subprocess.run([pipe_program, "replay", "--help"], capture_output=True, text=True, timeout=60)
    assert replay.returncode == 0 and "--force" in replay.stdout and "--resend" in replay.stdout
    done = subprocess.run([pipe_program, "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    listed = done.stdout.split("administrator's commands", 1)[1].splitlines()[1:]
    assert [line.split()[0] for line in listed if line.strip()] == list(SUBCOMMANDS)
    assert all(len(line.split(None, 1)) == 2 for line in listed if line.strip())   # each with what it does


def test_dry_run_prints_the_argv_the_real_send_runs(run_pipe, pipe_env, tmp_path):
    import shlex

    said = tmp_path / "argv.txt"
    recorder = tmp_path / "recording-sendmail"
    recorder.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {shlex.quote(str(said))}\ncat >/dev/null\n")
    recorder.chmod(0o755)
    config = pipe_env.variant(TOROKIKI_SENDMAIL=f"{recorder} -i")
    dry = run_pipe(mail("help", msgid="<dry@example.net>"), "--dry-run", config=config)
    assert dry.returncode == 0, dry.stderr
    [shown] = [line for line in dry.stdout.decode().splitlines() if line.startswith("# the reply it would send with: ")]
    assert not said.exists()
    assert run_pipe(mail("help", msgid="<real@example.net>"), config=config).returncode == 0
    ran = said.read_text().splitlines()
    assert shlex.split(shown.split(": ", 1)[1]) == [str(recorder), *ran]
    assert ran == ["-i", "-f", "<>", "--", "kiri@example.net"]


def test_replay_says_when_there_is_nothing_to_do(admin, pipe_env):
    done = admin("replay", pipe_env, "--resend")              # no logs/failed_sends/ at all
    assert done.returncode == 0 and done.stderr == ""
    [line] = done.stdout.splitlines()
    assert line.startswith("nothing to do: no kept replies") and "failed_sends" in line
    crashed = pipe_env.log_dir / "crashed"
    (crashed / "done").mkdir(parents=True)
    (crashed / "done" / "old.eml").write_bytes(mail("help"))
    done = admin("replay", pipe_env, crashed)
    assert done.returncode == 0 and done.stderr == ""
    [line] = done.stdout.splitlines()
    assert line.startswith("nothing to do: no kept mails") and str(crashed) in line


# --------------------------------------------------------------------------- report: messages, not runs

def test_report_counts_messages_not_runs_and_a_later_save_resolves_the_kept_mail(admin, run_pipe, pipe_env,
                                                                                  website, smtp_sink):
    outage = mail(CREATE, "text: 'later'", msgid="<outage@example.net>")
    website.control("down")
    assert run_pipe(outage).returncode == 75
    assert run_pipe(outage).returncode == 75                 # the MTA's retry, still down
    website.control("refuse", status=422)
    assert run_pipe(mail(CREATE, "text: 'no'", msgid="<no@example.net>")).returncode == 0
    website.control("ok")
    assert run_pipe(outage).returncode == 0                  # the MTA's next retry saves it
    assert run_pipe(outage).returncode == 0                  # delivered once more: a duplicate
    folder = pipe_env.log_dir / "failed_https"
    assert len([p for p in files_in(folder) if p.name.endswith(".eml")]) == 2   # both kept mails stay

    report = json.loads(admin("report", pipe_env, "--json").stdout)
    assert report["messages"] == 2 and report["runs"] == 5 and report["messages_run_more_than_once"] == 1
    assert report["outcomes"] == {"refused": 1, "saved": 1}
    assert report["exit_codes"] == {"0": 2}
    assert [e["message_id"] for e in report["last_errors"]] == ["<no@example.net>"]
    assert report["last_errors"][0]["target"] == "http://torokiki.net/image/1/response"
    assert report["stash"]["failed_https"] == {"mails": 2, "files": 4, "resolved": 1, "waiting": 1}

    text = admin("report", pipe_env).stdout
    assert "2 message(s) in 5 run(s)" in text
    [row] = [line for line in text.splitlines() if line.strip().startswith("failed_https")]
    assert row.split()[1] == "1" and "besides 1 resolved" in row, row

    # --since leaves the lines out of the counts, never out of what resolves a kept mail
    later = (datetime.now(timezone.utc) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S")
    none = json.loads(admin("report", pipe_env, "--since", later, "--json").stdout)
    assert none["messages"] == 0 and none["runs"] == 0
    assert none["stash"]["failed_https"]["resolved"] == 1


def test_report_replays_are_runs_of_one_message(admin, run_pipe, pipe_env, website, smtp_sink):
    website.control("down")
    assert run_pipe(mail(CREATE, "text: 'hi'", msgid="<replayed@example.net>")).returncode == 75
    folder = pipe_env.log_dir / "failed_https"
    assert admin("replay", pipe_env, folder).returncode == 75        # still down
    website.control("ok")
    assert admin("replay", pipe_env, folder).returncode == 0
    report = json.loads(admin("report", pipe_env, "--json").stdout)
    assert report["messages"] == 1 and report["runs"] == 3
    assert report["outcomes"] == {"saved": 1} and report["last_errors"] == []
    assert report["stash"]["failed_https"]["waiting"] == 0             # replayed: in done/


# --------------------------------------------------------------------------- the log line's URLs

def _fields(pipe_env, message_id):
    from torokiki_pipe.stages.s8_record import parse_line

    lines = (pipe_env.log_dir / "torokiki-pipe.log").read_text().splitlines()
    return [f for _, f in filter(None, map(parse_line, lines)) if f["message-id"] == message_id][-1]


def test_the_log_line_says_the_target_and_the_saved_url_apart(run_pipe, pipe_env, website, smtp_sink):
    target = "http://torokiki.net/image/1/response"
    assert run_pipe(mail(CREATE, "text: 'hi'", msgid="<s@example.net>")).returncode == 0
    saved = _fields(pipe_env, "<s@example.net>")
    assert saved["target"] == target and saved["saved"] == website.stats()["items"][0]["location"]
    assert saved["saved"].startswith(target + "/")
    assert run_pipe(mail(CREATE, "text: 'hi'", msgid="<s@example.net>")).returncode == 0
    again = _fields(pipe_env, "<s@example.net>")                # from the journal entry
    assert again["outcome"] == "duplicate" and (again["target"], again["saved"]) == (target, saved["saved"])
    website.control("refuse", status=422)
    assert run_pipe(mail(CREATE, "text: 'no'", msgid="<r@example.net>")).returncode == 0
    refused = _fields(pipe_env, "<r@example.net>")
    assert refused["target"] == target and refused["saved"] == "-"
    website.control("down")
    assert run_pipe(mail(CREATE, "text: 'later'", msgid="<d@example.net>")).returncode == 75
    assert _fields(pipe_env, "<d@example.net>")["target"] == target
    assert run_pipe(mail("help", msgid="<h@example.net>")).returncode == 0
    assert {k: _fields(pipe_env, "<h@example.net>")[k] for k in ("target", "saved")} == {"target": "-", "saved": "-"}
    assert "url" not in saved


def test_report_reads_lines_written_before_target_and_saved(admin, pipe_env):
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    (pipe_env.log_dir / "torokiki-pipe.log").write_text(
        f"{stamp} message-id=<old1@x> sender=a@example.net command=create-response-to "
        f"url=http://torokiki.net/image/1/response/9 outcome=saved exit=0 duration=0.100s detail=\"saved as 9\"\n"
        f"{stamp} message-id=<old2@x> sender=a@example.net command=create-response-to "
        f"url=http://torokiki.net/image/1/response outcome=refused exit=0 duration=0.100s detail=\"HTTP 422\"\n")
    report = json.loads(admin("report", pipe_env, "--json").stdout)
    assert report["messages"] == 2 and report["outcomes"] == {"refused": 1, "saved": 1}
    assert report["last_errors"][0]["target"] == "http://torokiki.net/image/1/response"


def test_resend_dry_run_shows_the_exact_argv_it_would_run(admin, run_pipe, pipe_env, msmtp, smtp_sink, tmp_path):
    import shlex

    kept = _failed_send(run_pipe, pipe_env, tmp_path)
    done = admin("replay", pipe_env, "--resend", "--dry-run")
    assert done.returncode == 0, done.stdout + done.stderr
    [line] = done.stdout.splitlines()
    assert line.startswith(f"{kept} outcome=would-send to=kiri@example.net")
    shown = line.split(" detail=", 1)[1]
    assert shown.startswith('"') and shown.endswith('"')     # one field, quoted as the log quotes it
    shown = shown[1:-1]
    assert shlex.split(shown) == [*shlex.split(msmtp.command), "-f", "<>", "--", "kiri@example.net"]
    assert smtp_sink.messages == [] and files_in(kept.parent) == [kept]
