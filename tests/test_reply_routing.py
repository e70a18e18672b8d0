"""Answer by replying: a reply to one of our mails about content answers that content.

Our replies about content carry the content's path in their Message-ID, so a
reply's In-Reply-To (or References) says what it answers with no state kept;
without those headers, our reply subject after Re:/AW:/SV: says it.  The
flows run through the installed pipe against the reference website.
"""

from __future__ import annotations


import pytest
from helpers import GATEWAY, SEED, SITE_URL, mail, photo_reply

from torokiki_pipe.stages.s5_understand.command import SubjectLine, read_subject, replying_to
from torokiki_pipe.stages.s5_understand.urls import ContentUrl, content_of_message_ids, message_id_about




# --------------------------------------------------------------------------- recognising a reply

def route(subject: str, in_reply_to: str = "", references: str = "") -> SubjectLine:
    return replying_to(read_subject(subject), in_reply_to, references, GATEWAY, SITE_URL)


def test_our_message_id_names_the_content_and_only_ours_count():
    mid = message_id_about(ContentUrl("image", 12, 7), "torokiki.net", "0123456789abcdef")
    assert mid == "<torokiki.image.12.7.0123456789abcdef@torokiki.net>"
    assert content_of_message_ids(f"<other@x> {mid}", "torokiki.net") == ContentUrl("image", 12, 7)
    assert content_of_message_ids(mid.replace("torokiki.net>", "evil.example>"), "torokiki.net") is None
    assert content_of_message_ids("<torokiki.image.12.0123@torokiki.net>", "torokiki.net") is None


@pytest.mark.parametrize("subject, in_reply_to, references, argument", [
    ("Re: Torokiki content: " + SEED, "<torokiki.image.1.0123456789abcdef@torokiki.net>", "", SEED),
    ("Re: anything at all", "<torokiki.image.1.5.0123456789abcdef@torokiki.net>", "", SEED + "/5"),
    ("", "", "<a@x> <torokiki.image.3.0123456789abcdef@torokiki.net> <b@y>", f"{SITE_URL}/image/3/response"),
    ("AW: Re: Torokiki content: " + SEED, "", "", SEED),                       # Outlook: no In-Reply-To
    ("SV: Saved: your response to " + SEED, "", "", SEED),
    ("Re: Saved: your response to <" + SEED + ">", "", "", SEED),
], ids=["in-reply-to", "a response", "references", "subject", "saved subject", "angle brackets"])
def test_a_reply_to_our_content_mail_is_a_create_response_to(subject, in_reply_to, references, argument):
    line = route(subject, in_reply_to, references)
    assert (line.command, line.argument, line.raw) == ("create-response-to", argument, subject)


@pytest.mark.parametrize("subject, in_reply_to", [
    ("Re: hello", "<torokiki.image.1.0123456789abcdef@evil.example>"),      # not our domain
    ("Re: Torokiki content: http://evil.example/image/1/response", ""),        # not our site
    ("Re: Not understood: your mail", "<19.2.3.torokiki@torokiki.net>"),       # our mail, not about content
    ("help", "<torokiki.image.1.0123456789abcdef@torokiki.net>"),               # a command stays one
    ("get: '" + SEED + "'", "<torokiki.image.2.0123456789abcdef@torokiki.net>"),
])
def test_other_mail_keeps_its_subject(subject, in_reply_to):
    assert route(subject, in_reply_to) == read_subject(subject)


# --------------------------------------------------------------------------- through the pipe

def test_get_then_reply_with_a_photo_then_reply_to_the_saved_mail(run_pipe, smtp_sink, website):
    assert run_pipe(mail(f"get: '{SEED}'", msgid="<get-1@example.net>")).returncode == 0
    [content_mail] = smtp_sink.wait_for(1)
    ours = content_mail.message()["Message-ID"]
    assert ours.startswith("<torokiki.image.1.") and ours.endswith("@torokiki.net>")

    reply = photo_reply(f"Re: Torokiki content: {SEED}", f"In-Reply-To: {ours}", f"References: {ours}",
                        msgid="<reply-1@example.net>")
    done = run_pipe(reply)
    assert done.returncode == 0, done.stderr
    [item] = website.stats()["items"]
    assert item["content"]["InspiredBy"] == SEED
    saved_mail = smtp_sink.wait_for(2)[1].message()
    assert saved_mail["Subject"] == f"Saved: your response to {SEED}"

    # A reply to "Saved: ..." adds another response to the same content.
    again = photo_reply(f"Re: {saved_mail['Subject']}", f"In-Reply-To: {saved_mail['Message-ID']}",
                        msgid="<reply-2@example.net>")
    assert run_pipe(again).returncode == 0
    items = website.stats()["items"]
    assert [i["content"]["InspiredBy"] for i in items] == [SEED, SEED]
    assert smtp_sink.wait_for(3)[2].message()["Subject"] == f"Saved: your response to {SEED}"


def test_a_reply_without_in_reply_to_is_routed_by_its_subject(run_pipe, smtp_sink, website):
    done = run_pipe(photo_reply(f"AW: Torokiki content: {SEED}", msgid="<outlook-1@example.net>"))
    assert done.returncode == 0, done.stderr
    [item] = website.stats()["items"]
    assert item["content"]["InspiredBy"] == SEED
    assert smtp_sink.wait_for(1)[0].message()["Subject"] == f"Saved: your response to {SEED}"


def test_a_reply_naming_another_domains_id_is_not_understood(run_pipe, smtp_sink, website):
    forged = photo_reply("Re: hello", "In-Reply-To: <torokiki.image.1.0123456789abcdef@evil.example>",
                         msgid="<forged-1@example.net>")
    assert run_pipe(forged).returncode == 0
    assert website.stats()["items"] == []
    assert smtp_sink.wait_for(1)[0].message()["Subject"].startswith("Not understood")


# --------------------------------------------------------------------------- the reply's own words

OURS = "<torokiki.image.1.0123456789abcdef@torokiki.net>"
QUOTE = ("\n\nOn Tue, 14 May 2024 at 08:12, Torokiki <gateway@torokiki.net> wrote:\n"
         "> Here is the Torokiki content you asked for:\n>   " + SEED + "\n> text: 'quoted, never saved'\n")


def saved_content(website) -> dict:
    [item] = website.stats()["items"]
    return item["content"]


def test_a_reply_of_words_saves_the_words_and_not_the_quote(run_pipe, smtp_sink, website):
    body = "Hi there,\n\nMy grandad drove this tram.\nHe loved it.\n\ntags: tram, family\n\nSent from my iPhone" + QUOTE
    assert run_pipe(mail(f"Re: Torokiki content: {SEED}", body, f"In-Reply-To: {OURS}")).returncode == 0
    content = saved_content(website)
    assert content["Text"] == "My grandad drove this tram.\nHe loved it."
    assert content["Tags"] == ["tram", "family"]
    assert content["InspiredBy"] == SEED


def test_a_create_response_to_of_prose_saves_its_words(run_pipe, smtp_sink, website):
    body = "Kia ora,\n\nThe trams shook the mirrors every time one went past.\n\n-- \nKiri\n"
    assert run_pipe(mail(f"create-response-to: '{SEED}'", body)).returncode == 0
    assert saved_content(website)["Text"] == "The trams shook the mirrors every time one went past."


def test_outlooks_quoted_header_block_is_not_the_writers(run_pipe, smtp_sink, website):
    body = ("Lovely photo!\n\nFrom: Torokiki <gateway@torokiki.net>\nSent: Tuesday, 14 May 2024 08:12\n"
            f"To: Kiri\nSubject: Torokiki content: {SEED}\n\ntags: 'quoted'\nHere is the content\n")
    assert run_pipe(mail(f"RE: Torokiki content: {SEED}", body)).returncode == 0
    content = saved_content(website)
    assert content["Text"] == "Lovely photo!" and "Tags" not in content


def test_a_reply_of_only_the_quote_saves_nothing_and_says_what_to_send(run_pipe, smtp_sink, website):
    assert run_pipe(mail(f"Re: Torokiki content: {SEED}", QUOTE.lstrip(), f"In-Reply-To: {OURS}")).returncode == 0
    assert website.stats()["items"] == []
    answer = smtp_sink.wait_for(1)[0].message().get_body(("plain",)).get_content()
    assert "nothing to save" in answer and "photo, video or sound file" in answer


def test_words_beside_a_photo_are_not_dropped_silently(run_pipe, smtp_sink, website):
    done = run_pipe(photo_reply(f"Re: Torokiki content: {SEED}", f"In-Reply-To: {OURS}",
                                msgid="<words-and-photo@example.net>", words="Taken at Courtenay Place."))
    assert done.returncode == 0, done.stderr
    content = saved_content(website)
    assert "Text" not in content and content["Attachment"]["name"] == "tram.jpg"
    answer = smtp_sink.wait_for(1)[0].message().get_body(("plain",)).get_content()
    assert "were not saved" in answer and "Taken at Courtenay Place." in answer


# --------------------------------------------------------------------------- commands in the body

@pytest.mark.parametrize("subject, body", [
    ("Re: Torokiki by email: how to use it", f"Hi,\n\nget: {SEED}\n\nSent from my iPhone\n\n> the help text we sent\n"),
    ("", f"get: '{SEED}'\n"),
    ("Re: Not understood: gte", f"get: “{SEED}”\n-- \nKiri\n"),
], ids=["reply to help", "no subject", "smart quotes"])
def test_the_first_line_of_the_body_may_be_the_command(run_pipe, smtp_sink, website, subject, body):
    assert run_pipe(mail(subject, body)).returncode == 0
    assert smtp_sink.wait_for(1)[0].message()["Subject"] == f"Torokiki content: {SEED}"
    assert website.stats()["items"] == []


def test_a_body_command_is_not_saved_as_words(run_pipe, smtp_sink, website):
    body = f"create-response-to: {SEED}\nThe trams shook the mirrors.\n"
    assert run_pipe(mail("Re: something else", body)).returncode == 0
    assert saved_content(website)["Text"] == "The trams shook the mirrors."


def test_help_in_a_reply_to_content_is_help(run_pipe, smtp_sink, website):
    assert run_pipe(mail(f"Re: Torokiki content: {SEED}", "help\n" + QUOTE, f"In-Reply-To: {OURS}")).returncode == 0
    assert website.stats()["items"] == []
    assert smtp_sink.wait_for(1)[0].message()["Subject"] == "Torokiki by email: how to use it"


def test_every_reply_offers_help_in_one_tap(run_pipe, smtp_sink, website):
    from urllib.parse import parse_qs, urlsplit

    assert run_pipe(mail(f"get: '{SEED}'", msgid="<list-help@example.net>")).returncode == 0
    link = smtp_sink.wait_for(1)[0].message()["List-Help"]
    parts = urlsplit(link.strip("<>"))
    assert (parts.scheme, parts.path, parse_qs(parts.query)) == ("mailto", GATEWAY, {"subject": ["help"]})
    # The mail a phone composes from it is answered with the help text.
    assert run_pipe(mail("help", msgid="<from-list-help@example.net>")).returncode == 0
    assert smtp_sink.wait_for(2)[1].message()["Subject"] == "Torokiki by email: how to use it"


@pytest.mark.parametrize("body, words", [
    ("Hi there,\nMy words.", "My words."),
    ("Kia ora Torokiki team!\n\nWords here.", "Words here."),
    ("Hey, this is my grandad's tram.", "Hey, this is my grandad's tram."),     # it goes on: it is what they say
    ("Hello, I'm Kiri.", "Hello, I'm Kiri."),
])
def test_only_a_greeting_alone_is_left_out(body, words):
    from torokiki_pipe.stages.s5_understand.body import own_words

    assert own_words(body, frozenset({"text", "tags"})) == words


@pytest.mark.parametrize("sender, greeting", [
    ("Kiri Tane <kiri@example.net>", "Kia ora Kiri Tane,"),
    ("kiri@example.net", "Kia ora,"),
], ids=["with a name", "a bare address"])
def test_a_greeting_never_repeats_a_bare_address(run_pipe, smtp_sink, website, sender, greeting):
    assert run_pipe(mail("help", sender=sender, msgid=f"<greet-{len(sender)}@example.net>")).returncode == 0
    text = smtp_sink.wait_for(1)[0].message().get_body(("plain",)).get_content()
    assert text.splitlines()[0] == greeting and "kiri@example.net," not in text
