"""Stage 6: choose and build the reply.  Pure: no clock, no I/O.

Texts live in ``templates/``: each file starts with a ``Subject:`` line, then
a blank line, then the body, filled in with `string.Template`.  Every reply is
``multipart/alternative``: that text, and its HTML (``NAME.html`` beside
``NAME.txt``, inside ``layout.html``, every value HTML-escaped), both carrying
the same ``mailto:`` links to the next step (`Reply.links`: the mails of
``mailto-*.txt``, encoded by `s7_links.mailto`).  Every reply
goes to the one checked From address only, carries the headers that keep
loops from starting (RFC 3834 ``Auto-Submitted``, ``Precedence: bulk``, our
``X-Loop``), threads under the original, and never carries the original mail
back (a backscatter vector).

Nor does it amplify what the sender wrote: every template value except the
ones named in WHOLE_VALUES (ours, or bounded where they are made) is cut to a
short excerpt, and so are the display name and the References taken over.
"""

from __future__ import annotations

import base64
import binascii
import os
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid
from functools import lru_cache
from pathlib import Path
from string import Template
from types import MappingProxyType
from typing import Mapping, NamedTuple

from torokiki_pipe.stages.s5_understand.command import EXCERPT_CHARS, excerpt
from torokiki_pipe.stages.s5_understand.urls import ContentUrl, message_id_about, subaddress_about
from torokiki_pipe.stages.s3_guard import Sender, loop_marker
from torokiki_pipe.stages.s7_links import mailto
from torokiki_pipe.stages.s8_record import one_line

# A display name or subject on one line, short: it can never add a header or a recipient.
HEADER_CHARS = 200

TEMPLATES = Path(__file__).parent.parent / "templates"

# Local line endings for sendmail; headers are kept short by one_line, so folding
# (which can put a bare line break straight after "Subject:") is not needed.
REPLY_POLICY = SMTP.clone(linesep="\n", max_line_length=998)
# For an internationalised address (SMTPUTF8, RFC 6532): the same, with UTF-8 headers.
REPLY_POLICY_UTF8 = REPLY_POLICY.clone(utf8=True)


class ReplyContext(NamedTuple):
    """What every reply needs to know about the mail it answers."""
    to: Sender
    gateway_address: str
    site_url: str
    message_id: str
    references: str
    original_subject: str
    now: datetime
    subaddress: str = ""        # TOROKIKI_REPLY_SUBADDRESS: replies about content say Reply-To: gateway+path@


class Reply(NamedTuple):
    """Which reply to send: its templates, their values and a file to attach."""
    template: str
    values: Mapping[str, object] = MappingProxyType({})
    html_template: str | None = None
    attachment: tuple[str, bytes] | None = None    # (file name, data)
    about: ContentUrl | None = None                 # the content a reply to this reply answers
    # value name -> a mailto-*.txt template: the mail one tap opens (s7_links), filled from the same values
    links: Mapping[str, str] = MappingProxyType({})
    # value name -> a fragment's name without .txt/.html, filled with the values and links
    notes: Mapping[str, str] = MappingProxyType({})


# Template values that reach the sender whole: the gateway's own words and addresses, the
# problems list (problems_text bounds it), what the website sent about its content, the
# note on unsaved words (it quotes an excerpt of them), and the corrected subject of "Try
# again" (a command word and a canonical URL: urls.suggested_url).
# Any other value (the subject, the display name, the website's error text, and any value
# added later) may be the sender's and is cut to an excerpt.
WHOLE_VALUES = frozenset({"site", "gateway", "problems", "short_help", "limit", "waited", "window",
                          "url", "inspired_by", "text", "attachment_note", "unsaved_note", "retry_subject"})
EXCERPT_LIMITS = {"detail": 300}     # an error text needs a little more room to be useful
MAX_PROBLEM_CHARS = 500


def bounded(values: dict) -> dict:
    """The template values, each one the sender may control cut to an excerpt."""
    return {k: v if k in WHOLE_VALUES else excerpt(str(v), EXCERPT_LIMITS.get(k, EXCERPT_CHARS))
            for k, v in values.items()}


@lru_cache(maxsize=None)
def _template(name: str) -> tuple[Template, Template]:
    text = (TEMPLATES / name).read_text(encoding="utf-8")
    head, _, body = text.partition("\n\n")
    subject = head.removeprefix("Subject:").strip() if head.startswith("Subject:") else ""
    return Template(subject), Template(body if head.startswith("Subject:") else text)


def render(name: str, values: dict) -> tuple[str, str]:
    subject, body = _template(name)
    return subject.safe_substitute(values), body.safe_substitute(values)


def link(template: str, values: dict, address: str) -> str:
    """The mailto: URI of the mail in `template` (templates/mailto-*.txt), filled with `values`."""
    subject, body = render(template, values)
    return mailto(address, subject, body.rstrip("\n"))


def build(reply: Reply, context: ReplyContext, last_before_limit: str | None = None) -> bytes:
    """The reply, as the bytes sendmail reads.  `last_before_limit` (e.g. "an hour") adds
    the note that no more answers follow for that long."""
    name = context.to.display_name
    # "Kia ora Kiri," or "Kia ora,": a greeting never repeats a bare address.
    values = bounded({"site": context.site_url, "gateway": context.gateway_address,
                      "greeting": f"Kia ora {name}," if name else "Kia ora,",
                      **reply.values})
    # Every reply offers help; each link is built from values already bounded, never cut itself.
    links = {"help_link": "mailto-help.txt", **reply.links}
    values.update({key: link(template, values, context.gateway_address) for key, template in links.items()})
    html_values = html_escaped(values)
    for key, fragment in reply.notes.items():
        values[key] = render(f"{fragment}.txt", values)[1]
        html_values[key] = render(f"{fragment}.html", html_values)[1]
    subject, body = render(reply.template, values)
    if last_before_limit:
        note = render("limit-note.txt", {"window": last_before_limit})[1].strip("\n")
        text, separator, signature = body.rpartition("\n-- \n")   # the note goes above the signature
        body = f"{text.rstrip()}\n\n{note}\n{separator}{signature}" if separator else f"{body.rstrip()}\n\n{note}\n"
    message = EmailMessage(policy=REPLY_POLICY if context.to.address.isascii() else REPLY_POLICY_UTF8)
    message["From"] = Address("Torokiki", addr_spec=context.gateway_address)
    # By its parts: Address(addr_spec=) refuses a non-ASCII local part, which guard.reply_sender
    # let through only for a mailer that carries SMTPUTF8 (and this message's policy writes UTF-8).
    to_local, _, to_domain = context.to.address.rpartition("@")
    message["To"] = Address(one_line(excerpt(context.to.display_name), HEADER_CHARS),
                            username=to_local, domain=to_domain)
    if reply.about is not None and context.subaddress:
        # A reply to this reply names the content by the address it goes to, too.
        message["Reply-To"] = subaddress_about(reply.about, context.gateway_address, context.subaddress)
    message["Subject"] = one_line(subject, HEADER_CHARS)
    message["Date"] = format_datetime(context.now)
    domain = context.gateway_address.rpartition("@")[2]
    message["Message-ID"] = (message_id_about(reply.about, domain, os.urandom(8).hex()) if reply.about
                             else make_msgid("torokiki", domain=domain))
    original = context.message_id.strip()
    if _is_message_id(original):
        message["In-Reply-To"] = original
        earlier = [r for r in context.references.split()[-100:] if _is_message_id(r)]
        message["References"] = " ".join((earlier + [original])[-10:])
    message["Auto-Submitted"] = "auto-replied"
    message["Precedence"] = "bulk"
    message["X-Loop"] = loop_marker(context.gateway_address)
    # RFC 2369: the mail client's own "help" button, one tap to the help mail.
    message["List-Help"] = f"<mailto:{context.gateway_address}?subject=help>"
    message.set_content(body, charset="utf-8")
    message.add_alternative(_html(reply, subject, html_values, last_before_limit), subtype="html", charset="utf-8")
    if not reply.attachment:
        return message.as_bytes()
    import mimetypes

    name, data = reply.attachment
    maintype, subtype = (mimetypes.guess_type(name)[0] or "application/octet-stream").split("/", 1)
    # The file's part gets a one-line stand-in for its body, replaced once the message is
    # bytes: the email package writes a body one line at a time (slow, and memory-hungry
    # for a big file; bench/README.md), and to this policy's 998-character lines where
    # RFC 2045 wants 76; base64.encodebytes writes 76-character lines, at once.
    message.add_attachment(b"", maintype=maintype, subtype=subtype, filename=name)
    stand_in = f"torokiki-attachment-{os.urandom(8).hex()}\n"
    message.get_payload()[-1].set_payload(stand_in)   # type: ignore[index, union-attr]  # multipart: a list
    return message.as_bytes().replace(stand_in.encode(), base64.encodebytes(data), 1)


def _html(reply: Reply, subject: str, html_values: dict, last_before_limit: str | None) -> str:
    """The HTML part: the reply's own HTML template (NAME.html beside NAME.txt) inside layout.html."""
    content = render(reply.html_template or reply.template.removesuffix(".txt") + ".html", html_values)[1]
    note = render("limit-note.html", html_escaped({"window": last_before_limit}))[1] if last_before_limit else ""
    title = html_escaped({"title": subject})
    return render("layout.html", {**html_values, **title, "content": content, "limit_note": note})[1]


def attachment_from_content(content: dict) -> tuple[str, bytes] | None:
    """The website's Attachment object as (safe file name, bytes), or None."""
    attached = content.get("Attachment")
    if not isinstance(attached, dict) or not isinstance(attached.get("data"), str):
        return None
    try:
        data = base64.b64decode(attached["data"], validate=False)
    except (binascii.Error, ValueError):
        return None
    from torokiki_pipe.stages.s5_understand.mime import safe_filename

    name = safe_filename(str(attached.get("name") or ""), "application/octet-stream")
    return name, data


MAX_PROBLEMS_SHOWN = 20   # a page of junk can hold thousands; the first ones say enough


def problems_text(problems) -> str:
    lines = []
    for problem in problems[:MAX_PROBLEMS_SHOWN]:
        where = f"line {problem.line} of your mail: " if problem.line else ""
        lines.append(f"  * {where}{excerpt(problem.message, MAX_PROBLEM_CHARS)}")
    if len(problems) > MAX_PROBLEMS_SHOWN:
        lines.append(f"  * … and {len(problems) - MAX_PROBLEMS_SHOWN} more problems like these")
    return "\n".join(lines)


def _is_message_id(text: str) -> bool:
    return text.startswith("<") and text.endswith(">") and len(text) < 500


# html.escape's table: importing the html package loads html.entities, a table of
# 2,000 names, on every help reply, only for these five characters.
_HTML_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#x27;"})


def html_escaped(values: dict) -> dict:
    return {k: str(v).translate(_HTML_ESCAPES) for k, v in values.items()}


def duration_words(seconds: float) -> str:
    """A duration as a reply says it: "2 days", "1 hour", "45 seconds"."""
    for size, word in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds >= size:
            count = round(seconds / size)
            return f"{count} {word}" + ("" if count == 1 else "s")
    return f"{int(seconds)} seconds"
