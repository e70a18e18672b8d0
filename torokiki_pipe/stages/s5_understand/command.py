"""Stage 4: understand what the person asks for.

Pure: from the subject line (and, for commands that need it, the parsed
mail) to one request value, or an `Invalid` that lists every problem in plain
words.  One small class per command and a table that dispatches, as in
Mailman's email commands.
"""

from __future__ import annotations

import re
from typing import NamedTuple, TYPE_CHECKING, Union

if TYPE_CHECKING:
    from torokiki_pipe.stages.s5_understand.mime import Attachment, Mail
    from torokiki_pipe.stages.s5_understand.urls import ContentUrl

# Reply and forward prefixes in the languages our senders' phones speak.
_PREFIXES = re.compile(r"^\s*(?:(?:re|fwd?|aw|sv|wg|tr|rv|antw|vs)\s*(?:\[\d+\])?\s*:\s*)+", re.I)
_COMMAND = re.compile(r"^\s*([A-Za-z][A-Za-z_-]*)\s*(?::\s*(.*?))?\s*$", re.S)
RESPONSE_TAGS = frozenset({"text", "tags", "objective", "location"})
MAX_COMMAND_CHARS = 64      # far above the longest command, create-response-to


class SubjectLine(NamedTuple):
    """The command word of the subject and its argument."""
    command: str        # lower-cased command word; "" when the subject is empty
    argument: str       # what follows the colon, unquoted
    raw: str
    implied: bool = False   # not written: read from what the mail replies to (`replying_to`)


class Problem(NamedTuple):
    """One thing wrong with a mail, said so that the sender can fix it."""
    message: str
    line: int | None = None     # body line, for body errors
    fix: str = ""               # the corrected subject line, when the fix is plain (urls.suggested_url)


class HelpRequest(NamedTuple):
    """`help`: the sender asks how the gateway is used."""


class GetRequest(NamedTuple):
    """`get: 'URL'`: send me this content."""
    url: ContentUrl


class CreateResponseRequest(NamedTuple):
    """`create-response-to: 'URL'`: save this text or file as a response."""
    url: ContentUrl                 # what is answered
    text: str | None
    tags: tuple[str, ...]
    objective: str | None
    location: str | None
    attachment: Attachment | None
    unsaved_words: str = ""         # the writer's words beside the file: not saved, and the reply says so


class Invalid(NamedTuple):
    """A mail the gateway cannot act on, with every problem it has."""
    command: str
    problems: tuple[Problem, ...]


Request = Union[HelpRequest, GetRequest, CreateResponseRequest, Invalid]


def read_subject(subject: str) -> SubjectLine:
    stripped = _PREFIXES.sub("", subject or "").strip()
    found = _COMMAND.match(stripped)
    if not found:
        return SubjectLine(command="" if not stripped else "?", argument=stripped, raw=subject or "")
    word, argument = found.groups()
    if argument:
        from torokiki_pipe.stages.s5_understand.body import unquote   # the body grammar's quotes; `help` has no argument to unquote

        argument = unquote(argument)
    # The word goes to the log and the journal: a megabyte of letters is no command either.
    return SubjectLine(command=word.lower()[:MAX_COMMAND_CHARS], argument=argument or "", raw=subject or "")


# The subjects of our replies about content ("Torokiki content: URL", "Saved: your
# response to URL"; templates/fetched*.txt, saved*.txt), as a reply's subject keeps them.
_OUR_SUBJECTS = re.compile(r"^\s*(?:torokiki content|saved: your response to)\s*:?\s*(\S+)\s*$", re.I)


def replying_to(line: SubjectLine, in_reply_to: str, references: str, gateway_address: str,
                site_url: str, recipients: tuple[str, ...] = (), subaddress: str = "") -> SubjectLine:
    """A reply to one of our mails about content is a create-response-to for that content.

    No command need be written: the content is read from the sub-address the
    mail was sent to (with TOROKIKI_REPLY_SUBADDRESS: `recipients`, the
    envelope recipient first, then Delivered-To and X-Original-To), else from
    our Message-ID in In-Reply-To (else the latest in References), else from
    one of our reply subjects after the Re:/AW:/SV: prefixes.  A subject that
    is a command stays one.
    """
    if line.command in COMMANDS:
        return line
    from torokiki_pipe.stages.s5_understand.urls import (BadUrl, content_of_message_ids, content_of_subaddress,
                                                         is_gateway_local_part, parse_content_url)

    domain = gateway_address.rpartition("@")[2]
    # The first of the gateway's own addresses decides: a plain gateway@ there means no sub-address.
    ours = [r for r in recipients if is_gateway_local_part(r, gateway_address, subaddress)]
    content = content_of_subaddress(ours[0], gateway_address, subaddress) if ours else None
    content = content or content_of_message_ids(in_reply_to, domain) or content_of_message_ids(references, domain)
    if content is None:
        found = _OUR_SUBJECTS.match(_PREFIXES.sub("", line.raw))
        try:
            content = parse_content_url(found[1], site_url) if found else None
        except BadUrl:
            content = None
    if content is None:
        return line
    return SubjectLine(command=CreateResponseToCommand.name, argument=content.canonical(site_url), raw=line.raw,
                       implied=True)


def needs_body(line: SubjectLine) -> bool:
    """Whether `understand` needs the parsed mail: not for a command answered from its subject alone.

    A subject that names no command (or an implied one) needs it: the body's first line may be one.
    """
    command = COMMANDS.get(line.command)
    return command is None or command.needs_body or line.implied


class HelpCommand:
    name = "help"
    usage = "help"
    needs_body = False     # answered from the subject alone: the body is never parsed

    @staticmethod
    def understand(line: SubjectLine, mail: Mail | None, site_url: str) -> Request:
        return HelpRequest()


class GetCommand:
    name = "get"
    usage = "get: 'URL'"
    needs_body = True

    @staticmethod
    def understand(line: SubjectLine, mail: Mail, site_url: str) -> Request:
        url, parsed, problems = _read_url_and_body(line, mail, site_url)
        for tag in parsed.tags:
            problems.append(Problem(f"'get' takes no body tags, but '{tag.name}' is given; "
                                    "remove it, or use create-response-to to answer content", tag.line))
        if mail.attachments:
            problems.append(Problem(f"'get' takes no attachments, but this mail has "
                                    f"{_count(len(mail.attachments), 'file')} ({_names(mail.attachments)}); "
                                    "send it again without them"))
        if problems or url is None:
            return Invalid(GetCommand.name, tuple(problems))
        return GetRequest(url)


class CreateResponseToCommand:
    name = "create-response-to"
    usage = "create-response-to: 'URL'"
    needs_body = True

    @staticmethod
    def understand(line: SubjectLine, mail: Mail, site_url: str) -> Request:
        url, parsed, problems = _read_url_and_body(line, mail, site_url)
        tags = {t.name: t for t in parsed.tags}
        text = tags["text"].value if "text" in tags else None
        attachments = mail.attachments
        # Without a text tag the writer's own words are the text (a reply, a mail of prose);
        # beside a file they are not saved, and the reply says so.
        words = parsed.words if text is None and not parsed.errors else ""
        if text is None and words and not attachments:
            text, words = words, ""
        if text is not None and not text.strip():
            problems.append(Problem("the text is empty; write something between the quotes",
                                    tags["text"].line))
        if len(attachments) > 1:
            problems.append(Problem(f"a response holds one file, but this mail has {len(attachments)} "
                                    f"({_names(attachments)}); send one per mail"))
        elif text is not None and attachments:
            problems.append(Problem(f"a response is either text or one file, not both: remove the "
                                    f"text tag or the attachment ({_names(attachments)})",
                                    tags["text"].line))
        elif text is None and not attachments and not parsed.errors:
            problems.append(Problem("there is nothing to save: reply with a photo, video or sound file, or "
                                    "with a few words of your own (the quoted mail is never saved)"))
        if mail.text_cut:
            from torokiki_pipe.stages.s5_understand.mime import MAX_TEXT_CHARS

            # The rest could hold tags or the end of the text: saving what was read could be wrong.
            problems.append(Problem(f"the text of the mail is longer than the {MAX_TEXT_CHARS // 1024} KB "
                                    "the gateway reads; send a shorter text (and leave out earlier mails "
                                    "quoted below it)"))
        if problems or url is None:
            return Invalid(CreateResponseToCommand.name, tuple(problems))
        return CreateResponseRequest(
            url=url,
            text=text,
            tags=split_tags(tags["tags"].value) if "tags" in tags else (),
            objective=_value(tags.get("objective")),
            location=_value(tags.get("location")),
            attachment=attachments[0] if attachments else None,
            unsaved_words=words if attachments else "",
        )


COMMANDS = {c.name: c for c in (HelpCommand, GetCommand, CreateResponseToCommand)}


def understand(line: SubjectLine, mail: Mail | None, site_url: str) -> Request:
    """The request the mail makes, or every problem it has; `mail` is None when `needs_body` says so."""
    command = COMMANDS.get(line.command)
    if command is not None and not command.needs_body and not line.implied:
        return command.understand(line, mail, site_url)  # type: ignore[arg-type]  # one that needs no mail takes None
    if mail is None:
        raise TypeError(f"{line.command or 'a mail without a command'} needs the parsed mail")
    if command is None or line.implied:
        # As in Mailman's email commands: where the subject names none, the first line of the
        # writer's words may (a reply to the help mail that says "get: URL").
        from torokiki_pipe.stages.s5_understand.body import first_line

        found = first_line(mail.text)
        written = read_subject(found[0]) if found is not None else None
        if found is not None and written is not None and written.command in COMMANDS:
            from dataclasses import replace

            return understand(written._replace(raw=line.raw), replace(mail, text=found[1]), site_url)
    if mail.too_complex:
        return Invalid(line.command, (Problem(
            f"the mail is too complex for the gateway to read ({excerpt(mail.too_complex)}); send it again "
            "as a simple mail: your text, and at most one attached file"),))
    if command is not None:
        return command.understand(line, mail, site_url)
    if line.command == "" and body_is_help(mail.text):
        return HelpRequest()
    if line.command == "":
        return Invalid("", (Problem("the subject is empty; the subject line names the command, "
                                    "for example: help"),))
    return Invalid("", (Problem(f"the subject {excerpt(line.raw.strip())!r} is not a command; the commands "
                                f"are {', '.join(c.usage for c in COMMANDS.values())}"),))


def body_is_help(text: str) -> bool:
    meaningful = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped in ("--", "-- ") or line.rstrip("\r") == "-- ":
            break
        if stripped and not stripped.startswith(">") and not stripped.lower().startswith("sent from my"):
            meaningful.append(stripped.lower().rstrip(".!"))
    return meaningful == ["help"]


def split_tags(value: str) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for word in re.split(r"[\s,]+", value):
        if word:
            seen.setdefault(word, None)
    return tuple(seen)


def _read_url_and_body(line: SubjectLine, mail: Mail, site_url: str):
    """The URL of the subject and the tags of the body, with every problem of either."""
    from torokiki_pipe.stages.s5_understand.body import parse_body
    from torokiki_pipe.stages.s5_understand.urls import BadUrl, parse_content_url, suggested_url

    problems: list[Problem] = []
    try:
        url = parse_content_url(line.argument, site_url)
    except BadUrl as error:
        url = None
        suggestion = suggested_url(line.argument, site_url)
        # BadUrl quotes what was written, which may be a megabyte of subject.
        problems.append(Problem(f"in the subject: {excerpt(str(error), 400)}",
                                fix=f"{line.command}: '{suggestion}'" if suggestion else ""))
    parsed = parse_body(mail.text, RESPONSE_TAGS)
    problems += [Problem(e.message, e.line) for e in parsed.errors]
    return url, parsed, problems


def _value(tag) -> str | None:
    return tag.value.strip() if tag is not None and tag.value.strip() else None


def _names(attachments) -> str:
    return ", ".join(excerpt(a.filename, 60) for a in attachments[:5]) + (", …" if len(attachments) > 5 else "")


EXCERPT_CHARS = 120


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """At most `limit` characters of something the sender wrote, cut with an ellipsis."""
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"


def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")
