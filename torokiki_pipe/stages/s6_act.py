"""Stage 5: act on the website, and say what the reply should be.

`content_object` is pure: the contract's JSON for a new response.  `perform`
calls the website adapter it is handed and turns its answer, together with
the request, into a `Step`: the outcome so far, the reply to send (if any),
and what to keep in ``logs/``.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import NamedTuple, TYPE_CHECKING

from torokiki_pipe.version import __version__
from torokiki_pipe.stages.s5_understand.command import (CreateResponseRequest, GetRequest, HelpRequest, Invalid,
                                                        excerpt)
from torokiki_pipe.stages.s3_guard import Sender
from torokiki_pipe.outcome import Outcome
from torokiki_pipe.stages.s8_record import ERRONEOUS, FAILED_HTTPS, HELD
from torokiki_pipe.stages.s7_reply import Reply, attachment_from_content, duration_words, problems_text, render

if TYPE_CHECKING:
    from torokiki_pipe.stages.s5_understand.command import Request, SubjectLine
    from torokiki_pipe.adapters.website import WebsiteAnswer
    from torokiki_pipe.stages.s5_understand.urls import ContentUrl

SERVICE = f"Torokiki Mailserver {__version__}"

# The mails one tap opens (templates/mailto-*.txt): every example of the help text, the answer
# to content, another response to the same content, and a get to correct.
HELP_LINKS = MappingProxyType({"get_link": "mailto-get-example.txt", "photo_link": "mailto-photo-example.txt",
                               "text_link": "mailto-text-example.txt"})
ANSWER_LINKS = MappingProxyType({"answer_link": "mailto-answer.txt"})
ANOTHER_LINKS = MappingProxyType({"another_link": "mailto-another.txt"})


class Step(NamedTuple):
    """What acting on a request came to: the outcome, the reply and what to keep."""
    outcome: Outcome
    detail: str
    reply: Reply | None = None
    keep: str | None = None          # a records.* stash kind for the raw mail
    exchange: str = ""               # HTTP exchange to keep beside it
    target: str = ""                 # the content answered or fetched (canonical URL), whatever came of it
    saved: str = ""                  # the new response's URL, only when the website gave one
    maybe_saved: bool = False        # the website may have stored the POST, though no clean "saved" came back


def content_object(request: CreateResponseRequest, sender: Sender, site_url: str,
                   caller_id: str) -> dict:
    content: dict = {"Submitter": str(sender), "InspiredBy": request.url.canonical(site_url)}
    if request.text is not None:
        content["Text"] = request.text
    if request.tags:
        content["Tags"] = list(request.tags)
    if request.objective:
        content["Objective"] = request.objective
    if request.location:
        content["Location"] = request.location
    if request.attachment is not None:
        # The file (bytes, or the mail's own base64 text); the website adapter
        # streams it as the contract's base64.
        content["Attachment"] = {"name": request.attachment.filename, "data": request.attachment.body}
    content["APICaller"] = {"service": SERVICE, "id": caller_id}
    return content


def perform(request: Request, *, website, sender: Sender, site_url: str, subject: str,
            idempotency_key: str, caller_id: str, unproven: str = "") -> Step:
    """`unproven`: why the sender did not prove the From (TOROKIKI_REQUIRE_AUTH=create); a response is then held."""
    if isinstance(request, CreateResponseRequest) and unproven:
        return held_unverified(request.url.canonical(site_url), unproven, subject)
    if isinstance(request, HelpRequest):
        return Step(Outcome.ANSWERED, "help sent", Reply("help.txt", html_template="help.html", links=HELP_LINKS))
    if isinstance(request, Invalid):
        return invalid_step(request, site_url, subject)
    if isinstance(request, GetRequest):
        url = request.url.canonical(site_url)
        return _after_get(website.fetch(request.url), request.url, url, subject)
    if isinstance(request, CreateResponseRequest):
        content = content_object(request, sender, site_url, caller_id)
        answer = website.submit(request.url, content, idempotency_key)
        return _after_submit(answer, request.url, request.url.canonical(site_url), subject,
                             unsaved=request.unsaved_words)
    raise TypeError(f"no action for {request!r}")


def invalid_step(request: Invalid, site_url: str, subject: str) -> Step:
    short_help = render("short-help.txt", {"site": site_url})[1]
    values = {"subject": subject or "(no subject)", "problems": problems_text(request.problems),
              "short_help": short_help}
    first = request.problems[0].message if request.problems else "not understood"
    # "Try again" with the corrected mail, where a problem knows the fix; else only "Get help".
    fix = next((p.fix for p in request.problems if p.fix), "")
    if not fix:
        return Step(Outcome.INVALID, first, Reply("invalid.txt", {**values, "retry_note": ""}), keep=ERRONEOUS)
    return Step(Outcome.INVALID, first, Reply("invalid.txt", {**values, "retry_subject": fix},
                                              links={"retry_link": "mailto-retry.txt"},
                                              notes={"retry_note": "retry-note"}), keep=ERRONEOUS)


def _after_get(answer: WebsiteAnswer, content: ContentUrl, url: str, subject: str) -> Step:
    """The website's answer to a get of `content` (at `url`); a reply to our reply answers `content`."""
    if answer.status == "found":
        found = answer.content or {}
        attachment = attachment_from_content(found)
        text = found.get("Text")
        note = f"The file {attachment[0]} is attached.\n" if attachment else ""
        values = {"url": url, "text": f"\n{text}\n" if isinstance(text, str) and text else "",
                  "attachment_note": note}
        return Step(Outcome.ANSWERED, "content sent", Reply("fetched.txt", values, attachment=attachment, about=content,
                                                          links=ANSWER_LINKS),
                    target=url)
    if answer.status == "too-large":
        # Not a failure: the content exists, it only cannot travel by mail; its link can.
        from torokiki_pipe.adapters.website import MAX_CONTENT_BYTES

        limit = f"{MAX_CONTENT_BYTES / (1024 * 1024):g} MB"
        return Step(Outcome.ANSWERED, answer.detail, Reply("fetched-too-large.txt", {"url": url, "limit": limit}, about=content,
                                                         links=ANSWER_LINKS),
                    target=url)
    if answer.status == "withheld":
        # The website served the gateway's key inside the file: the sender gets the link,
        # the administrator the evidence.
        return Step(Outcome.ANSWERED, answer.detail, Reply("fetched-link.txt", {"url": url}, about=content, links=ANSWER_LINKS),
                    keep=FAILED_HTTPS, exchange=answer.exchange, target=url)
    if answer.status == "not-found":
        return Step(Outcome.REFUSED, "no such content", Reply("not-found.txt", {"url": url}, links={"retry_link": "mailto-get.txt"}),
                    keep=FAILED_HTTPS, exchange=answer.exchange, target=url)
    return _refused_or_unavailable(answer, url, subject)


def _after_submit(answer: WebsiteAnswer, answered: ContentUrl, inspired_by: str, subject: str,
                  unsaved: str = "") -> Step:
    """The website's answer to a response to `answered` (at `inspired_by`); a reply to our reply adds another."""
    if answer.status == "saved" and answer.location:
        values = {"url": answer.location, "inspired_by": inspired_by, "unsaved_note": _unsaved_note(unsaved)}
        return Step(Outcome.SAVED, answer.detail, Reply("saved.txt", values, about=answered, links=ANOTHER_LINKS),
                    target=inspired_by, saved=answer.location)
    if answer.status == "saved":
        # 201 Created without a Location on the site: saved, by the contract; only the
        # address is unknown, and a foreign one must not be passed on as ours.  The
        # exchange is kept: a website answering like this needs looking at.
        return Step(Outcome.SAVED, answer.detail, Reply("saved-no-address.txt", {"inspired_by": inspired_by, "unsaved_note": _unsaved_note(unsaved)},
                          about=answered, links=ANOTHER_LINKS),
                    keep=FAILED_HTTPS, exchange=answer.exchange, target=inspired_by, maybe_saved=True)
    return _refused_or_unavailable(answer, inspired_by, subject)


def _unsaved_note(words: str) -> str:
    """The saved reply's note when words came beside the file: they were not saved, and how to save them."""
    return render("unsaved-words.txt", {"words": excerpt(words)})[1] if words else ""


def _refused_or_unavailable(answer: WebsiteAnswer, url: str, subject: str) -> Step:
    if answer.status == "key-refused":
        # The administrator's mistake, not the sender's: no reply, and the MTA keeps the mail.
        return Step(Outcome.KEY_REFUSED, answer.detail, keep=FAILED_HTTPS, exchange=answer.exchange, target=url)
    if answer.temporary:
        return Step(Outcome.WEBSITE_UNAVAILABLE, f"website unavailable: {answer.detail}",
                    keep=FAILED_HTTPS, exchange=answer.exchange, target=url, maybe_saved=answer.maybe_saved)
    values = {"subject": subject or "(no subject)", "detail": answer.detail, "url": url}
    return Step(Outcome.REFUSED, answer.detail, Reply("refused.txt", values), keep=FAILED_HTTPS,
                exchange=answer.exchange, target=url)


def held_unverified(url: str, why: str, subject: str) -> Step:
    """A response from a sender who did not prove the From: kept for a person, not published, answered so."""
    return Step(Outcome.UNVERIFIED, f"held in {HELD}/, not posted: sender not verified ({why})",
                Reply("unverified.txt", {"subject": subject or "(no subject)"}), keep=HELD, target=url)


def too_big(subject: str, limit: int) -> Step:
    """A mail over TOROKIKI_MAX_MESSAGE_BYTES: not parsed, not posted, answered briefly."""
    words = f"{limit / (1024 * 1024):g} MB"
    return Step(Outcome.TOO_BIG, f"larger than {limit} bytes",
                Reply("too-big.txt", {"subject": subject or "(no subject)", "limit": words}), keep=ERRONEOUS)


def out_of_time(detail: str, line: SubjectLine, site_url: str) -> Step:
    """Out of time while acting: a failure like any other, so the give-up clock runs."""
    from torokiki_pipe.stages.s5_understand.urls import BadUrl, parse_content_url

    try:
        url = parse_content_url(line.argument, site_url).canonical(site_url)
    except BadUrl:
        url = ""
    # A POST cut short may have reached the website.
    return Step(Outcome.TIMED_OUT, detail, target=url, maybe_saved=line.command == "create-response-to")


def give_up(step: Step, subject: str, waited: float, site_url: str) -> Step:
    """Temporary failures for longer than TOROKIKI_GIVE_UP_AFTER: answer that it was not saved."""
    # Say what is known: a POST whose answer was unclear may have been stored; a refused
    # API key is ours to fix, and its wording (fix TOROKIKI_API_KEY) is not for the sender.
    if step.outcome is Outcome.KEY_REFUSED:
        template = "gave-up-ours.txt"
    else:
        template = "gave-up-unsure.txt" if step.maybe_saved else "gave-up.txt"
    values = {"subject": subject or "(no subject)", "detail": step.detail, "waited": duration_words(waited),
              "url": step.target or site_url}
    return Step(Outcome.GAVE_UP, f"gave up after {duration_words(waited)}: {step.detail}",
                Reply(template, values), keep=FAILED_HTTPS, exchange=step.exchange, target=step.target,
                maybe_saved=step.maybe_saved)
