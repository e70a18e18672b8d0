import pytest

from torokiki_pipe.stages.s5_understand.urls import BadUrl, ContentUrl, parse_content_url

SITE = "http://torokiki.net"


@pytest.mark.parametrize("text, expected", [
    ("http://torokiki.net/image/123/response", ContentUrl("image", 123, None)),
    ("https://torokiki.net/image/123/response/", ContentUrl("image", 123, None)),
    ("http://www.torokiki.net/image/123/response/456", ContentUrl("image", 123, 456)),
    ("http://TOROKIKI.NET/image/7/respond/8", ContentUrl("image", 7, 8)),
    ("  <http://torokiki.net/image/1/response>  ", ContentUrl("image", 1, None)),
])
def test_accepted_urls_and_their_canonical_form(text, expected):
    url = parse_content_url(text, SITE)
    assert url == expected
    assert url.canonical(SITE) == SITE + expected.path
    assert not url.canonical(SITE).endswith("/")


def test_respond_is_normalised_to_response():
    url = parse_content_url("http://torokiki.net/image/7/respond/8/", SITE)
    assert url.canonical(SITE) == "http://torokiki.net/image/7/response/8"
    assert url.collection_path == "/image/7/response"


@pytest.mark.parametrize("text", [
    "",
    "http://evil.example/image/1/response",
    "http://torokiki.net.evil.example/image/1/response",
    "http://torokiki.network/image/1/response",
    "http://torokiki.net@evil.example/image/1/response",
    "http://user@torokiki.net/image/1/response",
    "http://127.0.0.1/image/1/response",
    "http://[::1]/image/1/response",
    "ftp://torokiki.net/image/1/response",
    "file:///etc/passwd",
    "javascript:alert(1)",
    "http://torokiki.net:8080/image/1/response",
    "http://torokiki.net/video/1/response",
    "http://torokiki.net/image/abc/response",
    "http://torokiki.net/image/١٢/response",   # non-ASCII digits are not ids
    "http://torokiki.net/image/1/response/2/3",
    "http://torokiki.net/image/1/response?x=1",
    "http://torokiki.net/image/1/response#top",
    "http://torokiki.net/image/1 /response",
    "torokiki.net/image/1/response",
])
def test_refused_urls_say_why_in_plain_words(text):
    with pytest.raises(BadUrl) as refused:
        parse_content_url(text, SITE)
    assert "torokiki.net" in str(refused.value)


def test_site_with_www_accepts_bare_host():
    assert parse_content_url("http://torokiki.net/image/1/response", "http://www.torokiki.net").seed == 1
