"""Properties of the pure stages, checked with hypothesis.

- the subject grammar (`command.read_subject`): never raises; every command and
  argument written in any quote style, case, white space and Re:/Fwd: prefix
  comes back as written;
- content URLs (`urls.parse_content_url`): only BadUrl is ever raised; every
  spelling of a content address gives the same canonical form; no other host
  is accepted;
- the reply address (`guard.reply_sender` and `reply.build`): whatever the From
  header holds, the reply goes to one clean address and gains no header.
"""
from __future__ import annotations

import base64
import email
import email.policy
import string
from datetime import datetime, timezone

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from torokiki_pipe.stages.s5_understand.body import QUOTE_PAIRS
from torokiki_pipe.stages.s5_understand.command import read_subject
from torokiki_pipe.stages.s3_guard import Sender, reply_sender
from torokiki_pipe.stages.s7_reply import Reply, ReplyContext, build
from torokiki_pipe.stages.s5_understand.urls import BadUrl, ContentUrl, parse_content_url

SITE = "http://torokiki.net"
GATEWAY = "gateway@torokiki.net"

# Moderate example counts: the whole file runs in a few seconds.
FEW = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SOME = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Text as a mail client may hand it over: any character but lone surrogates.
any_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=80)


# --------------------------------------------------------------------------- subject grammar

@st.composite
def random_case(draw, word: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(word), max_size=len(word)))
    return "".join(c.upper() if flip else c for c, flip in zip(word, flips))


white = st.text(alphabet=" \t\u00a0\u2003\u3000", max_size=3)
prefixes = st.lists(st.sampled_from(["Re:", "RE: ", "re : ", "Fwd:", "FWD: ", "Fw: ", "AW: ", "Re[2]: ",
                                     "SV:", "TR: "]), max_size=3).map("".join)
urlish = st.one_of(
    st.builds(lambda scheme, host, path: f"{scheme}://{host}{path}",
              st.sampled_from(["http", "https", "HTTP", "ftp"]),
              st.sampled_from(["torokiki.net", "www.torokiki.net", "evil.example", "torokiki.net:8080"]),
              st.text(alphabet=string.ascii_letters + string.digits + "/?#%&=.-_~", max_size=40)),
    st.text(alphabet=string.printable + "éāʻ‘’“”\\", max_size=60),
    any_text,
)
# The quote styles of the brief: (opener, closer).
STYLES = [("'", "'"), ('"', '"'), ("\u2018", "\u2019"), ("\u201c", "\u201d")]


def escaped(argument: str, closer: str) -> str:
    return argument.replace("\\", "\\\\").replace(closer, "\\" + closer)


@FEW
@given(any_text)
@example("get: '")
@example("'")
@example("create-response-to: \u201chttp://torokiki.net/\\")
@example("Re: Re: Fwd:")
def test_read_subject_never_raises(subject):
    line = read_subject(subject)
    assert isinstance(line.command, str) and isinstance(line.argument, str)


@pytest.mark.integration  # slow
@SOME
@given(command=st.sampled_from(["get", "create-response-to"]).flatmap(random_case),
       argument=urlish, style=st.sampled_from(STYLES + [None]), escape=st.booleans(),
       prefix=prefixes, before=white, between=white, after_colon=white, after=white)
@example(command="get", argument="http://torokiki.net/image/1/response\\", style=("'", "'"), escape=True,
         prefix="", before="", between="", after_colon="", after="")
@example(command="GET", argument="it's", style=("\u2018", "\u2019"), escape=True,
         prefix="Re: ", before=" ", between=" ", after_colon="", after="\t")
def test_every_quote_style_gives_back_command_and_argument(command, argument, style, escape, prefix,
                                                           before, between, after_colon, after):
    if style is None:
        # Unquoted only when it is one word that does not itself start with a quote.
        argument = "".join(argument.split())
        if argument[:1] in QUOTE_PAIRS:
            argument = argument[1:]
        written = argument
    else:
        opener, closer = style
        if escape:
            written = opener + escaped(argument, closer) + closer
        else:
            argument = argument.replace(closer, "").replace("\\", "")
            written = opener + argument + closer
    subject = f"{before}{prefix}{command}{between}:{after_colon}{written}{after}"
    line = read_subject(subject)
    assert (line.command, line.argument) == (command.lower(), argument), subject


@FEW
@given(word=random_case("help"), before=white, after=white, prefix=prefixes)
def test_help_in_any_case_and_white_space(word, before, after, prefix):
    assert read_subject(f"{before}{prefix}{word}{after}").command == "help"


# --------------------------------------------------------------------------- content URLs

@SOME
@given(any_text)
@example("http://[::1")
@example("http://torokiki.net:99999/image/1/response")
@example("http://torokiki.net:\u0661/image/1/response")
@example("http://\uff54orokiki.net/image/1/response")
@example("https://torokiki.net/image/1/response/" + "9" * 40)
def test_parse_content_url_raises_nothing_but_bad_url(text):
    try:
        url = parse_content_url(text, SITE)
    except BadUrl as refused:
        assert str(refused)
    else:
        assert isinstance(url, ContentUrl) and url.kind == "image"


@SOME
@given(st.builds(lambda scheme, rest: f"{scheme}://{rest}",
                 st.sampled_from(["http", "https", "HTTP", "hTTps"]),
                 st.text(alphabet=string.printable + "\u212a\uff0e\u3002@[]:%", max_size=60)))
def test_parse_content_url_raises_nothing_but_bad_url_on_url_like_text(text):
    try:
        parse_content_url(text, SITE)
    except BadUrl:
        pass


ids = st.integers(min_value=0, max_value=10**18 - 1)


@pytest.mark.integration  # slow
@SOME
@given(seed=ids, response=st.none() | ids, scheme=st.sampled_from(["http", "https"]).flatmap(random_case),
       www=st.booleans(), host=random_case("torokiki.net"), verb=st.sampled_from(["response", "respond"]),
       slash=st.booleans(), wrapped=st.booleans(), padding=st.integers(0, 17), around=white)
def test_every_spelling_of_a_content_url_has_one_canonical_form(seed, response, scheme, www, host, verb,
                                                                slash, wrapped, padding, around):
    padded = str(seed).zfill(min(18, len(str(seed)) + padding))
    tail = f"/{response}" if response is not None else ""
    text = f"{scheme}://{'www.' if www else ''}{host}/image/{padded}/{verb}{tail}{'/' if slash else ''}"
    if wrapped:
        text = f"<{text}>"
    url = parse_content_url(around + text + around, SITE)
    assert url == ContentUrl("image", seed, response)
    canonical = url.canonical(SITE)
    assert canonical == f"{SITE}/image/{seed}/response{tail}"
    assert parse_content_url(canonical, SITE) == url          # the canonical form round-trips
    assert parse_content_url(canonical, SITE + "/").canonical(SITE + "/") == canonical


def _ours(host: str) -> bool:
    lowered = host.translate(str.maketrans(string.ascii_uppercase, string.ascii_lowercase))
    return lowered in ("torokiki.net", "www.torokiki.net")


hosts = st.one_of(
    st.from_regex(r"[A-Za-z0-9-]{1,12}(\.[A-Za-z0-9-]{1,12}){0,3}", fullmatch=True),
    st.builds(lambda a, b: a + b, st.sampled_from(["torokiki.net", "www.torokiki.net", "torokiki", ""]),
              st.text(alphabet=string.ascii_letters + string.digits + ".-_@%\\", min_size=1, max_size=12)),
    st.builds(lambda a, b: a + b,
              st.text(alphabet=string.ascii_letters + string.digits + ".-_@%", min_size=1, max_size=12),
              st.sampled_from(["torokiki.net", "@torokiki.net", ".torokiki.net"])),
    st.from_regex(r"[0-9]{1,3}(\.[0-9]{1,3}){3}", fullmatch=True),
    st.text(st.characters(blacklist_categories=("Cs", "Zs", "Cc"), blacklist_characters="/?#:[]"),
            min_size=1, max_size=20),
)


@pytest.mark.integration  # slow
@SOME
@given(host=hosts, path=st.sampled_from(["/image/1/response", "/image/1/response/2", "/image/9/respond"]))
@example(host="toro\u212aiki.net", path="/image/1/response")     # the Kelvin sign lower-cases to "k"
@example(host="torokiki.net.", path="/image/1/response")
@example(host="xn--torokiki-.net", path="/image/1/response")
@example(host="user@torokiki.net", path="/image/1/response")
@example(host="torokiki.net@evil.example", path="/image/1/response")
@example(host="torokiki.net%2eevil.example", path="/image/1/response")
def test_any_other_host_is_refused(host, path):
    if _ours(host):
        return
    with pytest.raises(BadUrl):
        parse_content_url(f"http://{host}{path}", SITE)


@FEW
@given(port=st.integers(0, 65535), scheme=st.sampled_from(["http", "https"]))
def test_any_port_is_refused(port, scheme):
    with pytest.raises(BadUrl):
        parse_content_url(f"{scheme}://torokiki.net:{port}/image/1/response", SITE)


# --------------------------------------------------------------------------- the reply address

HOSTILE_PIECES = ["<", ">", "@", '"', ",", ";", ":", "(", ")", "\\", "[", "]", " ", "\t", "\r\n", "\n", "\r",
                  "\x00", "\x01", "\x7f", "=?utf-8?q?", "=?utf-8?b?", "?=", "=0A", "=0D", "_", "Bcc:",
                  "evil@attacker.example", "kiri@example.net", "Kiri", "é", "josé", "\u202e", "\u2028",
                  "-", "."]
hostile_text = st.lists(st.one_of(st.sampled_from(HOSTILE_PIECES), any_text.map(lambda t: t[:4])),
                        max_size=25).map("".join)


def _q(text: str) -> str:
    """RFC 2047 Q-encoding of any text, newlines and all."""
    return "".join(c if c.isalnum() and c.isascii() else "".join(f"={b:02X}" for b in c.encode()) for c in text)


encoded_words = st.one_of(
    st.builds(lambda t: f"=?utf-8?q?{_q(t)}?=", hostile_text),
    st.builds(lambda t: f"=?utf-8?b?{base64.b64encode(t.encode()).decode()}?=", hostile_text),
    st.sampled_from(["=?utf-8?q?Kiri=0ABcc:_evil@attacker.example?=",
                     "=?utf-8?q?a=0D=0ATo:_evil@attacker.example?=",
                     "=?utf-8?q?evil@attacker.example,_?=",
                     "=?utf-8?b?PGV2aWxAYXR0YWNrZXIuZXhhbXBsZT4=?=",      # <evil@attacker.example>
                     "=?iso-8859-1?q?Jos=E9?="]),
)
display_names = st.one_of(any_text, hostile_text, encoded_words,
                          st.lists(st.one_of(encoded_words, hostile_text), max_size=3).map(" ".join))
ascii_addresses = st.builds(
    lambda local, domain: f"{local}@{domain}",
    st.from_regex(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,16}(\.[A-Za-z0-9_+-]{1,8}){0,2}", fullmatch=True),
    st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?(\.[a-z]{2,6}){1,2}", fullmatch=True),
)
from_headers = st.one_of(
    st.builds(lambda n, a: f"{n} <{a}>", display_names, ascii_addresses),
    st.builds(lambda n, a: '"' + n.replace("\\", "\\\\").replace('"', '\\"') + f'" <{a}>',
              display_names, ascii_addresses),
    st.builds(lambda n, a: f"{a} ({n})", display_names, ascii_addresses),
    ascii_addresses,
)

# What every reply carries at the top (help has an HTML alternative and threads
# under the original), and nothing else: the sender's words must add nothing.
REPLY_HEADERS = ["From", "To", "Subject", "Date", "Message-ID", "In-Reply-To", "References",
                 "Auto-Submitted", "Precedence", "X-Loop", "List-Help", "MIME-Version", "Content-Type"]
FORBIDDEN_IN_ADDRESS = set(" \t\r\n,<>") | {chr(c) for c in range(32)} | {"\x7f"}


def _reply_to(sender: Sender) -> email.message.EmailMessage:
    context = ReplyContext(to=sender, gateway_address=GATEWAY, site_url=SITE,
                           message_id="<m1@example.net>", references="", original_subject="help",
                           now=datetime(2024, 5, 14, 8, 12, tzinfo=timezone.utc))
    data = build(Reply("help.txt", html_template="help.html"), context)
    return email.message_from_bytes(data, policy=email.policy.default)


def check_sender(result) -> None:
    """The property: a Sender is one clean address, and the reply goes to it alone."""
    if not isinstance(result, Sender):
        assert isinstance(result, str) and result
        return
    address = result.address
    assert not FORBIDDEN_IN_ADDRESS & set(address), address
    assert address.isascii() and address.isprintable(), address
    assert not address.startswith("-") and address.count("@") == 1, address
    assert result.display_name.isprintable(), result.display_name
    reply = _reply_to(result)
    assert reply.keys() == REPLY_HEADERS
    [to] = reply.get_all("To")
    assert [a.addr_spec for a in to.addresses] == [address]
    assert not to.defects, to.defects
    assert reply.get_all("Cc") is None and reply.get_all("Bcc") is None


@pytest.mark.integration  # slow
@SOME
@given(from_headers)
@example("=?utf-8?q?Kiri=0ABcc:_evil@attacker.example?= <kiri@example.net>")
@example('"Kiri, Tane" <kiri@example.net>')
@example("=?utf-8?q?evil@attacker.example,_?= <kiri@example.net>")
@example("kiri@example.net (=?utf-8?q?=0D=0ABcc:_evil@attacker.example?=)")
@example("\u202eKiri <kiri@example.net>")
def test_hostile_display_names_never_reach_another_address(from_header):
    check_sender(reply_sender(from_header))


# Any text at all: the parser's own failures become a reason, never an exception,
# and whatever is accepted can be written by reply.build.
@pytest.mark.integration  # slow
@SOME
@given(st.one_of(any_text, hostile_text))
@example(".<\\")          # AttributeError: 'str' object has no attribute 'token_type'
@example(":;\x01")        # AttributeError: 'Group' object has no attribute 'local_part'
@example("\u00e1@[")      # AttributeError: 'InvalidHeaderDefect' object has no attribute 'all_defects'
@example("(" * 1000)     # RecursionError in _header_value_parser.get_comment
def test_reply_sender_never_raises_on_any_text(text):
    reply_sender(text)


@pytest.mark.integration  # slow
@SOME
@given(st.one_of(from_headers, hostile_text))
@example("a\x01b@example.net")            # accepted; Address() raises NonPrintableDefect
@example("Jos\u00e9 <jos\u00e9@example.es>")  # accepted; Address() raises NonASCIILocalPartDefect
def test_any_accepted_sender_gets_a_reply_to_that_address_alone(text):
    check_sender(reply_sender(text))
