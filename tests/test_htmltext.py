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
     "<div class=\"gmail_quote\">", "<div id=appendonsend>", "<td>", "<li>", "\xa0"]
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
