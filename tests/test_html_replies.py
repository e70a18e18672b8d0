"""Every reply is text and HTML: the HTML escaped, self-contained, and carrying the text's links.

Pure: every kind of reply is made by the same functions the pipe uses
(s6_act's steps, s7_reply.build) from hostile values, and read back with the
email package and html.parser.
"""

from __future__ import annotations

import email
import email.policy
import re
from datetime import datetime, timezone
from html.parser import HTMLParser

import pytest
from helpers import GATEWAY, SITE_URL, reply_links

from torokiki_pipe.adapters.website import WebsiteAnswer
from torokiki_pipe.stages import s6_act
from torokiki_pipe.stages.s3_guard import Sender
from torokiki_pipe.stages.s5_understand.command import HelpRequest, Invalid, Problem
from torokiki_pipe.stages.s5_understand.urls import ContentUrl
from torokiki_pipe.stages.s7_reply import TEMPLATES, Reply, ReplyContext, build

SEED = ContentUrl("image", 1, None)
URL = SEED.canonical(SITE_URL)
SCRIPT = "<script>alert('x')</script>"
SUBJECT = f'get: {SCRIPT} "&" <b>'
NAME = 'Kiri "<b>Tane</b>" O\'Neil & co'
CONTEXT = ReplyContext(to=Sender(NAME, "kiri@example.net"), gateway_address=GATEWAY, site_url=SITE_URL,
                       message_id="<m1@example.net>", references="", original_subject=SUBJECT,
                       now=datetime(2026, 11, 25, tzinfo=timezone.utc))
FOUND = {"Text": f"A tram {SCRIPT}\n<img src=\"http://evil.example/x.png\">",
         "Attachment": {"name": "tram<1>.png", "data": "iVBORw0KGgo="}}


def steps() -> dict[str, s6_act.Step]:
    """One step of every reply kind, from hostile values where the sender's (or website's) words go."""
    saved = WebsiteAnswer("saved", "saved", location=URL + "/7")
    return {
        "help": s6_act.perform(HelpRequest(), website=None, sender=CONTEXT.to, site_url=SITE_URL,
                               subject="help", idempotency_key="", caller_id=""),
        "fetched": s6_act._after_get(WebsiteAnswer("found", content=FOUND), SEED, URL, SUBJECT),
        "fetched-too-large": s6_act._after_get(WebsiteAnswer("too-large", "too large"), SEED, URL, SUBJECT),
        "fetched-link": s6_act._after_get(WebsiteAnswer("withheld", "withheld"), SEED, URL, SUBJECT),
        "not-found": s6_act._after_get(WebsiteAnswer("not-found", "no"), SEED, URL, SUBJECT),
        "refused": s6_act._after_get(WebsiteAnswer("refused", f"bad {SCRIPT}"), SEED, URL, SUBJECT),
        "saved": s6_act._after_submit(saved, SEED, URL, SUBJECT, unsaved=f"my {SCRIPT} words"),
        "saved-no-address": s6_act._after_submit(WebsiteAnswer("saved", "saved"), SEED, URL, SUBJECT),
        "invalid": s6_act.invalid_step(Invalid("get", (Problem(f"the subject {SCRIPT} is not a command"),)),
                                       SITE_URL, SUBJECT),
        "invalid-fixable": s6_act.invalid_step(Invalid("get", (Problem(f"in the subject: {SCRIPT}",
                                                                       fix=f"get: '{URL}'"),)), SITE_URL, SUBJECT),
        "too-big": s6_act.too_big(SUBJECT, 25 * 1024 * 1024),
        "gave-up": s6_act.give_up(s6_act.Step(s6_act.Outcome.WEBSITE_UNAVAILABLE, f"down {SCRIPT}"), SUBJECT,
                                  86400 * 2, SITE_URL),
        "gave-up-unsure": s6_act.give_up(s6_act.Step(s6_act.Outcome.TIMED_OUT, "cut", maybe_saved=True, target=URL),
                                         SUBJECT, 86400 * 2, SITE_URL),
        "gave-up-ours": s6_act.give_up(s6_act.Step(s6_act.Outcome.KEY_REFUSED, "key"), SUBJECT, 86400 * 2, SITE_URL),
        "poisoned": s6_act.Step(s6_act.Outcome.POISONED, "", Reply("poisoned.txt", {"subject": SUBJECT})),
        "unverified": s6_act.held_unverified(URL, "dmarc=none by mx.example.org", SUBJECT),
    }


STEPS = steps()


def replied(kind: str, note: str | None = None) -> email.message.EmailMessage:
    step = STEPS[kind]
    assert step.reply is not None
    return email.message_from_bytes(build(step.reply, CONTEXT, last_before_limit=note), policy=email.policy.default)


def is_note(path) -> bool:
    """A part of a reply, not one: its "subject" says where it goes, in brackets."""
    return path.read_text(encoding="utf-8").startswith("Subject: (")


def test_every_reply_template_is_built_here():
    templates = {step.reply.template for step in STEPS.values() if step.reply}
    replies = {p.name for p in TEMPLATES.glob("*.txt") if p.with_suffix(".html").is_file() and not is_note(p)}
    assert templates == replies


def test_the_templates_without_html_are_text_notes_and_mailto_mails():
    alone = {p.name for p in TEMPLATES.glob("*.txt") if not p.with_suffix(".html").is_file()}
    assert {n for n in alone if not n.startswith("mailto-")} == {"short-help.txt", "unsaved-words.txt"}
    html_alone = {p.name for p in TEMPLATES.glob("*.html") if not p.with_suffix(".txt").is_file()}
    assert html_alone == {"layout.html", "answer-button.html"}


class Tags(HTMLParser):
    """The start and end tags, their attributes, and whether they nest properly."""
    VOID = {"br", "hr", "meta", "img", "link", "input"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.open: list[str] = []
        self.seen: list[tuple[str, dict]] = []
        self.errors: list[str] = []
        self.text = ""

    def handle_starttag(self, tag, attrs):
        self.seen.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag):
        if not self.open or self.open.pop() != tag:
            self.errors.append(f"</{tag}> closes nothing open")

    def handle_data(self, data):
        self.text += data


def html_of(message) -> str:
    return message.get_body(("html",)).get_content()


@pytest.mark.parametrize("kind", sorted(STEPS))
def test_every_reply_is_text_and_html(kind):
    message = replied(kind)
    alternative = message
    if message.get_content_type() == "multipart/mixed":        # a file beside the text
        alternative, attached = message.iter_parts()
        assert attached.get_filename() and kind == "fetched"
    assert alternative.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in alternative.iter_parts()] == ["text/plain", "text/html"]


@pytest.mark.parametrize("kind", sorted(STEPS))
def test_the_html_escapes_what_others_wrote(kind):
    page = html_of(replied(kind))
    parser = Tags()
    parser.feed(page)
    parser.close()
    assert parser.errors == [] and parser.open == []
    tags = {tag for tag, _ in parser.seen}
    assert not tags & {"script", "img", "b", "iframe", "object", "embed", "style", "form"}, tags
    # The greeting keeps the name, as text: quotes, ampersand and angle brackets and all.
    assert 'Kia ora Kiri "<b>Tane</b>" O\'Neil & co,' in parser.text
    assert "<script" not in page
    if kind in ("invalid", "invalid-fixable", "too-big", "poisoned", "refused", "gave-up", "saved"):
        assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page     # shown, as text


@pytest.mark.parametrize("kind", sorted(STEPS))
def test_the_html_holds_nothing_remote_and_needs_no_css(kind):
    page = html_of(replied(kind))
    assert not re.search(r"<link\b|@import|url\s*\(|<style\b", page, re.I)
    parser = Tags()
    parser.feed(page)
    attributes = {name for _, attrs in parser.seen for name in attrs}
    assert not attributes & {"src", "srcset", "background", "poster", "data", "class"}, attributes
    hrefs = [attrs["href"] for tag, attrs in parser.seen if tag == "a"]
    assert hrefs and all(h.startswith(("mailto:", SITE_URL + "/", SITE_URL)) for h in hrefs), hrefs
    # Without its styles the page is still its text: headings, paragraphs, links.
    unstyled = re.sub(r'\sstyle="[^"]*"', "", page)
    assert "Kia ora" in unstyled and "Torokiki mail gateway" in unstyled


@pytest.mark.parametrize("kind", sorted(STEPS))
def test_the_text_shows_the_same_mailto_links_as_the_html(kind):
    message = replied(kind)
    text = message.get_body(("plain",)).get_content()
    in_text = set(re.findall(r"mailto:\S+", text))
    in_html = {h for h in reply_links(message).values() if h.startswith("mailto:") and "?" in h}
    assert in_text == in_html and in_html


@pytest.mark.parametrize("kind, labels", [
    ("fetched", {"Answer it with a photo or words", "Open it on the website"}),
    ("fetched-too-large", {"Answer it with a photo or words", "Open it on the website"}),
    ("fetched-link", {"Answer it with a photo or words", "Open it on the website"}),
    ("saved", {"See your response on the website", "Add another response"}),
    ("saved-no-address", {"Add another response"}),
    ("help", {"Get help", "Get a piece of content", "Answer with a photo", "Answer with text"}),
    ("invalid", {"Get help"}),
    ("invalid-fixable", {"Try again", "Get help"}),
    ("not-found", {"Try again", "Get help"}),
    ("refused", {"Get help"}),
])
def test_each_reply_offers_its_next_steps(kind, labels):
    message = replied(kind)
    assert labels <= set(reply_links(message))
    if kind.startswith("fetched"):
        assert "Reply to this mail with a photo, video, sound or a few words to answer it" in html_of(message)
    if kind == "invalid":
        assert "Try again" not in reply_links(message)


def test_the_limit_note_is_in_both_parts_above_the_signature():
    message = replied("saved", note="an hour")
    text = message.get_body(("plain",)).get_content()
    assert text.index("PLEASE NOTE") < text.index("\n-- \n")
    page = html_of(message)
    assert "They start again after an hour." in " ".join(page.split())
    assert page.index("Please note") < page.index("<footer>")


def test_a_file_name_and_the_contents_text_are_escaped_in_the_fetched_reply():
    page = html_of(replied("fetched"))
    assert "A tram &lt;script&gt;" in page and "&lt;img src=&quot;http://evil.example/x.png&quot;&gt;" in page
