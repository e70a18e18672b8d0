"""Real faults on real processes: the promises hold when the gateway is killed, stopped, starved of disk or raced.

Every trial runs the installed ``torokiki-pipe`` against the reference website
on loopback, with replies through msmtp into the SMTP sink (or through a
sendmail stand-in that itself does the harm), and then counts what the website
stored and what was sent:

- each distinct message is stored once and answered once;
- where a second hand-over cannot be excluded (killed while sendmail ran), the
  second reply is byte for byte the first (same Message-ID);
- nothing is lost: a message the gateway did not finish is deferred (exit 75),
  and its redelivery finishes it;
- every non-zero exit writes exactly one stderr line, starting with the RFC 3463 code.

Loops are bounded in count and time; the random moments come from a seeded
generator whose seed is in the test's name, so a failure can be run again.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections import defaultdict
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from helpers import deliver_until_handled, finish, one_status_line, start

pytestmark = pytest.mark.integration  # the installed pipe, killed, starved and raced

GATEWAY = "gateway@torokiki.net"
TARGET = "http://torokiki.net/image/1/response"


def message(text: str, msgid: str, sender: str = "Kiri Tane <kiri@example.net>") -> bytes:
    return (f"From: {sender}\nTo: {GATEWAY}\nSubject: create-response-to: '{TARGET}'\n"
            f"Message-ID: {msgid}\nDate: Tue, 14 May 2024 08:12:24 +1200\n\ntext: '{text}'\n").encode()


def stored_texts(website) -> list[str]:
    return [item["content"].get("Text") for item in website.stats()["items"]]


def replies_by_original(smtp_sink) -> dict[str, list[bytes]]:
    found = defaultdict(list)
    for received in smtp_sink.messages:
        found[str(received.message()["In-Reply-To"])].append(received.data)
    return found


def settle(smtp_sink, seconds: float = 1.5) -> None:
    """Let an msmtp that outlived a killed pipe finish its delivery."""
    time.sleep(seconds)


# --------------------------------------------------------------------------- races

def test_two_mails_with_one_message_id_at_the_same_moment_are_both_saved(run_pipe, pipe_env, website, smtp_sink):
    config = pipe_env.variant(TOROKIKI_REPLY_LIMIT="off")
    website.control("slow", delay=0.3)         # the first still holds the message when the second arrives
    pairs = [(message(f"first {n}", f"<pair{n}@example.net>"), message(f"second {n}", f"<pair{n}@example.net>"))
             for n in range(8)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda data: run_pipe(data, config=config), [m for pair in pairs for m in pair]))
    for done in results:
        one_status_line(done)
    retried = [deliver_until_handled(run_pipe, data, config) for data, done
               in zip([m for pair in pairs for m in pair], results) if done.returncode != 0]
    assert all(done.returncode == 0 for done in retried)
    assert sorted(stored_texts(website)) == sorted(f"{w} {n}" for n in range(8) for w in ("first", "second"))
    smtp_sink.wait_for(16)
    assert sorted(len(v) for v in replies_by_original(smtp_sink).values()) == [2] * 8


# --------------------------------------------------------------------------- kills

@pytest.mark.parametrize("seed", [12])
def test_kill_9_at_random_moments_never_stores_twice_nor_answers_differently(
        seed, pipe_program, run_pipe, pipe_env, website, smtp_sink):
    rng = random.Random(seed)
    config = pipe_env.variant(TOROKIKI_REPLY_LIMIT="off")
    website.control("slow", delay=0.3)          # the kill lands inside the POST as often as not
    trials = 10
    for n in range(trials):
        data = message(f"kill {n}", f"<kill{n}@example.net>")
        child = start(pipe_program, config, data)
        time.sleep(rng.uniform(0.05, 1.2))
        child.kill()
        finish(child)
        deliver_until_handled(run_pipe, data, config)
    settle(smtp_sink)
    assert sorted(stored_texts(website)) == sorted(f"kill {n}" for n in range(trials))
    by_original = replies_by_original(smtp_sink)
    assert sorted(by_original) == sorted(f"<kill{n}@example.net>" for n in range(trials))
    for original, sent in by_original.items():
        assert len(set(sent)) == 1, f"{original}: {len(set(sent))} different replies"


@pytest.mark.parametrize("seed", [7])
def test_sigterm_at_random_moments_stops_cleanly_or_finishes(seed, pipe_program, run_pipe, pipe_env, website,
                                                             smtp_sink):
    rng = random.Random(seed)
    config = pipe_env.variant(TOROKIKI_REPLY_LIMIT="off")
    website.control("slow", delay=0.3)
    trials, stopped = 10, 0
    for n in range(trials):
        data = message(f"term {n}", f"<term{n}@example.net>")
        child = start(pipe_program, config, data)
        time.sleep(rng.uniform(0.15, 1.2))
        child.send_signal(signal.SIGTERM)
        done = finish(child)
        # Killed before Python could install a handler is the only other way out.
        assert done.returncode in (0, 75, -signal.SIGTERM), done
        if done.returncode != -signal.SIGTERM:
            one_status_line(done)
        stopped += done.returncode != 0
        if done.returncode != 0:
            deliver_until_handled(run_pipe, data, config)
    settle(smtp_sink, 0.5)
    assert stopped, "no SIGTERM landed before the end of a run: the trial proves nothing"
    assert sorted(stored_texts(website)) == sorted(f"term {n}" for n in range(trials))
    counts = {original: len(sent) for original, sent in replies_by_original(smtp_sink).items()}
    assert counts == {f"<term{n}@example.net>": 1 for n in range(trials)}     # SIGTERM never answers twice


def _stand_in(tmp_path: Path, name: str, then: str) -> Path:
    """A sendmail that stores the reply in an outbox, then does `then` (once), then exits 0."""
    outbox = tmp_path / f"{name}-outbox"
    outbox.mkdir()
    script = tmp_path / name
    script.write_text(f"""#!/bin/sh
out="{outbox}/$(date +%s%N)-$$.eml"
cat > "$out.tmp" && mv "$out.tmp" "$out" || exit 75
if [ ! -e "{outbox}/.done" ]; then
  touch "{outbox}/.done"
  {then}
fi
exit 0
""")
    script.chmod(0o755)
    return script


def _outbox(script: Path) -> list[bytes]:
    folder = script.parent / f"{script.name}-outbox"
    return [p.read_bytes() for p in sorted(folder.glob("*.eml"))]


def test_killed_right_after_sendmail_took_the_reply_the_second_reply_is_the_same_bytes(
        run_pipe, pipe_env, website, tmp_path):
    sendmail = _stand_in(tmp_path, "kills-the-pipe", "kill -9 $PPID; sleep 1")
    config = pipe_env.variant(TOROKIKI_SENDMAIL=str(sendmail))
    data = message("handed over", "<handed@example.net>")
    first = run_pipe(data, config=config)
    assert first.returncode == -signal.SIGKILL
    second = run_pipe(data, config=config)
    assert second.returncode == 0, second.stderr
    assert stored_texts(website) == ["handed over"] and website.stats()["posts"] == 1
    sent = _outbox(sendmail)
    assert len(sent) == 2 and sent[0] == sent[1]        # the documented window: the identical reply
    assert run_pipe(data, config=config).returncode == 0 and len(_outbox(sendmail)) == 2


def test_killed_as_the_mailer_starts_the_mailer_still_gets_the_whole_reply(run_pipe, pipe_env, website, tmp_path):
    # Found by the random SIGKILLs above, under load: killed after sendmail started and
    # before the last byte, the gateway left sendmail an empty or cut reply, which it sent
    # (it cannot tell a writer that died from the end of a message), and the redelivery
    # the real one.  A reply larger than a pipe's buffer makes the moment certain: the
    # stand-in kills the gateway before it reads a byte.
    import base64
    import email
    import email.policy

    photo = os.urandom(1024 * 1024)
    body = ("--b\nContent-Type: image/png; name=big.png\nContent-Transfer-Encoding: base64\n\n"
            + base64.encodebytes(photo).decode() + "--b--\n")
    saving = (f"From: Kiri Tane <kiri@example.net>\nTo: {GATEWAY}\nSubject: create-response-to: '{TARGET}'\n"
              "Message-ID: <big@example.net>\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n"
              + body).encode()
    assert run_pipe(saving, config=pipe_env.variant(TOROKIKI_REPLY_LIMIT="off")).returncode == 0
    [item] = website.stats()["items"]
    outbox = tmp_path / "late-outbox"
    outbox.mkdir()
    sendmail = tmp_path / "kills-first"
    sendmail.write_text(f"""#!/bin/sh
kill -9 $PPID
sleep 0.2
cat > "{outbox}/reply.tmp" && mv "{outbox}/reply.tmp" "{outbox}/reply.eml"
""")
    sendmail.chmod(0o755)
    fetching = (f"From: Kiri Tane <kiri@example.net>\nTo: {GATEWAY}\nSubject: get: '{item['location']}'\n"
                "Message-ID: <fetch-big@example.net>\n\n").encode()
    done = run_pipe(fetching, config=pipe_env.variant(TOROKIKI_SENDMAIL=str(sendmail), TOROKIKI_REPLY_LIMIT="off"))
    assert done.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 20
    while not (outbox / "reply.eml").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    reply = email.message_from_bytes((outbox / "reply.eml").read_bytes(), policy=email.policy.default)
    assert reply["In-Reply-To"] == "<fetch-big@example.net>"
    [attached] = list(reply.iter_attachments())
    assert attached.get_content() == photo


def test_sigterm_during_the_hand_over_finishes_it_and_answers_once(run_pipe, pipe_env, website, tmp_path):
    sendmail = _stand_in(tmp_path, "stops-the-pipe", "kill -TERM $PPID; sleep 0.5")
    config = pipe_env.variant(TOROKIKI_SENDMAIL=str(sendmail))
    data = message("finish it", "<finish@example.net>")
    done = run_pipe(data, config=config)
    assert done.returncode == 0 and done.stderr == b""
    assert run_pipe(data, config=config).returncode == 0         # a redelivery is a duplicate
    assert len(_outbox(sendmail)) == 1 and stored_texts(website) == ["finish it"]
    log = (pipe_env.log_dir / "torokiki-pipe.log").read_text()
    assert "SIGTERM while the reply was handed over: finished first" in log


# --------------------------------------------------------------------------- disks

@contextmanager
def tmpfs(where: Path, options: str):
    """A tmpfs of its own mounted on `where` (needs root), unmounted afterwards."""
    where.mkdir(exist_ok=True)
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MB filesystem of its own."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    with tmpfs(tmp_path / "small-disk", "size=1m,mode=0700") as mount:
        yield mount


def _fill(folder: Path) -> Path:
    filler = folder / "filler"
    with open(filler, "wb") as stream:
        try:
            while True:
                stream.write(b"\0" * 65536)
                stream.flush()
        except OSError:
            pass
    return filler


def test_a_full_disk_defers_with_one_line_and_loses_nothing(run_pipe, pipe_env, website, smtp_sink, small_disk):
    logs = small_disk / "logs"
    config = pipe_env.variant(TOROKIKI_LOG_DIR=str(logs))
    logs.mkdir()
    filler = _fill(small_disk)
    data = message("no room", "<full@example.net>")
    done = run_pipe(data, config=config)
    assert done.returncode == 75
    one_status_line(done)
    assert done.stderr.startswith(b"4.3.1 ")
    filler.unlink()
    deliver_until_handled(run_pipe, data, config)
    assert stored_texts(website) == ["no room"]
    smtp_sink.wait_for(1)
    assert len(smtp_sink.messages) == 1


def test_a_disk_that_fills_while_sendmail_runs_still_counts_as_handled(run_pipe, pipe_env, website, small_disk,
                                                                        tmp_path):
    logs = small_disk / "logs"
    logs.mkdir()
    sendmail = _stand_in(tmp_path, "fills-the-disk",
                         f"dd if=/dev/zero of={small_disk}/filler bs=64k count=64 2>/dev/null")
    config = pipe_env.variant(TOROKIKI_LOG_DIR=str(logs), TOROKIKI_SENDMAIL=str(sendmail))
    data = message("then full", "<fills@example.net>")
    done = run_pipe(data, config=config)
    assert done.returncode == 0, done.stderr      # sendmail took it: handled, whatever the disk says now
    assert done.stderr == b""
    assert len(_outbox(sendmail)) == 1 and stored_texts(website) == ["then full"]


@pytest.fixture
def read_only_logs(tmp_path):
    """A logs/ folder the pipe cannot write: a read-only tmpfs as root, else mode 0500."""
    logs = tmp_path / "ro-logs"
    if os.geteuid() == 0:
        with tmpfs(logs, "ro,size=64k") as mount:
            yield mount
    else:
        logs.mkdir()
        logs.chmod(0o500)
        yield logs
        logs.chmod(0o700)


@pytest.mark.parametrize("mail_kind", ["create", "ignored"])
def test_unwritable_logs_give_one_status_line(mail_kind, run_pipe, pipe_env, website, read_only_logs):
    config = pipe_env.variant(TOROKIKI_LOG_DIR=str(read_only_logs))
    data = message("nowhere", "<ro@example.net>")
    if mail_kind == "ignored":
        data = b"Auto-Submitted: auto-replied\n" + data
    done = run_pipe(data, config=config)
    assert done.returncode == 75
    one_status_line(done)
    assert done.stderr.startswith(b"4.3.1 logs-unwritable")
    assert website.stats()["stored"] == 0


# --------------------------------------------------------------------------- allowance, then no reply stored

class DiskFullOnce:
    """The real journal, whose first attempt to store a reply finds the disk full."""

    def __init__(self, journal):
        self.journal, self.failed_once = journal, False

    def answer(self, entry, reply, **changes):
        if not self.failed_once:
            self.failed_once = True
            raise OSError(28, "No space left on device")
        return self.journal.answer(entry, reply, **changes)

    def __getattr__(self, name):
        return getattr(self.journal, name)


@pytest.mark.parametrize("subject", ["nonsense", "help"])
def test_a_reply_whose_allowance_was_taken_but_not_stored_is_sent_on_the_next_delivery(
        subject, pipe_env, smtp_sink, website):
    """The refusal marker (or the reply budget) was taken, then storing the reply failed."""

    from torokiki_pipe import run
    from torokiki_pipe import config
    from torokiki_pipe.adapters.journal import Journal
    from torokiki_pipe.pipeline import Envelope
    from torokiki_pipe.stages.s1_read import RawMail

    settings = config.load(os.fspath(pipe_env.variant(TOROKIKI_REPLY_LIMIT="1/hour")), {})
    data = (f"From: Kiri <kiri@example.net>\nTo: {GATEWAY}\nSubject: {subject}\n"
            "Message-ID: <owed@example.net>\n\nhello\n").encode()
    real = run.real_effects(settings)
    journal = DiskFullOnce(Journal(real.records.journal_dir, settings.journal_expire))
    effects = real._replace(journal=journal)
    first = run.handle(RawMail(data, False), Envelope(), settings, effects=effects)
    assert first == 75 and smtp_sink.messages == []
    assert run.handle(RawMail(data, False), Envelope(), settings, effects=effects) == 0
    [reply] = smtp_sink.wait_for(1)
    assert str(reply.message()["In-Reply-To"]) == "<owed@example.net>"
    assert "withheld" not in (pipe_env.log_dir / "torokiki-pipe.log").read_text()
