"""Exactly once, no loops, no loss: the promises of the journal, the guard and the reply limit.

Each test would fail without the mechanism it names.
"""
import os
import time
from datetime import datetime, timezone

from torokiki_pipe import run
from torokiki_pipe import config
from torokiki_pipe.stages.s3_guard import loop_marker
from torokiki_pipe.adapters.journal import Journal
from torokiki_pipe.pipeline import Envelope
from torokiki_pipe.stages.s1_read import RawMail

from helpers import GATEWAY, files_in, log_lines, mail

CREATE = "create-response-to: 'http://torokiki.net/image/1/response'"


def replies(smtp_sink, n, wait=10):
    return smtp_sink.wait_for(n, timeout=wait) if n else smtp_sink.messages


class StillClock:
    """A clock (torokiki_pipe.ports.Clock) that moves only when the test moves `seconds`."""

    def __init__(self, seconds):
        self.seconds = seconds

    def time(self):
        return self.seconds

    def now(self):
        return datetime.fromtimestamp(self.seconds, timezone.utc)


def test_a_message_delivered_twice_is_posted_once_and_answered_once(run_pipe, website, smtp_sink, pipe_env):
    message = mail(CREATE, "text: 'once'")
    assert run_pipe(message).returncode == 0
    assert run_pipe(message).returncode == 0
    assert website.stats()["posts"] == 1
    time.sleep(0.5)
    assert len(replies(smtp_sink, 1)) == 1
    assert "outcome=duplicate" in log_lines(pipe_env)[1]


def test_a_message_without_message_id_is_keyed_by_its_content(run_pipe, website, smtp_sink):
    message = b"From: kiri@example.net\nSubject: " + CREATE.encode() + b"\n\ntext: 'no id'\n"
    assert run_pipe(message).returncode == 0 and run_pipe(message).returncode == 0
    assert website.stats()["posts"] == 1


def test_same_message_id_with_other_content_is_another_message(run_pipe, website, smtp_sink):
    assert run_pipe(mail(CREATE, "text: 'first'")).returncode == 0
    assert run_pipe(mail(CREATE, "text: 'second'")).returncode == 0
    assert website.stats()["stored"] == 2
    keys = {item["idempotency_key"] for item in website.stats()["items"]}
    assert len(keys) == 2 and all(k.startswith("torokiki-pipe-") for k in keys)


def test_saved_but_not_answered_retry_only_replies(run_pipe, website, smtp_sink, pipe_env, tmp_path):
    busy = tmp_path / "busy-sendmail"
    busy.write_text("#!/bin/sh\ncat >/dev/null\nexit 75\n")
    busy.chmod(0o755)
    message = mail(CREATE, "text: 'saved first'")
    first = run_pipe(message, config=pipe_env.variant(TOROKIKI_SENDMAIL=str(busy)))
    assert first.returncode == 75 and first.stderr.startswith(b"4.4.1")
    assert website.stats()["posts"] == 1
    assert run_pipe(message).returncode == 0
    assert website.stats()["posts"] == 1          # no second POST: the journal knew
    [reply] = replies(smtp_sink, 1)
    assert website.stats()["items"][0]["location"] in reply.message().get_body(("plain",)).get_content()


def test_deferred_message_is_posted_when_the_website_is_back(run_pipe, website, smtp_sink, pipe_env):
    message = mail(CREATE, "text: 'later'")
    website.control("down")
    assert run_pipe(message).returncode == 75
    assert run_pipe(message).returncode == 75
    assert len(files_in(pipe_env.log_dir / "failed_https")) == 2   # evidence kept once, not per retry
    website.control("ok")
    assert run_pipe(message).returncode == 0
    assert website.stats()["stored"] == 1
    assert len(replies(smtp_sink, 1)) == 1


def test_gives_up_after_the_configured_time_and_says_so(run_pipe, website, smtp_sink, pipe_env):
    settings = pipe_env.variant(TOROKIKI_GIVE_UP_AFTER="1s")
    website.control("down")
    message = mail(CREATE, "text: 'too late'")
    assert run_pipe(message, config=settings).returncode == 75
    time.sleep(1.2)
    done = run_pipe(message, config=settings)
    assert done.returncode == 0
    [reply] = replies(smtp_sink, 1)
    assert "could not be saved" in reply.message().get_body(("plain",)).get_content()
    assert "outcome=gave-up" in log_lines(pipe_env)[-1]
    assert files_in(pipe_env.log_dir / "failed_https")


class CrashingWebsite:
    def fetch(self, url):
        raise RuntimeError("a bug in the gateway")

    submit = fetch


def test_a_message_that_crashes_three_times_is_answered_once_and_not_retried(pipe_env, smtp_sink, website):
    settings = config.load(os.fspath(pipe_env), {})
    raw = RawMail(mail("get: 'http://torokiki.net/image/1/response'"), oversize=False)
    effects = run.real_effects(settings)._replace(website=CrashingWebsite())
    codes = [run.handle(raw, Envelope(), settings, effects=effects) for _ in range(5)]
    assert codes == [75, 75, 0, 0, 0]
    time.sleep(0.5)
    [reply] = replies(smtp_sink, 1)                 # answered once: later deliveries are finished
    assert "failed while reading your mail" in reply.message().get_body(("plain",)).get_content()
    log = (pipe_env.log_dir / "torokiki-pipe.log").read_text()
    assert log.count("outcome=crashed") == 2 and "outcome=poisoned" in log
    assert log.count("message-id=<m1@example.net> sender=") == 5     # crashes say whose mail it was
    assert log.count("outcome=duplicate") == 2
    assert "RuntimeError: a bug in the gateway" in log          # the traceback is in the log file
    assert len(files_in(pipe_env.log_dir / "crashed")) == 1     # kept once per message


def test_reply_limit_per_sender(run_pipe, smtp_sink, pipe_env):
    settings = pipe_env.variant(TOROKIKI_REPLY_LIMIT="2/hour")
    for n in range(3):
        assert run_pipe(mail("help", msgid=f"<limit{n}@example.net>"), config=settings).returncode == 0
    time.sleep(0.5)
    sent = replies(smtp_sink, 2)
    assert len(sent) == 2
    assert "PLEASE NOTE" not in sent[0].message().get_body(("plain",)).get_content()
    assert "PLEASE NOTE" in sent[1].message().get_body(("plain",)).get_content()
    assert "reply limit reached" in log_lines(pipe_env)[2]


def test_the_same_refused_mail_is_answered_once(run_pipe, smtp_sink, pipe_env):
    for n in range(3):
        assert run_pipe(mail("nonsense", "hello", msgid=f"<same{n}@example.net>")).returncode == 0
    time.sleep(0.5)
    assert len(replies(smtp_sink, 1)) == 1
    assert "refused and answered today" in log_lines(pipe_env)[2]


def test_replies_carry_loop_headers_and_the_null_envelope_sender(run_pipe, smtp_sink):
    assert run_pipe(mail("help")).returncode == 0
    [received] = replies(smtp_sink, 1)
    reply = received.message()
    assert received.mail_from == "<>"
    assert reply["Precedence"] == "bulk" and reply["Auto-Submitted"] == "auto-replied"
    assert reply["X-Loop"] == loop_marker(GATEWAY)


def test_an_out_of_office_answering_our_reply_is_not_answered(run_pipe, smtp_sink, pipe_env):
    assert run_pipe(mail("help")).returncode == 0
    [received] = replies(smtp_sink, 1)
    ours = received.message()["Message-ID"]
    ooo = mail("Automatic reply: Torokiki by email: how to use it", "I am away until Monday.",
               f"In-Reply-To: {ours}", msgid="<ooo@example.net>")
    assert run_pipe(ooo).returncode == 0
    quoting = mail("Re: Torokiki by email", "I am away.\n\n> X-Loop: " + loop_marker(GATEWAY),
                   f"References: {ours}", msgid="<ooo2@example.net>")
    assert run_pipe(quoting).returncode == 0
    time.sleep(0.5)
    assert len(smtp_sink.messages) == 1
    assert [line.count("outcome=ignored") for line in log_lines(pipe_env)[1:]] == [1, 1]


def test_a_person_answering_our_reply_is_answered(run_pipe, smtp_sink):
    assert run_pipe(mail("help")).returncode == 0
    ours = replies(smtp_sink, 1)[0].message()["Message-ID"]
    assert run_pipe(mail("Re: help", "", f"In-Reply-To: {ours}", msgid="<human@example.net>")).returncode == 0
    assert len(replies(smtp_sink, 2)) == 2


def test_world_readable_config_is_warned_about_once(run_pipe, pipe_env, smtp_sink):
    os.chmod(pipe_env.path, 0o644)
    run_pipe(mail("help", msgid="<w1@example.net>"))
    run_pipe(mail("help", msgid="<w2@example.net>"))
    log = (pipe_env.log_dir / "torokiki-pipe.log").read_text()
    assert log.count("readable by every user") == 1


def test_journal_entries_expire_without_a_daemon(tmp_path):
    clock = StillClock(1_000_000.0)
    journal = Journal(tmp_path, expire_after=3600, clock=clock)
    with journal.hold("k1", "d" * 64) as entry:
        journal.finish(entry)
    entry_file = tmp_path / "k1.json"
    os.utime(entry_file, (clock.seconds, clock.seconds))
    clock.seconds += 7200
    assert journal.expire() == 1 and not entry_file.exists()
    assert not (tmp_path / "locks" / "k1.lock").exists()
    assert journal.expire() == 0


def test_a_damaged_journal_entry_does_not_wedge_the_message(tmp_path):
    journal = Journal(tmp_path, expire_after=3600)
    (tmp_path / "k2.json").write_text("{not json")
    with journal.hold("k2", "e" * 64) as entry:
        assert entry.stage == "received"
    assert (tmp_path / "k2.damaged").exists()


def test_an_entry_an_earlier_version_left_as_answered_only_has_its_stored_reply_sent(
        run_pipe, website, smtp_sink, pipe_env):
    # Earlier versions named the stage "reply-stored" "answered"; such entries outlive upgrades.
    import json

    from torokiki_pipe.stages.s2_headers import read_head

    message = mail(CREATE, "text: 'before the upgrade'", msgid="<upgraded@example.net>")
    head = read_head(message)
    journal = pipe_env.log_dir / "journal"
    journal.mkdir(parents=True)
    stored = b"From: gateway\r\nTo: kiri@example.net\r\nSubject: stored before the upgrade\r\n\r\nsaved\r\n"
    (journal / f"{head.key}.reply.eml").write_bytes(stored)
    (journal / f"{head.key}.json").write_text(json.dumps(
        {"key": head.key, "digest": head.digest, "stage": "answered", "outcome": "saved", "detail": "saved",
         "url": "", "command": "create-response-to", "recipient": "kiri@example.net",
         "first_failure": None, "failures": 0, "created": 1.0, "updated": 1.0}))
    assert Journal(journal, 3600).read(head.key).stage == "reply-stored"
    assert run_pipe(message).returncode == 0
    [sent] = replies(smtp_sink, 1)
    assert sent.message()["Subject"] == "stored before the upgrade"      # the stored one, not a new reply
    assert website.stats()["posts"] == 0
    assert json.loads((journal / f"{head.key}.json").read_text())["stage"] == "done"


def test_the_same_mail_received_twice_over_smtp_is_one_message(run_pipe, website, smtp_sink):
    # Each SMTP delivery adds its own Received: line; the mail is still the same one.
    message = mail(CREATE, "text: 'twice'")
    first = b"Received: from a by mx id AAA; Tue, 14 May 2024 08:12:25 +1200\n" + message
    second = b"Received: from a by mx id BBB; Tue, 14 May 2024 08:13:40 +1200\n" + message
    assert run_pipe(first).returncode == 0 and run_pipe(second).returncode == 0
    assert website.stats()["stored"] == 1


def test_the_sweep_removes_stale_counters_and_leftover_temporary_files(tmp_path):
    from torokiki_pipe.config import ReplyLimit
    from torokiki_pipe.adapters.reply_budget import ReplyBudget
    from torokiki_pipe.adapters.records import Records

    clock = StillClock(1_000_000.0)
    records = Records(tmp_path / "logs")
    budget = ReplyBudget(records.counters_dir, ReplyLimit(2, 3600), clock=clock)
    assert budget.take("kiri@example.net", "m1") == "send"
    assert budget.first_time_refused("kiri@example.net", "nonsense", b"hello", "m1")
    leftover = records.counters_dir / ".tmp-123-abc"
    leftover.write_bytes(b"half a file")
    old = clock.seconds - 3 * 86400
    for path in records.counters_dir.iterdir():
        os.utime(path, (old, old))
    clock.seconds += 2 * 86400
    assert budget.expire() == 2
    assert records.sweep() == 1
    assert sorted(p.name for p in records.counters_dir.iterdir()) == []


def test_an_allowance_asked_again_for_the_same_message_gives_the_same_answer(tmp_path):
    from torokiki_pipe.config import ReplyLimit
    from torokiki_pipe.adapters.reply_budget import LAST, SEND, SILENT, ReplyBudget

    budget = ReplyBudget(tmp_path, ReplyLimit(2, 3600))
    assert [budget.take("a@example.net", k) for k in ("m1", "m1", "m2", "m2", "m3")] == [SEND, SEND, LAST, LAST,
                                                                                           SILENT]
    assert budget.first_time_refused("a@example.net", "x", b"body", "m1")
    assert budget.first_time_refused("a@example.net", "x", b"body", "m1")       # the same message, retried
    assert not budget.first_time_refused("a@example.net", "x", b"body", "m2")   # the same mail sent again


def test_the_time_limit_counts_as_a_failure_and_gives_up_in_the_end(pipe_env, smtp_sink, website):
    """SIGALRM (the run's time limit) while the website is asked: a real signal on this process."""
    import signal as signals

    class Trickling:
        def submit(self, url, content, key):
            os.kill(os.getpid(), signals.SIGALRM)
            time.sleep(5)
            raise AssertionError("the alarm should have ended the exchange")

        fetch = submit

    settings = config.load(os.fspath(pipe_env.variant(TOROKIKI_GIVE_UP_AFTER="1s")), {})
    raw = RawMail(mail(CREATE, "text: 'slowly'", msgid="<alarm@example.net>"), oversize=False)
    effects = run.real_effects(settings)._replace(website=Trickling())
    assert run.handle(raw, Envelope(), settings, effects=effects) == 75
    line = log_lines(pipe_env)[-1]
    assert "outcome=timed-out" in line and "message-id=<alarm@example.net>" in line
    time.sleep(1.2)
    assert run.handle(raw, Envelope(), settings, effects=effects) == 0
    assert "outcome=gave-up" in log_lines(pipe_env)[-1]
    [reply] = replies(smtp_sink, 1)
    assert "may have been saved" in reply.message().get_body(("plain",)).get_content()


def test_ignored_unanswerable_and_invalid_mail_is_kept_once_per_message(run_pipe, pipe_env, smtp_sink):
    ignored = mail("Out of office", "away", "Auto-Submitted: auto-replied", msgid="<away@example.net>")
    unanswerable = b"From: nobody\nSubject: help\nMessage-ID: <nobody@example.net>\n\nhelp\n"
    invalid = mail("nonsense", "hello", msgid="<nonsense@example.net>")
    for _ in range(3):
        for data in (ignored, unanswerable, invalid):
            assert run_pipe(data).returncode == 0
    assert len(files_in(pipe_env.log_dir / "ignored")) == 1
    assert len(files_in(pipe_env.log_dir / "erroneous_emails")) == 2


def test_a_crash_whose_error_quotes_the_key_keeps_it_out_of_the_log(pipe_env, smtp_sink, website):
    settings = config.load(os.fspath(pipe_env), {})

    class Leaky:
        def submit(self, url, content, key):
            raise ValueError(f"bad header X-API-Key: {settings.api_key[:4]}\n {settings.api_key[4:]}")

        fetch = submit

    raw = RawMail(mail(CREATE, "text: 'leak'", msgid="<leak@example.net>"), oversize=False)
    effects = run.real_effects(settings)._replace(website=Leaky())
    assert run.handle(raw, Envelope(), settings, effects=effects) == 75
    log = (pipe_env.log_dir / "torokiki-pipe.log").read_text()
    assert "ValueError" in log and settings.api_key not in log.replace("\n ", "")
