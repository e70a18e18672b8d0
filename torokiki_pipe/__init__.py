"""torokiki-pipe: the email gateway of Torokiki.

One process per delivered message: read -> parse -> guard -> understand the
command -> act on the website -> reply -> record.  See pipeline.py.
"""

__version__ = "0.1.0"
