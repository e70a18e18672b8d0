"""Replies to our content mail as real clients write them: only the writer's words are saved.

Each flow runs through the installed pipe against the reference website: a `get`, then the
reply a client composes to the mail that arrived at the SMTP sink (its Message-ID, its
subject, its text quoted the way that client quotes), then what the website stored: the
text exactly the person's words, their tags, the file's bytes, and none of the quoted lines.
The client shapes follow mails those clients send (headers, MIME structure, the markup around
the quote). The corpus's real replies (../shared/corpus, as test_corpus.py finds it) are read
by own_words: the quote goes, the reply's first words stay.
"""

from __future__ import annotations

import base64
import email
import email.policy
import html
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import requests
from helpers import GATEWAY, SITE_URL, mail

from torokiki_pipe.stages.s5_understand.body import own_words
from torokiki_pipe.stages.s5_understand.htmltext import html_to_text
from torokiki_pipe.stages.s5_understand.mime import parse_mail

SEED = f"{SITE_URL}/image/1/response"
SUBJECT = f"Torokiki content: {SEED}"
KNOWN = frozenset({"text", "tags", "objective", "location"})
PHOTO = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 64 + b"\xff\xd9"   # a JPEG's bytes, as far as we care
WORDS = "My grandad drove this tram.\nHe said it shook the shop windows."
SENDER = "Kiri Tane <kiri@example.net>"


# --------------------------------------------------------------------------- our mail, their reply

class Ours:
    """The content mail the gateway sent: what a client replies to and quotes."""

    def __init__(self, message):
        self.message_id = message["Message-ID"]
        self.subject = message["Subject"]
        self.text = message.get_body(("plain",)).get_content()

    def quoted(self, prefix: str = "> ") -> str:
        return "".join((prefix + line).rstrip() + "\n" for line in self.text.splitlines())

    def as_html(self) -> str:
        return "<br>\n".join(html.escape(line) for line in self.text.splitlines())

    def lines(self) -> list[str]:
        """The lines of our text a quote would carry (those long enough to mean something)."""
        return [line.strip() for line in self.text.splitlines() if len(line.strip()) > 3]


def ask_for_content(run_pipe, smtp_sink) -> Ours:
    assert run_pipe(mail(f"get: '{SEED}'", sender=SENDER, msgid="<get-first@example.net>")).returncode == 0
    [content_mail] = smtp_sink.wait_for(1)
    ours = Ours(content_mail.message())
    assert ours.subject == SUBJECT and ours.message_id.startswith("<torokiki.image.1.")
    return ours


def reply_mail(headers: list[str], body: str) -> bytes:
    """A reply from Kiri to the gateway: `headers` are the client's own (MIME ones included)."""
    head = [f"From: {SENDER}", f"To: Torokiki <{GATEWAY}>", "Date: Tue, 14 May 2024 09:30:00 +1200", *headers]
    return ("\n".join(head) + "\n\n" + body).encode()


def threading(ours: Ours) -> list[str]:
    return [f"In-Reply-To: {ours.message_id}", f"References: {ours.message_id}"]


def b64(data: bytes) -> str:
    return base64.encodebytes(data).decode()


def stored(website) -> dict:
    """The one response the website stored, as its API gives it (the file's data included)."""
    [item] = website.stats()["items"]
    assert item["content"]["InspiredBy"] == SEED
    path = item["location"].split(SITE_URL, 1)[1]
    answer = requests.get(website.url + path, timeout=5)
    answer.raise_for_status()
    return answer.json()


def posted_words(content: dict) -> str:
    return "\n".join([content.get("Text", ""), *content.get("Tags", []), content.get("Objective", ""),
                      content.get("Location", "")])


def assert_nothing_quoted(text: str, ours: Ours) -> None:
    for line in ours.lines():
        assert line not in text, f"quoted line posted: {line!r}"


def answer_text(smtp_sink) -> str:
    saved = smtp_sink.wait_for(2)[1].message()
    assert saved["Subject"] == f"Saved: your response to {SEED}"
    return saved.get_body(("plain",)).get_content()


# --------------------------------------------------------------------------- Apple Mail and iPhone

def iphone_reply(ours: Ours, words: str) -> bytes:
    """iOS Mail with a photo: alternative of text and related(HTML, the photo by Content-ID)."""
    html_words = "".join(f'<div dir="ltr">{html.escape(line)}</div>' for line in words.splitlines())
    body = f"""--Apple-Mail-A1
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 7bit

{words}

Sent from my iPhone

On 14 May 2024, at 08:12, Torokiki mail gateway <{GATEWAY}> wrote:

{ours.quoted()}
--Apple-Mail-A1
Content-Type: multipart/related; type="text/html"; boundary=Apple-Mail-R2

--Apple-Mail-R2
Content-Type: text/html; charset=utf-8
Content-Transfer-Encoding: 7bit

<html><head><meta http-equiv="content-type" content="text/html; charset=utf-8"></head><body dir="auto">\
{html_words}<div dir="ltr"><img src="cid:8F1C2E4A-photo@apple" alt="IMG_0421.jpeg"></div>\
<div dir="ltr"><br></div><div dir="ltr">Sent from my iPhone</div><div dir="ltr"><br>\
<blockquote type="cite">On 14 May 2024, at 08:12, Torokiki mail gateway &lt;{GATEWAY}&gt; wrote:<br><br></blockquote></div>\
<blockquote type="cite"><div dir="ltr">{ours.as_html()}</div></blockquote></body></html>
--Apple-Mail-R2
Content-Type: image/jpeg; name=IMG_0421.jpeg
Content-Disposition: inline; filename=IMG_0421.jpeg
Content-Transfer-Encoding: base64
Content-Id: <8F1C2E4A-photo@apple>

{b64(PHOTO)}--Apple-Mail-R2--

--Apple-Mail-A1--
"""
    return reply_mail([f"Subject: Re: {ours.subject}", "Message-Id: <8F1C2E4A-iphone@example.net>",
                       *threading(ours), "X-Mailer: iPhone Mail (21E236)", "Mime-Version: 1.0 (1.0)",
                       "Content-Type: multipart/alternative; boundary=Apple-Mail-A1"], body)


def apple_mail_html_reply(ours: Ours, words: str) -> bytes:
    """Apple Mail on a Mac with a photo in the text: HTML only, related(HTML, the photo)."""
    html_words = "".join(f"<div>{html.escape(line)}</div>" for line in words.splitlines())
    body = f"""--Apple-Mail=_R3
Content-Transfer-Encoding: quoted-printable
Content-Type: text/html; charset=us-ascii

<html><head><meta http-equiv=3D"Content-Type" content=3D"text/html; charset=3Dus-ascii"></head>\
<body style=3D"word-wrap: break-word; -webkit-nbsp-mode: space;">{html_words}<div><img apple-inline=3D"yes" \
id=3D"A1" src=3D"cid:B2C3-photo@apple"></div><div><br><blockquote type=3D"cite"><div>On 14 May 2024, at \
08:12, Torokiki mail gateway &lt;{GATEWAY}&gt; wrote:</div><br class=3D"Apple-interchange-newline"><div>\
{ours.as_html()}</div></blockquote></div><br></body></html>
--Apple-Mail=_R3
Content-Transfer-Encoding: base64
Content-Disposition: inline; filename=tram.jpeg
Content-Type: image/jpeg; x-unix-mode=0644; name="tram.jpeg"
Content-Id: <B2C3-photo@apple>

{b64(PHOTO)}
--Apple-Mail=_R3--
"""
    return reply_mail([f"Subject: Re: {ours.subject}", "Message-Id: <B2C3-mac@example.net>", *threading(ours),
                       "X-Mailer: Apple Mail (2.3774.500.171.1.1)", "Mime-Version: 1.0 (Mac OS X Mail 16.0)",
                       'Content-Type: multipart/related; type="text/html"; boundary="Apple-Mail=_R3"'], body)


@pytest.mark.integration  # the installed pipe, the website, the SMTP sink
@pytest.mark.parametrize("compose", [iphone_reply, apple_mail_html_reply], ids=["iphone", "apple-mail-html-only"])
def test_apple_reply_with_an_inline_photo_saves_the_photo_and_the_tags(run_pipe, smtp_sink, website, compose):
    ours = ask_for_content(run_pipe, smtp_sink)
    done = run_pipe(compose(ours, f"{WORDS}\ntags: grandad, family"))
    assert done.returncode == 0, done.stderr
    content = stored(website)
    assert base64.b64decode(content["Attachment"]["data"]) == PHOTO
    assert content["Tags"] == ["grandad", "family"] and "Text" not in content
    assert_nothing_quoted(posted_words(content), ours)
    # The words beside the photo are named as not saved; nothing of the quote with them.
    answer = answer_text(smtp_sink)
    note = answer[answer.index("were not saved"):]
    assert WORDS.splitlines()[0] in note and "Sent from my iPhone" not in note
    assert "Here is the Torokiki content" not in note and "wrote:" not in note


# --------------------------------------------------------------------------- Gmail, web and Android

def gmail_web_reply(ours: Ours, words: str) -> bytes:
    html_words = "<br>".join(html.escape(line) for line in words.splitlines())
    body = f"""--000000000000a1b2c3
Content-Type: text/plain; charset="UTF-8"

{words}

On Tue, 14 May 2024 at 08:12, Torokiki mail gateway <{GATEWAY}>
wrote:

{ours.quoted()}
--000000000000a1b2c3
Content-Type: text/html; charset="UTF-8"
Content-Transfer-Encoding: quoted-printable

<div dir=3D"ltr">{html_words}</div><br><div class=3D"gmail_quote gmail_quote_container"><div dir=3D"ltr" \
class=3D"gmail_attr">On Tue, 14 May 2024 at 08:12, Torokiki mail gateway &lt;<a href=3D"mailto:{GATEWAY}">\
{GATEWAY}</a>&gt; wrote:<br></div><blockquote class=3D"gmail_quote" style=3D"margin:0px 0px 0px 0.8ex;\
border-left:1px solid rgb(204,204,204);padding-left:1ex">{ours.as_html()}</blockquote></div>

--000000000000a1b2c3--
"""
    return reply_mail([f"Subject: Re: {ours.subject}", "Message-ID: <CAGmail-web-1@mail.gmail.com>",
                       *threading(ours), "MIME-Version: 1.0",
                       'Content-Type: multipart/alternative; boundary="000000000000a1b2c3"'], body)


def gmail_android_reply(ours: Ours, words: str) -> bytes:
    """The Gmail app with a photo: mixed(alternative(text, HTML), the photo)."""
    html_words = "".join(f'<div dir="auto">{html.escape(line)}</div>' for line in words.splitlines())
    body = f"""--000000000000d4e5f6
Content-Type: multipart/alternative; boundary="000000000000d4e5f5"

--000000000000d4e5f5
Content-Type: text/plain; charset="UTF-8"

{words}

On Tue, 14 May 2024, 08:12 Torokiki mail gateway, <{GATEWAY}> wrote:

{ours.quoted()}
--000000000000d4e5f5
Content-Type: text/html; charset="UTF-8"

{html_words}<br><div class="gmail_quote"><div dir="ltr" class="gmail_attr">On Tue, 14 May 2024, 08:12 \
Torokiki mail gateway, &lt;{GATEWAY}&gt; wrote:<br></div><blockquote class="gmail_quote" \
style="margin:0 0 0 .8ex;border-left:1px #ccc solid;padding-left:1ex">{ours.as_html()}</blockquote></div>

--000000000000d4e5f5--
--000000000000d4e5f6
Content-Type: image/jpeg; name="IMG_20240514_093000.jpg"
Content-Disposition: attachment; filename="IMG_20240514_093000.jpg"
Content-Transfer-Encoding: base64
Content-ID: <f_lw6x1abc0>
X-Attachment-Id: f_lw6x1abc0

{b64(PHOTO)}--000000000000d4e5f6--
"""
    return reply_mail([f"Subject: Re: {ours.subject}", "Message-ID: <CAGmail-android-1@mail.gmail.com>",
                       *threading(ours), "MIME-Version: 1.0",
                       'Content-Type: multipart/mixed; boundary="000000000000d4e5f6"'], body)


@pytest.mark.integration  # the installed pipe, the website, the SMTP sink
def test_gmail_web_reply_of_words_saves_exactly_the_words(run_pipe, smtp_sink, website):
    ours = ask_for_content(run_pipe, smtp_sink)
    done = run_pipe(gmail_web_reply(ours, f"Hi,\n\n{WORDS}\n\ntags: grandad, family\n\nKiri"))
    assert done.returncode == 0, done.stderr
    content = stored(website)
    assert content["Text"] == WORDS + "\n\nKiri"
    assert content["Tags"] == ["grandad", "family"]
    assert_nothing_quoted(posted_words(content), ours)


@pytest.mark.integration  # the installed pipe, the website, the SMTP sink
def test_gmail_android_reply_with_only_a_photo_saves_the_photo(run_pipe, smtp_sink, website):
    ours = ask_for_content(run_pipe, smtp_sink)
    done = run_pipe(gmail_android_reply(ours, "tags: grandad"))
    assert done.returncode == 0, done.stderr
    content = stored(website)
    assert base64.b64decode(content["Attachment"]["data"]) == PHOTO
    assert content["Attachment"]["name"] == "IMG_20240514_093000.jpg"
    assert content["Tags"] == ["grandad"] and "Text" not in content
    assert "were not saved" not in answer_text(smtp_sink)     # no words beside the photo: no note


# --------------------------------------------------------------------------- Outlook

def outlook_web_reply(ours: Ours, words: str, signature: bool = True) -> bytes:
    """Outlook on the web / new Outlook: HTML only, the quote under divRplyFwdMsg, no In-Reply-To."""
    html_words = "".join(f'<div style="font-family: Aptos; font-size: 12pt;">{html.escape(line)}</div>'
                         for line in words.splitlines())
    body = f"""<html><head><meta http-equiv="Content-Type" content="text/html; charset=iso-8859-1">
<style type="text/css" style="display:none;"> P {{margin-top:0;margin-bottom:0;}} </style></head>
<body dir="ltr">{html_words}{'<div id="Signature"><div>Kiri Tane</div><div>Wellington</div></div>' if signature else ''}
<div id="appendonsend"></div><hr style="display:inline-block;width:98%" tabindex="-1">
<div id="divRplyFwdMsg" dir="ltr"><font face="Calibri, sans-serif" style="font-size:11pt" color="#000000">
<b>From:</b> Torokiki mail gateway &lt;{GATEWAY}&gt;<br><b>Sent:</b> Tuesday, May 14, 2024 8:12 AM<br>
<b>To:</b> Kiri Tane &lt;kiri@example.net&gt;<br><b>Subject:</b> {html.escape(ours.subject)}</font>
<div>&nbsp;</div></div><div class="BodyFragment"><font size="2"><span style="font-size:11pt;">
<div class="PlainText">{ours.as_html()}</div></span></font></div></body></html>
"""
    return reply_mail([f"Subject: RE: {ours.subject}", "Message-ID: <DB9PR01MB0001@DB9PR01MB.eurprd01.prod.outlook.com>",
                       "Thread-Topic: Torokiki content", "Thread-Index: AQHapfXYZ", "MIME-Version: 1.0",
                       'Content-Type: text/html; charset="iso-8859-1"', "Content-Transfer-Encoding: 8bit",
                       "X-MS-Has-Attach:", "Content-Language: en-NZ"], body)


def outlook_desktop_reply(ours: Ours, words: str) -> bytes:
    """Classic Outlook for Windows in German: Word HTML, the header block in a bordered div, no id."""
    html_words = "".join(f'<p class="MsoNormal"><span lang="DE">{html.escape(line)}<o:p></o:p></span></p>'
                         for line in words.splitlines())
    body = f"""<html xmlns:o="urn:schemas-microsoft-com:office:office"><head>
<meta name="Generator" content="Microsoft Word 15 (filtered medium)"><!--[if gte mso 9]><xml>
<o:shapedefaults v:ext="edit" spidmax="1026" /></xml><![endif]--><style><!-- p.MsoNormal {{margin:0cm;}} --></style>
</head><body lang="DE" link="#0563C1" style="word-wrap:break-word"><div class="WordSection1">{html_words}
<p class="MsoNormal"><o:p>&nbsp;</o:p></p><div><div style="border:none;border-top:solid #E1E1E1 1.0pt;padding:3.0pt 0cm 0cm 0cm">
<p class="MsoNormal"><b>Von:</b> Torokiki mail gateway &lt;{GATEWAY}&gt; <br><b>Gesendet:</b> Dienstag, 14. Mai 2024 08:12<br>
<b>An:</b> Kiri Tane &lt;kiri@example.net&gt;<br><b>Betreff:</b> {html.escape(ours.subject)}<o:p></o:p></p></div></div>
<p class="MsoNormal"><o:p>&nbsp;</o:p></p><p class="MsoNormal">{ours.as_html()}</p></div></body></html>
"""
    return reply_mail([f"Subject: AW: {ours.subject}", "Message-ID: <000001da01$0a0b0c0d$@example.net>",
                       "X-Mailer: Microsoft Outlook 16.0", "Thread-Index: AQHapfXYZ", "MIME-Version: 1.0",
                       'Content-Type: text/html; charset="utf-8"', "Content-Transfer-Encoding: 8bit"], body)


@pytest.mark.integration  # the installed pipe, the website, the SMTP sink
@pytest.mark.parametrize("compose, words", [
    (outlook_web_reply, WORDS),
    (lambda ours, words: outlook_web_reply(ours, words, signature=False), WORDS),
    (outlook_desktop_reply, "Mein Opa fuhr diese Straßenbahn.\nEr sagte, sie ließ die Schaufenster zittern."),
], ids=["outlook-web", "outlook-web-unsigned", "outlook-desktop-german"])
def test_outlook_html_only_reply_without_in_reply_to_saves_the_words(run_pipe, smtp_sink, website, compose, words):
    ours = ask_for_content(run_pipe, smtp_sink)
    done = run_pipe(compose(ours, words + "\ntags: grandad"))
    assert done.returncode == 0, done.stderr
    content = stored(website)
    assert content["Text"] == words and content["Tags"] == ["grandad"]
    assert_nothing_quoted(posted_words(content), ours)


@pytest.mark.integration  # the installed pipe, the website, the SMTP sink
def test_outlook_reply_of_only_the_quote_saves_nothing_and_asks_for_something(run_pipe, smtp_sink, website):
    ours = ask_for_content(run_pipe, smtp_sink)
    assert run_pipe(outlook_web_reply(ours, "")).returncode == 0
    assert website.stats()["items"] == []
    answer = smtp_sink.wait_for(2)[1].message().get_body(("plain",)).get_content()
    assert "photo, video or sound file" in answer


# --------------------------------------------------------------------------- Thunderbird

def thunderbird_reply(ours: Ours, words: str, signature: bool = True) -> bytes:
    """Thunderbird composing HTML: moz-cite-prefix, blockquote type=cite, a moz-signature."""
    html_words = "<br>\n".join(html.escape(line) for line in words.splitlines())
    body = f"""<!DOCTYPE html>
<html>
  <head>
    <meta http-equiv="Content-Type" content="text/html; charset=UTF-8">
  </head>
  <body>
    <p>{html_words}</p>
    {'<div class="moz-signature">-- <br>Kiri Tane<br>tags: signature</div>' if signature else ''}
    <div class="moz-cite-prefix">On 14/05/2024 08:12, Torokiki mail gateway wrote:<br>
    </div>
    <blockquote type="cite" cite="mid:{html.escape(ours.message_id.strip('<>'))}">
      <pre class="moz-quote-pre" wrap="">{html.escape(ours.text)}</pre>
    </blockquote>
  </body>
</html>
"""
    return reply_mail([f"Subject: Re: {ours.subject}", "Message-ID: <5e6f7a8b-tb@example.net>",
                       *threading(ours), "MIME-Version: 1.0",
                       "User-Agent: Mozilla Thunderbird", "Content-Language: en-NZ",
                       "Content-Type: text/html; charset=UTF-8", "Content-Transfer-Encoding: 8bit"], body)


def thunderbird_plain_reply(ours: Ours, words: str) -> bytes:
    body = (f"{words}\n\n-- \nKiri Tane\ntags: signature\n\n"
            f"On 14/05/2024 08:12, Torokiki mail gateway wrote:\n{ours.quoted()}")
    return reply_mail([f"Subject: Re: {ours.subject}", "Message-ID: <9a8b7c6d-tb@example.net>", *threading(ours),
                       "MIME-Version: 1.0", "User-Agent: Mozilla Thunderbird",
                       "Content-Type: text/plain; charset=UTF-8; format=flowed", "Content-Transfer-Encoding: 8bit"],
                      body)


@pytest.mark.integration  # the installed pipe, the website, the SMTP sink
@pytest.mark.parametrize("compose", [
    thunderbird_reply, lambda ours, words: thunderbird_reply(ours, words, signature=False), thunderbird_plain_reply,
], ids=["html", "html-unsigned", "plain"])
def test_thunderbird_reply_saves_the_words_above_the_signature(run_pipe, smtp_sink, website, compose):
    ours = ask_for_content(run_pipe, smtp_sink)
    done = run_pipe(compose(ours, f"{WORDS}\ntags: grandad"))
    assert done.returncode == 0, done.stderr
    content = stored(website)
    assert content["Text"] == WORDS and content["Tags"] == ["grandad"]
    assert_nothing_quoted(posted_words(content), ours)


# --------------------------------------------------------------------------- an edited subject

@pytest.mark.integration  # the installed pipe, the website, the SMTP sink
def test_a_reply_whose_subject_was_edited_is_routed_by_in_reply_to(run_pipe, smtp_sink, website):
    ours = ask_for_content(run_pipe, smtp_sink)
    body = (f"{WORDS}\n\nOn Tue, 14 May 2024 at 08:12, Torokiki mail gateway <{GATEWAY}> wrote:\n"
            f"{ours.quoted()}")
    reply = reply_mail(["Subject: Grandad's tram, 1952", "Message-ID: <edited-subject@example.net>",
                        *threading(ours), "Content-Type: text/plain; charset=utf-8"], body)
    done = run_pipe(reply)
    assert done.returncode == 0, done.stderr
    content = stored(website)
    assert content["Text"] == WORDS
    assert_nothing_quoted(posted_words(content), ours)


# --------------------------------------------------------------------------- the corpus's real replies

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"

# The corpus's replies: how their writer's own words start (None: the reply is a lone "Hello",
# which is a greeting, left out, so the gateway asks for words), and a line of the quote.
# Each is read as it is, and with a line of words above it: then its first line must stay.
CORPUS_REPLIES = {
    "mailgun-talon__android.eml": (None, "Hi"),                  # "… пользователь … <\n…> написал:"
    "mailgun-talon__apple_mail.eml": (None, "Hi"),
    "mailgun-talon__apple_mail_2.eml": (None, "Hi there!"),
    "mailgun-talon__comcast.eml": (None, "Hi"),                  # "----- Original Message -----"
    "mailgun-talon__gmail.eml": (None, "Hi"),
    "mailgun-talon__iphone.eml": (None, "Hi"),
    "mailgun-talon__outlook.eml": (None, "The manager's comment:"),   # From:/Sent: block, no marks
    "mailgun-talon__sparrow.eml": (None, "Hi"),                  # a "--" signature, then the quote
    "mailgun-talon__yahoo.eml": (None, "Hi"),
    "mikel-mail__raw_email_reply.eml": ("Message body", ""),
    "mikel-mail__sig_only_email.eml": ("This is random text, not what has been signed below", ""),
    "stalwart-mail-parser__thirdparty-015.eml": ("alles klar, deine Reply Mail", "Jonas Sterr"),
}
LEAD = "I remember this."


def corpus_text(name: str) -> str:
    return parse_mail((CORPUS / name).read_bytes()).text


def corpus_html(name: str) -> list[str]:
    message = email.message_from_bytes((CORPUS / name).read_bytes(), policy=email.policy.default)
    return [part.get_content() for part in message.walk() if part.get_content_type() == "text/html"]


needs_corpus = pytest.mark.skipif(not CORPUS.is_dir(), reason=f"{CORPUS} is absent (as in a user's clone)")


@needs_corpus
def test_the_corpus_replies_are_all_here():
    manifest = (CORPUS / "MANIFEST.tsv").read_text(encoding="utf-8")
    assert all(f"{name}\t" in manifest for name in CORPUS_REPLIES)
    talon = {path.name for path in CORPUS.glob("mailgun-talon__*.eml")}
    assert talon <= set(CORPUS_REPLIES)


def assert_no_quote(words: str, quoted: str) -> None:
    lines = [line.strip() for line in words.splitlines()]
    assert not quoted or quoted not in lines, words
    assert not any(line.startswith(">") or line.endswith(("wrote:", "написал:")) for line in lines), words


@needs_corpus
@pytest.mark.parametrize("name", sorted(CORPUS_REPLIES))
def test_a_corpus_reply_keeps_its_first_words_and_loses_its_quote(name):
    start, quoted = CORPUS_REPLIES[name]
    text = corpus_text(name)
    assert quoted in text
    words = own_words(text, KNOWN)
    assert words == "" if start is None else words.startswith(start), words
    first = text.strip().splitlines()[0].strip()
    led = own_words(f"{LEAD}\n{text}", KNOWN)
    assert led.startswith(f"{LEAD}\n{first}"), led
    assert_no_quote(words, quoted)
    assert_no_quote(led, quoted)


@needs_corpus
@pytest.mark.parametrize("name", sorted(n for n in CORPUS_REPLIES if n.startswith("mailgun-talon__")))
def test_a_corpus_replys_html_alone_gives_the_same_words(name):
    # As if the client had sent only its HTML part.
    for part in corpus_html(name):
        words = own_words(f"{LEAD}\n{html_to_text(part)}", KNOWN)
        assert words.startswith(f"{LEAD}\n"), words
        assert_no_quote(words, CORPUS_REPLIES[name][1])


@needs_corpus
def test_outlooks_html_reply_from_the_corpus_keeps_its_words():
    [part] = corpus_html("mailgun-talon__outlook.eml")
    assert own_words(html_to_text(part), KNOWN) == "Allo! Follow up MIME!"


# --------------------------------------------------------------------------- any words, any client's quote

OUR_TEXT = ("Kia ora Kiri,\n\nHere is the Torokiki content you asked for:\n  " + SEED + "\n\n"
            "Lambton Quay, Wellington, about 1910: electric trams and horse-drawn\ncarts pass the shops.\n"
            "To answer it, reply to this mail with a photo, video or sound file, or send a mail\n"
            "with the subject:\n  create-response-to: '" + SEED + "'\n\n-- \nTorokiki mail gateway <" + GATEWAY + ">\n")
QUOTE_SHAPES = [
    "On Tue, 14 May 2024 at 08:12, Torokiki mail gateway <{g}> wrote:\n\n{q}",
    "On Tue, 14 May 2024 at 08:12, Torokiki mail gateway <\n{g}> wrote:\n{q}",
    "Am Di., 14. Mai 2024 um 08:12 Uhr schrieb Torokiki <{g}>:\n{q}",
    "Le mar. 14 mai 2024 à 08:12, Torokiki <{g}> a écrit :\n{t}",            # an unmarked quote
    "-----Original Message-----\nFrom: Torokiki <{g}>\nSent: Tuesday\n{t}",
    "________________________________\nFrom: Torokiki <{g}>\nSent: Tuesday\n{t}",
    "From: Torokiki <{g}>\nDate: Tuesday, 14 May 2024 at 08:12\nTo: Kiri\n{t}",
    "Sent from my iPhone\n\n> On 14 May 2024, at 08:12, Torokiki <{g}> wrote:\n{q}",
]


@settings(max_examples=200, deadline=None)
@given(words=st.lists(st.text(alphabet="abcdefghij klmnop,.!'", min_size=1, max_size=40), min_size=1, max_size=4),
       shape=st.sampled_from(QUOTE_SHAPES))
def test_whatever_the_writer_says_no_quoted_line_is_their_words(words, shape):
    quoted = "".join(("> " + line).rstrip() + "\n" for line in OUR_TEXT.splitlines())
    body = "\n".join(words) + "\n\n" + shape.format(g=GATEWAY, q=quoted, t=OUR_TEXT)
    kept = own_words(body, KNOWN)
    for line in OUR_TEXT.splitlines():
        if len(line.strip()) > 3:
            assert line.strip() not in kept, (line, kept)
    assert GATEWAY not in kept and "wrote" not in kept


HTML_QUOTE_SHAPES = [
    '<div class="gmail_quote"><div class="gmail_attr">On Tue, Torokiki wrote:</div>'
    '<blockquote class="gmail_quote">{h}</blockquote></div>',
    '<blockquote type="cite">On 14 May 2024, at 08:12, Torokiki &lt;{g}&gt; wrote:<br><br>{h}</blockquote>',
    '<div id="appendonsend"></div><hr><div id="divRplyFwdMsg"><b>From:</b> Torokiki</div><div>{h}</div>',
    '<div class="moz-cite-prefix">On 14/05/2024 08:12, Torokiki wrote:</div><blockquote type="cite">'
    '<pre class="moz-quote-pre">{t}</pre></blockquote>',
    '<div class="yahoo_quoted"><div>{h}</div></div>',
    '<div id="OLK_SRC_BODY_SECTION">{h}</div>',
]


@settings(max_examples=200, deadline=None)
@given(words=st.lists(st.text(alphabet="abcdefghij klmnop,.!'<>&", min_size=1, max_size=40), min_size=1, max_size=4),
       shape=st.sampled_from(HTML_QUOTE_SHAPES), wrap=st.sampled_from(["<div>{}</div>", "<p>{}</p>", "{}<br>"]))
def test_whatever_the_writer_says_no_line_of_an_html_quote_is_their_words(words, shape, wrap):
    mine = "".join(wrap.format(html.escape(w)) for w in words)
    quote = shape.format(g=GATEWAY, h="<br>".join(html.escape(line) for line in OUR_TEXT.splitlines()),
                         t=html.escape(OUR_TEXT))
    kept = own_words(html_to_text(f"<html><body>{mine}{quote}</body></html>"), KNOWN)
    for line in OUR_TEXT.splitlines():
        if len(line.strip()) > 3:
            assert line.strip() not in kept, (line, kept)
    assert GATEWAY not in kept and "wrote" not in kept
