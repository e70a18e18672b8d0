"""HTML-only mail to text (torokiki_pipe.stages.s5_understand.htmltext)."""

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from torokiki_pipe.stages.s5_understand.body import Tag, parse_body
from torokiki_pipe.stages.s5_understand.htmltext import html_to_text

KNOWN = frozenset({"text", "tags", "objective", "location"})


def test_plain_text_passes_through():
    assert html_to_text("hello world") == "hello world"
    assert html_to_text("") == ""


def test_entities_are_decoded():
    html = "&amp; &lt;b&gt; &quot;q&quot; &#39;s&#39; &#x201C;smart&#x201D; caf&eacute; &copy"
    assert html_to_text(html) == "& <b> \"q\" 's' “smart” café ©"


def test_nbsp_becomes_a_plain_space():
    out = html_to_text("<div>text:&nbsp;'a&nbsp;&nbsp;b'&nbsp;</div>")
    assert out == "text: 'a  b'"
    assert "\xa0" not in out


def test_br_is_a_newline():
    assert html_to_text("a<br>b<br/>c<BR >d</br>e") == "a\nb\nc\nd\ne"


def test_blank_lines_from_br_are_kept_once():
    assert html_to_text("a<br><br><br><br>b") == "a\n\nb"


def test_block_elements_make_lines():
    html = (
        "<h1>Title</h1><div>one <span>two</span></div><div>three</div>"
        "<ul><li>four<li>five</ul><table><tr><td>six</td><td>seven</td></tr>"
        "<tr><th>eight</th></tr></table><hr>nine"
    )
    assert html_to_text(html) == "Title\n\none two\nthree\nfour\nfive\nsix seven\neight\nnine"


def test_paragraphs_are_separated_by_a_blank_line():
    assert html_to_text("<p>one</p><p>two</p>") == "one\n\ntwo"


def test_outlook_paragraphs_have_no_blank_lines():
    # Word's MsoNormal paragraphs have no margins; a value typed over two
    # lines must not gain an empty line.
    html = (
        "<p class=MsoNormal>text: 'These routes<o:p></o:p></p>"
        "<p class=MsoNormal>are plied'<o:p></o:p></p>"
    )
    assert html_to_text(html) == "text: 'These routes\nare plied'"


def test_gmail_empty_div_lines():
    html = "<div dir=\"ltr\"><div>text: 'a</div><div><br></div><div>b'</div></div>"
    assert html_to_text(html) == "text: 'a\n\nb'"


def test_white_space_collapses_like_a_browser():
    html = "<div>\n   text:   'a\n   b'  </div>\n\n  <div>\t tags: <b> 'c' </b></div>"
    assert html_to_text(html) == "text: 'a b'\ntags: 'c'"


def test_pre_keeps_white_space():
    html = "<p>x</p><pre>\n  text: 'a\n\tb'\n</pre>"
    assert html_to_text(html) == "x\n\n  text: 'a\n\tb'"


def test_script_style_head_and_title_are_dropped():
    html = (
        "<html><head><title>Subject</title><meta charset=utf-8>"
        "<style>p { color: red } /* </p> */</style></head>"
        "<body><script>if (a<b) { x = '</div>' }</script>text: 'shown'</body></html>"
    )
    assert html_to_text(html) == "text: 'shown'"


def test_unclosed_head_ends_where_the_body_starts():
    assert html_to_text("<head><style>x</style><div>shown</div>") == "shown"
    assert html_to_text("<head>shown too") == "shown too"


def test_comments_and_conditionals_are_dropped():
    html = (
        "a<!-- hidden <b>x</b> -->b<!--[if gte mso 9]><xml><o:x>no</o:x></xml><![endif]-->"
        "<![if !supportLists]>1.<![endif]> c<!DOCTYPE html><?xml version='1.0'?>"
    )
    assert html_to_text(html) == "ab1. c"


def test_blockquote_lines_are_prefixed():
    html = (
        "<div>text: 'new'</div>"
        "<blockquote type=\"cite\"><div>old line<br>second</div>"
        "<blockquote>deeper</blockquote></blockquote><div>after</div>"
    )
    assert html_to_text(html) == "text: 'new'\n> old line\n> second\n> > deeper\nafter"


def test_standalone_gmail_blockquote_is_prefixed():
    html = "<div>hi</div><blockquote class=\"gmail_quote\">text: 'old'</blockquote>"
    assert html_to_text(html) == "hi\n> text: 'old'"


def test_apple_mail_reply_parses_to_the_new_tags_only():
    html = (
        "<html><body dir=\"auto\"><div>text: ‘New bus route’</div><div>tags: “bus”</div>"
        "<div><br></div><div>Sent from my iPhone</div><div><br>"
        "<blockquote type=\"cite\">On 3 Mar 2026, at 10:02, Kiri &lt;k@x&gt; wrote:<br><br></blockquote></div>"
        "<blockquote type=\"cite\"><div>text: 'old, and never closed</div></blockquote></body></html>"
    )
    text = html_to_text(html)
    assert "> On 3 Mar 2026, at 10:02, Kiri <k@x> wrote:" in text
    parsed = parse_body(text, KNOWN)
    assert parsed.errors == ()
    assert parsed.tags == (Tag("text", "New bus route", 1), Tag("tags", "bus", 2))


def test_gmail_quote_and_signature_are_dropped():
    html = (
        "<div dir=\"ltr\">text: 'a'<br><div><br></div>-- <br>"
        "<div dir=\"ltr\" class=\"gmail_signature\">Kiri<br>tags: 'sig'</div></div><br>"
        "<div class=\"gmail_quote\"><div dir=\"ltr\" class=\"gmail_attr\">On Tue, 3 Mar 2026 at 10:02, "
        "Kiri &lt;k@x&gt; wrote:<br></div><blockquote class=\"gmail_quote\">text: 'old'"
        "</blockquote></div>"
    )
    text = html_to_text(html)
    assert "old" not in text and "wrote" not in text
    assert parse_body(text, KNOWN).tags == (Tag("text", "a", 1),)


def test_gmail_signature_without_dashes_gets_a_separator():
    html = "<div>text: 'a'</div><div class=\"gmail_signature\">Kiri<br>tags: 'sig'</div>"
    assert html_to_text(html) == "text: 'a'\n--\nKiri\ntags: 'sig'"
    assert parse_body(html_to_text(html), KNOWN).tags == (Tag("text", "a", 1),)


def test_bottom_posting_after_gmail_quote_is_kept():
    html = "<div class=\"gmail_quote\">old</div><div>text: 'below'</div>"
    assert html_to_text(html) == "text: 'below'"


def test_outlook_history_is_dropped():
    html = (
        "<div>text: 'mine'</div><div id=\"appendonsend\"></div>"
        "<hr style=\"display:inline-block;width:98%\"><div id=\"divRplyFwdMsg\" dir=\"ltr\">"
        "<b>From:</b> Kiri<br><b>Subject:</b> Re: bus</div><div>text: 'theirs'</div>"
    )
    assert html_to_text(html) == "text: 'mine'"
    html = "<div>text: 'mine'</div><hr><div id=\"divRplyFwdMsg\">From: Kiri</div><div>old</div>"
    assert html_to_text(html) == "text: 'mine'"


def test_lines_have_no_trailing_space_and_blank_runs_collapse():
    html = "<div>a   </div><p></p><p></p><br><br><div>&nbsp;&nbsp;</div><div>b&nbsp;</div>"
    out = html_to_text(html)
    assert out == "a\n\nb"


def test_attributes_with_markup_characters():
    html = "<a title=\"x > y\" href='a<b'>link</a> <img alt=\"<div>\"> after"
    assert html_to_text(html) == "link after"


@pytest.mark.parametrize(
    "garbage",
    ["<a b=", "<![", "<![foo bar", "<!", "</", "<", "<<<>>>", "<a b='x", "</a", "<script>x",
     "<style>", "&#", "&#xZZ;", "<!--", "<div", "</>", "<?", "<![CDATA[x]]>", "<a\x00b>"],
)
def test_broken_markup_does_not_raise(garbage):
    assert isinstance(html_to_text(garbage), str)
    assert isinstance(html_to_text(f"before {garbage} after {garbage}"), str)


def test_text_less_than_sign_is_kept():
    assert html_to_text("1 < 2 and 3 <4") == "1 < 2 and 3 <4"


# --- the quoted original as each client marks it ------------------------------------
# The writer's words and a tag line above the quote stay; the quote (with a tag line in it)
# never reaches the words or the tags.

QUOTED = "Here is the Torokiki content you asked for:<br>tags: 'quoted'<br>text: 'quoted, never saved'"


def words_and_tags(html: str) -> tuple[str, tuple]:
    parsed = parse_body(html_to_text(html), KNOWN)
    assert parsed.errors == ()
    return parsed.words, tuple((t.name, t.value) for t in parsed.tags)


@pytest.mark.parametrize("html", [
    # Gmail web and Android: the attribution and the quote in one gmail_quote.
    ('<div dir="ltr">My grandad drove it.<div>tags: tram</div></div><br>'
     '<div class="gmail_quote gmail_quote_container"><div dir="ltr" class="gmail_attr">On Tue, 14 May 2024 '
     'at 08:12, Torokiki &lt;gateway@torokiki.net&gt; wrote:<br></div>'
     f'<blockquote class="gmail_quote" style="margin:0px">{QUOTED}</blockquote></div>'),
    # Apple Mail and iPhone: "Sent from my iPhone", then the attribution inside the cite.
    ('<html><body dir="auto"><div dir="ltr">My grandad drove it.</div><div dir="ltr">tags: tram</div>'
     '<div dir="ltr"><br></div><div dir="ltr">Sent from my iPhone</div><div dir="ltr"><br>'
     '<blockquote type="cite">On 14 May 2024, at 08:12, Torokiki &lt;gateway@torokiki.net&gt; wrote:<br><br>'
     '</blockquote></div><blockquote type="cite"><div dir="ltr">' + QUOTED + '</div></blockquote></body></html>'),
    # Outlook on the web / Windows: HTML only, the quote after divRplyFwdMsg, no marks in it.
    ('<div style="font-family:Calibri">My grandad drove it.</div><div>tags: tram</div>'
     '<div id="appendonsend"></div><hr style="display:inline-block;width:98%" tabindex="-1">'
     '<div id="divRplyFwdMsg" dir="ltr"><font face="Calibri"><b>From:</b> Torokiki &lt;gateway@torokiki.net&gt;'
     '<br><b>Sent:</b> Tuesday, 14 May 2024 08:12<br><b>Subject:</b> Torokiki content</font><div>&nbsp;</div>'
     f'</div><div>{QUOTED}</div>'),
    # Outlook on Windows (Word HTML): the header block in a bordered div, no id at all.
    ('<div class="WordSection1"><p class="MsoNormal">My grandad drove it.</p><p class="MsoNormal">tags: tram'
     '</p><p class="MsoNormal">&nbsp;</p><div><div style="border:none;border-top:solid #E1E1E1 1.0pt">'
     '<p class="MsoNormal"><b>From:</b> Torokiki &lt;gateway@torokiki.net&gt; <br><b>Sent:</b> Tuesday, '
     '14 May 2024 08:12<br><b>To:</b> Kiri<br><b>Subject:</b> Torokiki content</p></div></div>'
     f'<p class="MsoNormal">{QUOTED}</p></div>'),
    # Thunderbird: moz-cite-prefix, a cite blockquote, a moz-signature above it.
    ('<p>My grandad drove it.<br>tags: tram</p><div class="moz-signature">Kiri<br>tags: signature</div>'
     '<div class="moz-cite-prefix">On 14/05/2024 08:12, Torokiki wrote:<br></div>'
     f'<blockquote type="cite" cite="mid:torokiki.image.1.x@torokiki.net">{QUOTED}</blockquote>'),
    # Yahoo, the quote's class prefixed as Yahoo does when it quotes again.
    ('<div class="ydp1f2e3yahoo-style-wrap"><div>My grandad drove it.</div><div>tags: tram</div></div>'
     '<div id="ydp4a5yahoo_quoted_123" class="ydp4a5yahoo_quoted"><div>On Tuesday, 14 May 2024, 08:12:24 '
     f'NZST, Torokiki &lt;gateway@torokiki.net&gt; wrote:</div><div>{QUOTED}</div></div>'),
    # Outlook for Mac.
    ('<div>My grandad drove it.</div><div>tags: tram</div><div id="OLK_SRC_BODY_SECTION">'
     f'<b>From: </b>Torokiki<br><b>Date: </b>Tuesday</div><div>{QUOTED}</div>'),
], ids=["gmail", "apple", "outlook-web", "outlook-word", "thunderbird", "yahoo", "outlook-mac"])
def test_each_clients_quote_is_left_out_and_the_tag_above_it_counts(html):
    assert words_and_tags(html) == ("My grandad drove it.", (("tags", "tram"),))


@pytest.mark.parametrize("html", [
    '<div>Mine.</div><div class="gmail_signature" data-smartmail="gmail_signature">Kiri Tane<br>tags: sig</div>',
    '<div>Mine.</div><pre class="moz-signature" cols="72">Kiri Tane\ntags: sig</pre>',
    '<div>Mine.</div><div id="Signature"><div>Kiri Tane</div><div>tags: sig</div></div>',
    '<div>Mine.</div><div id="ms-outlook-mobile-signature">Get <a href="https://aka.ms/o0ukef">Outlook for iOS'
    '</a><br>tags: sig</div>',
], ids=["gmail", "thunderbird", "outlook-web", "outlook-mobile"])
def test_marked_signatures_are_not_the_writers_words(html):
    assert words_and_tags(html) == ("Mine.", ())


def test_a_quote_alone_leaves_no_words():
    html = ('<div><br></div><div class="gmail_quote"><div class="gmail_attr">On Tue, Torokiki wrote:</div>'
            f'<blockquote class="gmail_quote">{QUOTED}</blockquote></div>')
    assert words_and_tags(html) == ("", ())


def test_tag_lines_inside_an_html_quote_never_count():
    html = f'<div>text: \'mine\'</div><blockquote type="cite">{QUOTED}<br>objective: \'theirs\'</blockquote>'
    assert parse_body(html_to_text(html), KNOWN).tags == (Tag("text", "mine", 1),)


@pytest.mark.integration  # slow
@pytest.mark.parametrize("unit", ['<div class="gmail_quote">x', '<blockquote type="cite">x<br>',
                                  'x<div id="divRplyFwdMsg">', '<div class="moz-signature">x',
                                  '<div class="a yahoo_quoted b">x', '<div id="Signature">x'])
def test_a_megabyte_of_client_markers_is_linear(unit):
    html = unit * (1_000_000 // len(unit))
    start = time.perf_counter()
    html_to_text(html)
    assert time.perf_counter() - start < 5


# --- speed and robustness -------------------------------------------------------------


def test_deeply_nested_tags_are_fast():
    for tag in ("div", "blockquote", "span", "pre"):
        html = f"<{tag}>" * 5000 + "text: 'deep'" + f"</{tag}>" * 5000
        start = time.perf_counter()
        out = html_to_text(html)
        assert time.perf_counter() - start < 2
        assert "text: 'deep'" in out


@pytest.mark.integration  # slow
@pytest.mark.parametrize(
    "unit",
    ["<a b=", "<a ", "<a b='", "</a", "<!--", "<![", "<div>", "<blockquote>x", "<p>", "<br>", "<"],
)
def test_500kb_of_garbage_is_linear(unit):
    # html.parser on its own is quadratic on several of these.
    html = unit * (500_000 // len(unit))
    start = time.perf_counter()
    html_to_text(html)
    assert time.perf_counter() - start < 5


HTML_PIECES = st.sampled_from(
    ["<div>", "</div>", "<p>", "</p>", "<br>", "<blockquote>", "</blockquote>", "<pre>", "</pre>",
     "<script>", "</script>", "<style>", "<head>", "<!--", "-->", "<![", "<!", "</", "<", ">", "=",
     "'", '"', "&", "&nbsp;", "&#", ";", " ", "\n", "\r", "\t", "x", "text: 'a'",
     "<div class=\"gmail_quote\">", "<div id=appendonsend>", "<td>", "<li>", "\xa0",
     "<blockquote type=cite>", "<div class=moz-signature>", "<div class=ydp1yahoo_quoted>",
     "<div id=divRplyFwdMsg>", "<div class=moz-cite-prefix>"]
)


@given(st.one_of(st.text(), st.lists(HTML_PIECES, max_size=80).map("".join)))
def test_html_to_text_never_raises_and_output_is_tidy(html):
    out = html_to_text(html)
    lines = out.split("\n")
    assert all(line == line.rstrip() for line in lines)
    assert "\xa0" not in out
    assert all(not (a == b == "") for a, b in zip(lines, lines[1:]))


@settings(deadline=None, max_examples=20)
@given(st.integers(min_value=1, max_value=5000), st.sampled_from(["div", "blockquote", "li", "b"]))
def test_nesting_never_raises(depth, tag):
    html = f"<{tag}>x" * depth
    assert html_to_text(html).count("x") == depth
