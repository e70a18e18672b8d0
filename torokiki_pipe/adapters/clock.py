"""Adapter: the one clock the gateway reads (port `torokiki_pipe.ports.Clock`).

`now()` is an aware datetime in UTC (for the reply's Date header), `time()`
seconds since the epoch (for the journal, the reply budget and ``logs/``):
both read the same system clock.  Every adapter that reads the time takes a
clock, so a test can hand one that stands still or jumps a day.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone


class SystemClock:
    """The system's wall clock; holds no state, so one instance may serve everything."""

    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def time(self) -> float:
        return time.time()

