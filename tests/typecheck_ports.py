"""For the type checker only (``make typecheck``; never run, not collected by pytest).

Each real adapter and each dry-run fake is assigned to its port: mypy checks
the Protocols structurally, so an adapter whose method's name, parameters or
result drift from its port (torokiki_pipe/ports.py) fails ``make test``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path
    from typing import TextIO

    from torokiki_pipe.adapters.clock import SystemClock
    from torokiki_pipe.adapters.dryrun import DryRunWebsite, MemoryJournal, NoLimit, NoRecords, PrintMailer
    from torokiki_pipe.adapters.journal import Journal
    from torokiki_pipe.adapters.records import Records
    from torokiki_pipe.adapters.reply_budget import ReplyBudget
    from torokiki_pipe.adapters.sendmail import Sendmail
    from torokiki_pipe.adapters.website import Website
    from torokiki_pipe.config import Config
    from torokiki_pipe.ports import BudgetPort, Clock, JournalPort, MailerPort, RecordsPort, WebsitePort

    from fakes import FakeBudget, FakeClock, FakeJournal, FakeMailer, FakeRecords, FakeWebsite


def real_adapters(settings: Config, root: Path) -> None:
    website: WebsitePort = Website(settings.api_url, settings.api_key, settings.http_timeout, settings.site_url)
    mailer: MailerPort = Sendmail(settings.sendmail)
    records: RecordsPort = Records(root)
    journal: JournalPort = Journal(root, settings.journal_expire)
    budget: BudgetPort = ReplyBudget(root, settings.reply_limit)
    clock: Clock = SystemClock()


def dry_run_fakes(settings: Config, out: TextIO) -> None:
    website: WebsitePort = DryRunWebsite(settings, out)
    mailer: MailerPort = PrintMailer(settings.sendmail, out)
    records: RecordsPort = NoRecords()
    journal: JournalPort = MemoryJournal()
    budget: BudgetPort = NoLimit()


def test_fakes() -> None:
    # The in-memory fakes of tests/test_pipeline.py stand for the same ports.
    clock: Clock = FakeClock()
    website: WebsitePort = FakeWebsite()
    mailer: MailerPort = FakeMailer()
    records: RecordsPort = FakeRecords()
    journal: JournalPort = FakeJournal(FakeClock())
    budget: BudgetPort = FakeBudget(FakeClock())
