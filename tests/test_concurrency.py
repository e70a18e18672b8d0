"""16 pipes at once over 200 distinct messages plus 50 duplicates, as Postfix runs them.

Every distinct message is posted exactly once and answered exactly once; no
stash name is reused, no log line is torn, no journal entry is corrupt and no
lock is left held -- first with a healthy website, then with one that fails
half of the requests and recovers.
"""
import json
import re
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from filelock import FileLock

from helpers import mail

pytestmark = pytest.mark.integration  # sixteen installed pipes at once

PIPES = 16
DISTINCT = 200
DUPLICATES = 50
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ message-id=\S+ sender=\S+ auth=\S+ command=\S+ target=\S+ saved=\S+ "
                      r"outcome=[a-z-]+ exit=\d+ duration=\d+\.\d{3}s detail=.*$")


def messages():
    distinct = [mail("create-response-to: 'http://torokiki.net/image/1/response'", f"text: 'number {n}'",
                     sender=f"Person {n} <p{n}@example.net>", msgid=f"<c{n}@example.net>")
                for n in range(DISTINCT)]
    return distinct + distinct[:DUPLICATES]


def run_all(run_pipe, config, batch):
    with ThreadPoolExecutor(max_workers=PIPES) as pool:
        return list(pool.map(lambda m: (m, run_pipe(m, config=config, timeout=120)), batch))


def deliver_until_done(run_pipe, config, rounds=8, after_first_round=lambda: None):
    """What the MTA does: deliver everything, then retry what was deferred (bounded)."""
    pending, codes = messages(), Counter()
    for round_number in range(rounds):
        if round_number == 1:
            after_first_round()
        results = run_all(run_pipe, config, pending)
        codes.update(done.returncode for _, done in results)
        assert all(b"Traceback" not in done.stderr for _, done in results)
        pending = [m for m, done in results if done.returncode == 75]
        if not pending:
            return codes
    raise AssertionError(f"{len(pending)} messages still deferred after {rounds} rounds")


def check_promises(website, smtp_sink, log_dir, runs):
    stats = website.stats()
    assert stats["stored"] == DISTINCT
    keys = Counter(item["idempotency_key"] for item in stats["items"])
    assert len(keys) == DISTINCT and set(keys.values()) == {1}
    replies = smtp_sink.wait_for(DISTINCT, timeout=60)
    answered = Counter(r.message()["In-Reply-To"] for r in replies)
    assert len(replies) == DISTINCT and set(answered.values()) == {1}

    lines = (log_dir / "torokiki-pipe.log").read_text().splitlines()
    assert len(lines) == runs
    torn = [line for line in lines if not LOG_LINE.match(line)]
    assert torn == []

    entries = list((log_dir / "journal").glob("*.json"))
    assert len(entries) == DISTINCT
    assert all(json.loads(p.read_text())["stage"] == "done" for p in entries)
    for lock in (log_dir / "journal" / "locks").glob("*.lock"):
        with FileLock(str(lock), timeout=0):   # raises if anyone still held it
            pass
    return lines


def test_sixteen_pipes_healthy_website(run_pipe, pipe_env, website, smtp_sink):
    config = pipe_env.variant(TOROKIKI_REPLY_LIMIT="off")
    codes = deliver_until_done(run_pipe, config)
    assert codes == Counter({0: DISTINCT + DUPLICATES})
    lines = check_promises(website, smtp_sink, pipe_env.log_dir, DISTINCT + DUPLICATES)
    outcomes = Counter(re.search(r"outcome=(\S+)", line).group(1) for line in lines)
    assert outcomes == Counter({"saved": DISTINCT, "duplicate": DUPLICATES})


def test_sixteen_pipes_website_failing_half_then_recovering(run_pipe, pipe_env, website, smtp_sink):
    config = pipe_env.variant(TOROKIKI_REPLY_LIMIT="off")
    website.control("flaky")
    codes = deliver_until_done(run_pipe, config, after_first_round=lambda: website.control("ok"))
    assert codes[75] > 0, "the flaky website should have deferred some messages"
    lines = check_promises(website, smtp_sink, pipe_env.log_dir, sum(codes.values()))
    deferred = {re.search(r"message-id=(\S+)", line).group(1) for line in lines
                if "outcome=website-unavailable" in line}
    kept = sorted(p.name for p in (pipe_env.log_dir / "failed_https").iterdir())
    stems = Counter(name.split(".", 1)[0] for name in kept)
    # evidence is kept once per deferred message: one .eml and one .http.txt each, no name reused
    assert len(kept) == 2 * len(deferred) and set(stems.values()) == {2}


def test_the_reply_budget_holds_under_concurrent_pipes(run_pipe, pipe_env, smtp_sink):
    # 16 pipes at once, one sender, a budget of 5: exactly 5 replies, the 5th with the note.
    config = pipe_env.variant(TOROKIKI_REPLY_LIMIT="5/hour")
    batch = [mail("help", msgid=f"<budget{n}@example.net>") for n in range(PIPES)]
    results = run_all(run_pipe, config, batch)
    assert all(done.returncode == 0 for _, done in results)
    replies = smtp_sink.wait_for(5, timeout=30)
    time.sleep(1)           # a sixth reply, if the budget leaked, would arrive by now
    assert len(smtp_sink.messages) == 5
    notes = [r for r in replies if "PLEASE NOTE" in r.message().get_body(("plain",)).get_content()]
    assert len(notes) == 1
    lines = (pipe_env.log_dir / "torokiki-pipe.log").read_text().splitlines()
    assert sum("reply limit reached" in line for line in lines) == PIPES - 5
