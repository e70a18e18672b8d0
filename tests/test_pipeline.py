"""`pipeline.process` in this process, through the in-memory fakes of fakes.py: one table.

Each row is one delivery of one mail: the fakes' starting state (what the journal,
the reply budget, the website and the mailer hold or will answer), then what must
come of it: the Outcome, each reply the mailer took, what the website stored, what
was kept under logs/, and where the journal leaves the message.  The end-to-end
tests (test_pipe.py, test_exactly_once.py) show the same promises through the
installed program; this table shows the pipeline's own part of them, in
milliseconds and with the clock under the test's control.
"""

from __future__ import annotations

import email
import email.policy
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from torokiki_pipe.stages.s4_journal import DONE, RECEIVED, REPLY_STORED, SENDING, Entry
from torokiki_pipe.config import Config, ReplyLimit
from torokiki_pipe.outcome import Outcome
from torokiki_pipe.pipeline import Envelope, process
from torokiki_pipe.stages.s1_read import RawMail
from torokiki_pipe.stages.s2_headers import read_head

from fakes import Fakes, FakeMailer, FakeWebsite
from helpers import GATEWAY, SITE_URL, mail

DAY = 86400
SEED = f"{SITE_URL}/image/1/response"
CREATE = mail(f"create-response-to: '{SEED}'", "text: 'Kia ora'\n")
EMPTY_CREATE = mail(f"create-response-to: '{SEED}'", "")         # nothing to save: invalid
HELP = mail("help")
AUTO_REPLY = mail("Out of office", "Back on Monday\n", "Auto-Submitted: auto-replied")
# A reply stored by an earlier delivery: any bytes, so that a rebuilt reply cannot pass for it.
STORED = b"Subject: Saved: the stored reply\nMessage-ID: <stored@torokiki.net>\n\nstored, byte for byte\n"

CONFIG = Config(site_url=SITE_URL, api_url="http://127.0.0.1:9", api_key="test-api-key",
                gateway_address=GATEWAY, sendmail=("/usr/sbin/sendmail",), log_dir=Path("/nonexistent"),
                http_timeout=5, max_message_bytes=1024 * 1024, give_up_after=2 * DAY,
                reply_limit=ReplyLimit(2, 3600))


@dataclass(frozen=True)
class Said:
    """A reply by its subject's start and a phrase of its plain text."""
    subject: str
    phrase: str = ""


@dataclass(frozen=True)
class Row:
    name: str
    mail: bytes
    outcome: Outcome
    # -- the fakes' starting state
    entry: dict | None = None          # the message's journal entry (Entry fields; failing_for in seconds)
    stored_reply: bytes | None = None  # the reply the journal holds for it
    busy: bool = False                 # another delivery holds the message
    website: str = "ok"                # FakeWebsite.mode
    mailer: tuple[str, ...] = ()       # the mailer's answers in turn ("sent" once they run out)
    replies_given: int = 0             # replies the sender had in this window, for other mail
    refused_today: bool = False        # the same mail was refused and answered earlier today
    # -- what must come of it
    detail: str = ""                   # a part of the outcome's detail
    sent: tuple = ()                   # each reply the mailer took: its exact bytes, or Said
    attempts: int | None = None        # hand-overs tried; None: as many as were taken
    posts: int = 0                     # POSTs the website got
    stored: int = 0                    # responses the website holds afterwards
    kept: dict = field(default_factory=dict)   # logs/ kind -> the suffixes kept for the message
    stage: str | None = DONE           # the entry's stage afterwards
    owed: bytes | None = None          # the reply still stored afterwards (b"*": the one tried)
    failures: int = 0                  # temporary failures the entry counts afterwards


ROWS = [
    Row("saved", CREATE, Outcome.SAVED, detail="saved as",
        sent=(Said("Saved: your response to", f"{SEED}/1"),), posts=1, stored=1),
    Row("help", HELP, Outcome.ANSWERED, sent=(Said("Torokiki by email"),)),
    Row("ignored", AUTO_REPLY, Outcome.IGNORED, kept={"ignored": (".eml",)}, stage=None),
    Row("duplicate", CREATE, Outcome.DUPLICATE, detail="already handled (saved: saved as",
        entry=dict(stage=DONE, outcome="saved", detail=f"saved as {SEED}/7", url=f"{SEED}/7")),
    Row("busy", CREATE, Outcome.BUSY, busy=True, detail="another delivery", stage=None),
    Row("resume: reply stored, not handed over", CREATE, Outcome.SAVED, detail="saved as",
        entry=dict(stage=REPLY_STORED, outcome="saved", detail=f"saved as {SEED}/7", url=f"{SEED}/7",
                   command="create-response-to", recipient="kiri@example.net"),
        stored_reply=STORED, sent=(STORED,)),
    Row("resume: killed while handing over", CREATE, Outcome.SAVED,
        entry=dict(stage=SENDING, outcome="saved", detail=f"saved as {SEED}/7", url=f"{SEED}/7",
                   command="create-response-to", recipient="kiri@example.net"),
        stored_reply=STORED, sent=(STORED,)),
    Row("website down: deferred", CREATE, Outcome.WEBSITE_UNAVAILABLE, website="down", posts=1,
        kept={"failed_https": (".eml", ".http.txt")}, stage=RECEIVED, failures=1),
    Row("give-up: failing for longer than TOROKIKI_GIVE_UP_AFTER", CREATE, Outcome.GAVE_UP, website="down",
        entry=dict(stage=RECEIVED, failures=5, failing_for=2 * DAY + 60), detail="gave up after 2 days",
        sent=(Said("Not saved:", "we have stopped trying"),), posts=1,
        kept={"failed_https": (".eml", ".http.txt")}, failures=6),
    Row("refused", CREATE, Outcome.REFUSED, website="refuse", sent=(Said("Not saved:", "HTTP 422"),), posts=1,
        kept={"failed_https": (".eml", ".http.txt")}),
    Row("invalid", EMPTY_CREATE, Outcome.INVALID, sent=(Said("Not understood:", "nothing to save"),),
        kept={"erroneous_emails": (".eml",)}),
    Row("withheld: reply limit reached", CREATE, Outcome.SAVED, replies_given=2,
        detail="reply withheld: reply limit reached for this address", posts=1, stored=1),
    Row("withheld: the same refusal was answered today", EMPTY_CREATE, Outcome.INVALID, refused_today=True,
        detail="reply withheld: the same mail was refused and answered today",
        kept={"erroneous_emails": (".eml",)}),
    Row("last reply before the limit says so", HELP, Outcome.ANSWERED, replies_given=1,
        sent=(Said("Torokiki by email", "PLEASE NOTE"),)),
    Row("send-deferred: the mailer says temporary", CREATE, Outcome.SEND_DEFERRED, mailer=("temporary",),
        detail="reply not handed over", attempts=1, posts=1, stored=1, stage=SENDING, owed=b"*", failures=1),
    Row("reply-failed: the mailer says permanent", CREATE, Outcome.REPLY_FAILED, mailer=("permanent",),
        detail="reply could not be sent", attempts=1, posts=1, stored=1, kept={"failed_sends": (".eml",)}),
    Row("reply-failed: the mailer deferred for longer than TOROKIKI_GIVE_UP_AFTER", CREATE, Outcome.REPLY_FAILED,
        entry=dict(stage=SENDING, outcome="saved", detail=f"saved as {SEED}/7", url=f"{SEED}/7",
                   command="create-response-to", recipient="kiri@example.net", failures=9,
                   failing_for=2 * DAY + 60),
        stored_reply=STORED, mailer=("temporary",), attempts=1, kept={"failed_sends": (".eml",)}, failures=10),
]


def start(row: Row) -> tuple[Fakes, str]:
    """The fakes in the row's starting state, and the message's journal key."""
    fakes = Fakes(website=FakeWebsite(SITE_URL, row.website), mailer=FakeMailer(*row.mailer),
                  limit=CONFIG.reply_limit)
    head = read_head(row.mail)
    if row.entry is not None:
        fields = dict(row.entry)
        failing_for = fields.pop("failing_for", None)
        if failing_for is not None:
            fields["first_failure"] = fakes.clock.time() - failing_for
        fakes.journal.put(Entry(key=head.key, digest=head.digest, created=fakes.clock.time() - DAY, **fields),
                          reply=row.stored_reply)
    if row.busy:
        fakes.journal.busy.add(head.key)
    earlier = fakes.clock.time() - 60
    if row.replies_given:
        fakes.budget.granted["kiri@example.net"] = [(earlier, f"other-{n}") for n in range(row.replies_given)]
    if row.refused_today:
        body = row.mail[head.body_start:]
        fakes.budget.refusals[("kiri@example.net", head.subject, body)] = [(earlier, "an-earlier-delivery")]
    return fakes, head.key


def said(message: bytes) -> tuple[str, str]:
    parsed = email.message_from_bytes(message, policy=email.policy.default)
    return str(parsed["Subject"]), parsed.get_body(("plain",)).get_content()


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
def test_one_delivery(row: Row):
    fakes, key = start(row)

    done = process(RawMail(row.mail, oversize=False), Envelope(), CONFIG, fakes.effects())

    assert done.outcome is row.outcome, done.detail
    assert row.detail in done.detail
    mailer = fakes.mailer
    assert len(mailer.attempts) == (len(row.sent) if row.attempts is None else row.attempts)
    assert all(a.uninterrupted and a.recipient == "kiri@example.net" for a in mailer.attempts)
    assert len(mailer.sent) == len(row.sent)
    for got, expected in zip(mailer.sent, row.sent):
        if isinstance(expected, bytes):
            assert got.message == expected
        else:
            subject, text = said(got.message)
            assert subject.startswith(expected.subject) and expected.phrase in text, (subject, text)
    assert fakes.website.posts == row.posts
    assert len(fakes.website.stored) == row.stored
    kept = {kind: tuple(files) for kind, stems in fakes.records.kept.items() for files in stems.values()}
    assert kept == row.kept
    assert sum(len(stems) for stems in fakes.records.kept.values()) == len(row.kept)   # one stem a kind
    if "failed_sends" in row.kept:      # the reply that was refused, ready to send by hand
        [stem] = fakes.records.kept["failed_sends"].values()
        assert stem[".eml"] == mailer.attempts[-1].message
    entry = fakes.journal.read(key)
    assert (entry.stage if entry else None) == row.stage
    if entry is not None:
        assert entry.failures == row.failures
        owed = mailer.attempts[-1].message if row.owed == b"*" else row.owed
        assert fakes.journal.replies.get(key) == owed


def test_a_reply_is_stored_before_it_is_handed_over_and_the_retry_sends_the_same_bytes():
    fakes, key = start(replace(ROWS[0], mailer=("temporary",)))
    raw = RawMail(CREATE, oversize=False)

    first = process(raw, Envelope(), CONFIG, fakes.effects())
    fakes.clock.advance(600)
    second = process(raw, Envelope(), CONFIG, fakes.effects())

    assert (first.outcome, second.outcome) == (Outcome.SEND_DEFERRED, Outcome.SAVED)
    assert [stage for k, stage in fakes.journal.stages if k == key] == [
        RECEIVED, REPLY_STORED, SENDING, SENDING, SENDING, DONE]
    tried, taken = fakes.mailer.attempts
    assert taken.message == tried.message and taken.result.sent
    assert fakes.website.posts == 1


def test_a_journal_entry_gives_the_log_line_its_target_and_saved_url():
    from torokiki_pipe.pipeline import _urls
    from torokiki_pipe.stages.s4_journal import Entry

    target, saved = f"{SEED}", f"{SEED}/7"
    assert _urls(Entry("k", "d", outcome="saved", url=saved, target=target)) == {"target": target, "saved": saved}
    assert _urls(Entry("k", "d", outcome="refused", target=target)) == {"target": target, "saved": ""}
    # entries written before `target` held one URL: the new response's when saved, else the content's
    assert _urls(Entry("k", "d", outcome="saved", url=saved)) == {"saved": saved}
    assert _urls(Entry("k", "d", outcome="refused", url=target)) == {"target": target}
    assert _urls(Entry("k", "d", outcome="answered")) == {"target": "", "saved": ""}
