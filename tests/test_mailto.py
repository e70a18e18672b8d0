"""One tap to the next step: the mailto: links of the replies, and `torokiki-pipe link`.

The links are RFC 6068 URIs that urllib.parse reads back exactly (the pure
tests), and each does what its label says: taken from the replies the
installed pipe sent to the SMTP sink, composed into the mail a phone would
send from it (To, Subject and Body from the URI; a file attached or words
written where the label asks for them), and fed through the pipe again.
"""

from __future__ import annotations

import email
import email.policy
import json
import re
from email.message import EmailMessage
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from helpers import GATEWAY, SITE_URL, reply_links, write_env_file

from torokiki_pipe.stages.s5_understand.urls import suggested_url
from torokiki_pipe.stages.s7_links import mailto

SEED = f"{SITE_URL}/image/1/response"
PHOTO = bytes(range(256)) * 40

# RFC 6068's grammar, as this gateway writes it: the address, then hfields of unreserved
# characters, percent-encodings and the few delimiters it leaves (s7_links.VALUE_SAFE).
_QCHAR = r"(?:[A-Za-z0-9._~:@-]|%[0-9A-F]{2})"
RFC6068 = re.compile(rf"^mailto:(?:[A-Za-z0-9._~!$'()*+,;:@-]|%[0-9A-F]{{2}})+"
                     rf"(?:\?{_QCHAR}+={_QCHAR}*(?:&{_QCHAR}+={_QCHAR}*)*)?$")


def parsed(uri: str) -> tuple[str, dict[str, str]]:
    """(address, {field: value}) as a mail app reads a mailto: URI: RFC 3986 percent-decoding, UTF-8."""
    parts = urlsplit(uri)
    assert parts.scheme == "mailto" and not parts.netloc and not parts.fragment, uri
    fields = parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query), errors="strict")
    assert all(len(values) == 1 for values in fields.values()), fields
    return unquote(parts.path, errors="strict"), {name: values[0] for name, values in fields.items()}


# --------------------------------------------------------------------------- the links, pure

ODD = [
    "create-response-to: 'http://torokiki.net/image/1/response'",
    'a "quoted" word, an apostrophe\'s, and ‘curly’ “ones”',
    "Tom & Jerry = 100% fun? #1 + 2 ; a/b\\c",
    "  leading and trailing spaces  ",
    "Māori: Te Whanganui-a-Tara, 東京, emoji 🚋, ß",
    "line one\nline two\r\nline three\rend",
    "%0D%0A literally, and %25, and +",
    "subject=x&body=y",
]


@pytest.mark.parametrize("text", ODD)
def test_a_subject_and_a_body_come_back_exactly(text):
    uri = mailto(GATEWAY, text, text)
    assert RFC6068.match(uri), uri
    address, fields = parsed(uri)
    crlf = text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\r\n")
    assert address == GATEWAY
    assert fields == {"subject": text, "body": crlf}


def test_line_breaks_in_the_body_are_crlf_and_nothing_is_left_bare():
    uri = mailto(GATEWAY, "s", "one\ntwo")
    assert uri == "mailto:gateway@torokiki.net?subject=s&body=one%0D%0Atwo"
    assert mailto(GATEWAY, "a+b c&d") == "mailto:gateway@torokiki.net?subject=a%2Bb%20c%26d"


def test_a_sub_address_and_an_empty_mail():
    assert mailto("gateway+image.1@torokiki.net") == "mailto:gateway+image.1@torokiki.net"
    assert parsed(mailto("gateway+image.1@torokiki.net", "help")) == ("gateway+image.1@torokiki.net",
                                                                      {"subject": "help"})


def test_the_help_header_and_the_help_link_agree():
    assert f"<{mailto(GATEWAY, 'help')}>" == f"<mailto:{GATEWAY}?subject=help>"


@pytest.mark.parametrize("written, meant", [
    ("'http://torokiki.net/image/1/response", SEED),                 # a missing quote
    ("http://torokiki.net/image/1/response.", SEED),                 # a full stop after it
    ("http://torokiki.net/image/1/ response", SEED),                 # a space in it
    ("https://torokiki.com/image/1/response", SEED),                 # another host
    ("torokiki.net/image/1/response/5", SEED + "/5"),                # no scheme
    ("http://torokiki.net/image/1/response?utm=x#top", SEED),        # extra parts
    ("http://torokiki.net/image/1", SEED),                           # a seed without /response
    ("<http://www.torokiki.net/image/1/respond/>", SEED),
])
def test_a_plain_slip_in_the_url_has_a_suggested_fix(written, meant):
    assert suggested_url(written, SITE_URL) == meant


@pytest.mark.parametrize("written", ["", "hello", "http://torokiki.net/image/1/comments",
                                     "http://torokiki.net/", "'" * 10_000])
def test_no_guess_where_the_path_names_no_content(written):
    assert suggested_url(written, SITE_URL) is None


# --------------------------------------------------------------------------- torokiki-pipe link

@pytest.fixture
def link_env(tmp_path):
    return write_env_file(tmp_path / "link.env", {"TOROKIKI_SITE_URL": SITE_URL, "TOROKIKI_API_KEY": "k",
                                                  "TOROKIKI_GATEWAY_ADDRESS": GATEWAY})


def test_link_prints_the_answer_link_of_the_content_replies(link_env, capsys):
    from torokiki_pipe.cli import main

    assert main(["link", "--config", str(link_env), "http://www.torokiki.net/image/1/respond/"]) == 0
    printed = capsys.readouterr().out
    assert printed.endswith("\n") and printed.count("\n") == 1
    address, fields = parsed(printed.strip())
    assert (address, fields) == (GATEWAY, {"subject": f"create-response-to: '{SEED}'"})


def test_link_html_is_one_escaped_anchor(link_env, capsys):
    from torokiki_pipe.cli import main

    assert main(["link", "--config", str(link_env), "--html", SEED + "/4"]) == 0
    snippet = capsys.readouterr().out.strip()
    found = re.fullmatch(r'<a href="([^"<>]+)">([^<>]+)</a>', snippet)
    assert found, snippet
    assert parsed(found[1].replace("&amp;", "&"))[1] == {"subject": f"create-response-to: '{SEED}/4'"}


@pytest.mark.parametrize("url", ["http://evil.example/image/1/response", "http://torokiki.net/about"])
def test_link_refuses_what_is_not_content_on_the_site(link_env, capsys, url):
    from torokiki_pipe.cli import main

    assert main(["link", "--config", str(link_env), url]) == 65
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("torokiki-pipe link: ")


def test_link_without_a_configuration_says_so(tmp_path, capsys, monkeypatch):
    from torokiki_pipe.cli import main

    monkeypatch.delenv("TOROKIKI_GATEWAY_ADDRESS", raising=False)
    assert main(["link", "--config", str(write_env_file(tmp_path / "empty.env", {})), SEED]) == 78
    assert "configuration" in capsys.readouterr().err


def test_the_installed_link_command_loads_nothing_of_the_pipe(pipe_program, link_env):
    import os
    import subprocess

    environ = {k: v for k, v in os.environ.items() if not k.startswith("TOROKIKI_")}
    done = subprocess.run([pipe_program, "link", "--config", str(link_env), SEED], capture_output=True,
                          timeout=60, env={**environ, "PYTHONPROFILEIMPORTTIME": "1"})
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert parsed(done.stdout.decode().strip())[0] == GATEWAY
    names = set(re.findall(r"\|\s+(\S+)$", done.stderr.decode(), re.M))
    assert not names & {"requests", "urllib3", "http.client", "ssl", "filelock", "mailparser"}, names


# --------------------------------------------------------------------------- each link does what it says

def compose(uri: str, *, words: str = "", photo: bytes | None = None, in_reply_to: str = "",
            msgid: str) -> bytes:
    """The mail a phone sends from a mailto: link: its To, Subject and Body, then what the person adds."""
    address, fields = parsed(uri)
    message = EmailMessage(policy=email.policy.default)
    message["From"] = "Kiri Tane <kiri@example.net>"
    message["To"] = address
    message["Subject"] = fields.get("subject", "")
    message["Message-ID"] = msgid
    message["Date"] = "Tue, 14 May 2024 08:12:24 +1200"
    if in_reply_to:
        message["In-Reply-To"] = in_reply_to
        message["References"] = in_reply_to
    body = fields.get("body", "").replace("\r\n", "\n")       # the mail app's own line breaks
    message.set_content((words + "\n\n" if words else "") + body + "\n")
    if photo is not None:
        message.add_attachment(photo, maintype="image", subtype="jpeg", filename="tram.jpg")
    return message.as_bytes()


def ask(run_pipe, smtp_sink, message: bytes, *args: str):
    """Send `message` through the pipe; the reply it got (parsed), and the links of that reply."""
    before = len(smtp_sink.messages)
    done = run_pipe(message, *args)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    reply = smtp_sink.wait_for(before + 1)[before].message()
    links = reply_links(reply)
    text = reply.get_body(("plain",)).get_content()
    for href in links.values():     # the text part shows the same links, tappable as plain URIs
        if href.startswith("mailto:") and "?" in href:
            assert href in text, href
    return reply, links


def plain(reply) -> str:
    return reply.get_body(("plain",)).get_content()


def stored(website) -> list[dict]:
    return website.stats()["items"]


def test_a_content_reply_answers_it_and_opens_it(run_pipe, smtp_sink, website):
    from helpers import mail

    reply, links = ask(run_pipe, smtp_sink, mail(f"get: '{SEED}'", msgid="<get1@example.net>"))
    assert reply["Subject"] == f"Torokiki content: {SEED}"
    assert "Reply to this mail with a photo, video, sound or a few words to answer it" in plain(reply)
    assert links["Open it on the website"] == SEED

    # "Answer it with a photo or words": the ready mail, with a photo attached ...
    answer = links["Answer it with a photo or words"]
    assert RFC6068.match(answer), answer
    saved, _ = ask(run_pipe, smtp_sink, compose(answer, photo=PHOTO, msgid="<a1@example.net>"))
    assert saved["Subject"] == f"Saved: your response to {SEED}"
    [item] = stored(website)
    assert item["content"]["InspiredBy"] == SEED
    assert item["content"]["Attachment"] == {"name": "tram.jpg", "bytes": len(PHOTO)}

    # ... or with words; and the "reply" the sentence speaks of: Re:, In-Reply-To, words only.
    ask(run_pipe, smtp_sink, compose(answer, words="The trams shook the mirrors.", msgid="<a2@example.net>"))
    ask(run_pipe, smtp_sink, compose(mailto(GATEWAY, "Re: " + reply["Subject"]), words="My grandad drove it.",
                                     in_reply_to=reply["Message-ID"], msgid="<a3@example.net>"))
    texts = [i["content"].get("Text") for i in stored(website)]
    assert texts[1:] == ["The trams shook the mirrors.", "My grandad drove it."]
    assert all(i["content"]["InspiredBy"] == SEED for i in stored(website))


def test_a_saved_reply_shows_the_response_and_adds_another(run_pipe, smtp_sink, website):
    from helpers import mail

    first = mail(f"create-response-to: '{SEED}'", "text: 'The first one.'\n", msgid="<s1@example.net>")
    reply, links = ask(run_pipe, smtp_sink, first)
    [item] = stored(website)
    assert links["See your response on the website"] == item["location"]

    another = links["Add another response"]
    assert parsed(another) == (GATEWAY, {"subject": f"create-response-to: '{SEED}'"})
    saved, again = ask(run_pipe, smtp_sink, compose(another, words="And a second one.", msgid="<s2@example.net>"))
    assert saved["Subject"] == f"Saved: your response to {SEED}"
    second = stored(website)[1]
    assert (second["content"]["InspiredBy"], second["content"]["Text"]) == (SEED, "And a second one.")
    assert again["See your response on the website"] == second["location"] != item["location"]


def request_of(done) -> dict:
    """The JSON the dry run would POST (it prints the request, cut at 4,000 characters, then the reply)."""
    out = done.stdout.decode()
    return json.loads(out.split("\n\n", 1)[1].split("\n# ", 1)[0])


def test_every_example_of_the_help_opens_the_ready_mail(run_pipe, smtp_sink, website):
    from helpers import mail

    reply, links = ask(run_pipe, smtp_sink, mail("help", msgid="<h1@example.net>"))
    assert {"Get help", "Get a piece of content", "Answer with a photo", "Answer with text"} <= set(links)

    helped, _ = ask(run_pipe, smtp_sink, compose(links["Get help"], msgid="<h2@example.net>"))
    assert helped["Subject"] == reply["Subject"] == "Torokiki by email: how to use it"
    assert links["Get help"] == f"mailto:{GATEWAY}?subject=help"

    # The examples name content 123, which the reference website does not hold: the get is
    # asked (and not found), the two responses are the requests a dry run shows.
    got, _ = ask(run_pipe, smtp_sink, compose(links["Get a piece of content"], msgid="<h3@example.net>"))
    assert got["Subject"] == f"Not found: {SITE_URL}/image/123/response"

    photo = run_pipe(compose(links["Answer with a photo"], photo=PHOTO[:300], msgid="<h4@example.net>"), "--dry-run")
    assert photo.returncode == 0, photo.stderr.decode()
    posted = request_of(photo)
    assert (posted["InspiredBy"], posted["Tags"], posted["Location"]) == (
        f"{SITE_URL}/image/123/response", ["lambtonquay", "transport"], "123 Lambton Quay")
    assert posted["Attachment"]["name"] == "tram.jpg" and "Text" not in posted

    text = run_pipe(compose(links["Answer with text"], msgid="<h5@example.net>"), "--dry-run")
    assert text.returncode == 0, text.stderr.decode()
    posted = request_of(text)
    assert (posted["InspiredBy"], posted["Text"], posted["Tags"]) == (
        f"{SITE_URL}/image/123/response/456", "These routes are now plied by a\npetrol based bus service.", ["bus"])


@pytest.mark.parametrize("subject", [
    f"get: '{SEED}",                                  # the closing quote forgotten
    "get: 'https://torokiki.com/image/1/response'",   # another host
    f"get: {SEED}.",                                  # the sentence's full stop
])
def test_try_again_sends_the_corrected_mail(run_pipe, smtp_sink, website, subject):
    from helpers import mail

    reply, links = ask(run_pipe, smtp_sink, mail(subject, msgid="<t1@example.net>"))
    assert reply["Subject"].startswith("Not understood: ")
    assert parsed(links["Try again"]) == (GATEWAY, {"subject": f"get: '{SEED}'"})
    fixed, _ = ask(run_pipe, smtp_sink, compose(links["Try again"], msgid="<t2@example.net>"))
    assert fixed["Subject"] == f"Torokiki content: {SEED}"

    helped, _ = ask(run_pipe, smtp_sink, compose(links["Get help"], msgid="<t3@example.net>"))
    assert helped["Subject"] == "Torokiki by email: how to use it"


def test_no_try_again_where_the_fix_is_not_known(run_pipe, smtp_sink, website):
    from helpers import mail

    reply, links = ask(run_pipe, smtp_sink, mail("please send me the tram picture", msgid="<n1@example.net>"))
    assert reply["Subject"].startswith("Not understood: ")
    assert "Try again" not in links and "Try again" not in plain(reply)
    assert links["Get help"] == f"mailto:{GATEWAY}?subject=help"


def test_not_found_offers_the_get_to_correct(run_pipe, smtp_sink, website):
    from helpers import mail

    missing = f"{SITE_URL}/image/99/response"
    reply, links = ask(run_pipe, smtp_sink, mail(f"get: '{missing}'", msgid="<f1@example.net>"))
    assert reply["Subject"] == f"Not found: {missing}"
    retry = links["Try again"]
    assert parsed(retry) == (GATEWAY, {"subject": f"get: '{missing}'"})
    # The person corrects the number in the prefilled subject, and sends.
    corrected = mailto(GATEWAY, parsed(retry)[1]["subject"].replace("/99/", "/1/"))
    fixed, _ = ask(run_pipe, smtp_sink, compose(corrected, msgid="<f2@example.net>"))
    assert fixed["Subject"] == f"Torokiki content: {SEED}"
    helped, _ = ask(run_pipe, smtp_sink, compose(links["Get help"], msgid="<f3@example.net>"))
    assert helped["Subject"] == "Torokiki by email: how to use it"


def test_every_reply_carries_the_help_link_in_its_header_too(run_pipe, smtp_sink, website):
    from helpers import mail

    reply, links = ask(run_pipe, smtp_sink, mail(f"get: '{SEED}'", msgid="<l1@example.net>"))
    assert reply["List-Help"] == f"<{links['Get help']}>"
    # The seed's picture comes beside the two versions of the text: mixed > alternative + file.
    alternative, picture = reply.iter_parts()
    assert (reply.get_content_type(), alternative.get_content_type()) == ("multipart/mixed", "multipart/alternative")
    assert [p.get_content_type() for p in alternative.iter_parts()] == ["text/plain", "text/html"]
    assert picture.get_content_type() == "image/png"
