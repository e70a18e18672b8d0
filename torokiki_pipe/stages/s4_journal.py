"""Stage 4, journal: what the pipeline knows of the exactly-once journal without loading it.

The journal itself (files, locks: `adapters.journal`) is built on first use,
past the guard; this module holds what the pipeline names before that.
"""


class JournalBusy(Exception):
    """Another run holds this message's lock for too long: try again later."""
