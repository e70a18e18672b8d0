"""The full parse: which text is the sender's, which parts are attachments."""
from pathlib import Path

import pytest

from torokiki_pipe.stages.s5_understand.mime import MAX_TEXT_CHARS, parse_mail, safe_filename

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"


def corpus(name):
    path = CORPUS / name
    if not path.exists():
        pytest.skip(f"{CORPUS} is absent (a user's clone): corpus cases need it")
    return path.read_bytes()


def mail(*lines):
    return "\n".join(lines).encode()


def test_plain_text_preferred_over_html():
    parsed = parse_mail(mail(
        "Content-Type: multipart/alternative; boundary=b", "", "--b",
        "Content-Type: text/plain; charset=utf-8", "", "text: 'plain'", "--b",
        "Content-Type: text/html", "", "<p>text: 'html'</p>", "--b--"))
    assert parsed.text.strip() == "text: 'plain'" and parsed.attachments == ()


def test_html_only_is_converted():
    parsed = parse_mail(mail("Content-Type: text/html; charset=utf-8", "",
                             "<div>text: &lsquo;Kia ora&rsquo;<br>tags: 'a'</div>"))
    assert "text: \u2018Kia ora\u2019" in parsed.text and "tags: 'a'" in parsed.text


def test_inline_image_in_related_is_an_attachment_and_alternatives_are_not():
    parsed = parse_mail(corpus("enmime__html-mime-inline.raw.eml"))
    assert len(parsed.attachments) == 1
    assert parsed.attachments[0].content_type == "image/png"
    html_only = parse_mail(corpus("enmime__html-only-inline.raw.eml"))
    assert len(html_only.attachments) == 1 and html_only.text.strip()


def test_iphone_text_around_a_photo_is_joined():
    parsed = parse_mail(corpus("mailgun-flanker__iphone.eml"))
    assert [a.content_type for a in parsed.attachments] == ["image/jpeg"]
    assert parsed.attachments[0].filename.lower() == "photo.jpg"


def test_rfc2047_and_rfc2231_file_names():
    russian = parse_mail(corpus("mailgun-flanker__russian-attachment-yahoo.eml"))
    assert any("\u0430" <= c <= "\u044f" for c in russian.attachments[0].filename.lower())
    japanese = parse_mail(corpus("mikel-mail__japanese_attachment_long_name.eml"))
    assert "=?" not in japanese.attachments[0].filename and "*" not in japanese.attachments[0].filename


def test_odd_charsets_decode_without_error():
    for name in ("php-mime-mail-parser__issue230.eml", "zbateson-mail-mime-parser__invalid-charset.txt.eml",
                 "sisimai-set-of-emails__lhost-outlook-01.eml", "mikel-mail__ks_c_5601-1987.eml"):
        assert isinstance(parse_mail(corpus(name)).text, str)


def test_signature_parts_are_not_attachments():
    parsed = parse_mail(mail(
        "Content-Type: multipart/signed; protocol=\"application/pgp-signature\"; boundary=s", "",
        "--s", "Content-Type: text/plain", "", "text: 'signed'", "--s",
        "Content-Type: application/pgp-signature; name=signature.asc", "", "-----BEGIN PGP-----", "--s--"))
    assert parsed.attachments == () and "signed" in parsed.text


def test_forwarded_mail_is_one_attachment_never_read_as_the_senders_text():
    parsed = parse_mail(mail(
        "Content-Type: multipart/mixed; boundary=m", "", "--m", "Content-Type: text/plain", "", "hi", "--m",
        "Content-Type: message/rfc822", "", "Subject: inner", "", "text: 'not mine'", "--m--"))
    assert "not mine" not in parsed.text
    assert len(parsed.attachments) == 1 and parsed.attachments[0].filename.endswith(".eml")


def test_hostile_nesting_is_bounded():
    depth = 300
    lines = []
    for i in range(depth):
        lines += [f"Content-Type: multipart/mixed; boundary=b{i}", "", f"--b{i}"]
    lines += ["Content-Type: text/plain", "", "deep"]
    parsed = parse_mail(mail(*lines))
    assert parsed.too_complex == "its parts are nested more than 64 deep"
    assert parsed.text == "" and parsed.attachments == ()


@pytest.mark.parametrize("name, content_type, expected", [
    ("../../etc/passwd", "text/plain", "passwd"),
    ("C:\\Users\\kiri\\photo.jpg", "image/jpeg", "photo.jpg"),
    (".hidden.png", "image/png", "hidden.png"),
    ("", "image/png", "attachment.png"),
    ("a\x00b\n.jpg", "image/jpeg", "ab.jpg"),
])
def test_safe_filename(name, content_type, expected):
    assert safe_filename(name, content_type) == expected


# Big base64 bodies are cut out before the email package parses the mail (see mime._Cuts):
# the results must be exactly what a plain parse gives.
BIG = bytes(range(256)) * 1200          # 300 KB: well past the 64 KB cut threshold


def big_photo_mail(newline=b"\n", body_type=b"image/jpeg", encoding=b"base64", inner=b""):
    import base64

    encoded = base64.encodebytes(BIG).replace(b"\n", newline)
    parts = [b"Content-Type: multipart/mixed; boundary=cut", b"", b"--cut", b"Content-Type: text/plain",
             b"", b"tags: 'big'", b"--cut", b"Content-Type: " + body_type,
             b"Content-Transfer-Encoding: " + encoding, b"Content-Disposition: attachment; filename=big.jpg",
             b"", encoded + inner + b"--cut--", b""]
    return newline.join(parts)


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
def test_a_big_base64_attachment_is_decoded_exactly(newline):
    parsed = parse_mail(big_photo_mail(newline))
    [photo] = parsed.attachments
    assert photo.data == BIG and photo.filename == "big.jpg"
    assert "tags: 'big'" in parsed.text


def test_base64_looking_text_that_is_not_a_base64_body_is_read_whole():
    # A long run of base64 characters in a 7bit part must come back as it was written.
    parsed = parse_mail(big_photo_mail(body_type=b"text/plain", encoding=b"7bit").replace(
        b"filename=big.jpg", b"filename=big.txt"))
    [text_file] = parsed.attachments
    import base64

    assert base64.decodebytes(text_file.data) == BIG


def test_a_forwarded_mail_with_a_big_photo_is_attached_as_received():
    inner = big_photo_mail()
    outer = (b"Content-Type: multipart/mixed; boundary=outer\n\n--outer\nContent-Type: text/plain\n\nhi\n"
             b"--outer\nContent-Type: message/rfc822\n\n" + inner + b"\n--outer--\n")
    [forwarded] = parse_mail(outer).attachments
    assert forwarded.data.replace(b"\n", b"") == inner.replace(b"\n", b"")


def test_runs_just_under_the_cut_threshold_do_not_make_the_parse_quadratic():
    # Each run is 65,000 base64 characters: a search that began again at every position
    # inside a run would rescan it (about 6e10 steps here), a hang, not a slow test.
    body = (b"A" * 65000 + b" ") * 30
    parsed = parse_mail(b"Content-Type: text/plain\n\n" + body)
    assert parsed.text_cut and parsed.text == body[:MAX_TEXT_CHARS].decode()


@pytest.mark.parametrize("seed", range(40))
def test_base64_runs_are_the_longest_runs_of_base64_text_across_windows(seed):
    # Small thresholds and windows put runs across window edges, at the very start and
    # end of the mail, and exactly at the threshold; a regular expression is the reference.
    import random
    import re

    from torokiki_pipe.stages.s5_understand.mime import base64_runs

    rng = random.Random(seed)
    pieces = [rng.choice([b"QUJD", b"==", b"\n", b"\r\n", b" ", b"-", b"\xe9", b"<p>", b"A" * rng.randint(1, 40)])
              for _ in range(rng.randint(0, 60))]
    data = b"".join(pieces)
    least, window = rng.randint(1, 30), rng.randint(1, 50)
    expected = [m.span() for m in re.finditer(rb"[A-Za-z0-9+/=\r\n]+", data) if m.end() - m.start() >= least]
    assert base64_runs(data, least=least, window=window) == expected


def test_a_big_canonical_base64_body_is_kept_as_the_mails_own_text():
    import base64

    from torokiki_pipe.stages.s5_understand.mime import Base64Text

    [photo] = parse_mail(big_photo_mail(b"\r\n")).attachments
    assert isinstance(photo.body, Base64Text)
    assert b"".join(photo.body.chunks()) == base64.b64encode(BIG) and len(photo.body) == len(base64.b64encode(BIG))
    # Base64 the website would not take as it stands (padding missing) is decoded and re-encoded.
    ragged = big_photo_mail().replace(b"\n--cut--", b"AAA\n--cut--")
    [fixed] = parse_mail(ragged).attachments
    assert isinstance(fixed.body, bytes)


@pytest.mark.parametrize("text, kept", [
    (b"QUJD\nREVG\n", True),            # "ABCDEF"
    (b"QUI=\n", True),                  # one padding character
    (b"QQ==\r\n", True),                # two, CRLF lines
    (b"QU*D\nREVG\n", False),           # a character outside the alphabet
    (b"QQ==\nQUJD\n", False),           # padding in the middle
    (b"Q===\n", False),                 # three padding characters
    (b"QUJ\n", False),                  # not a multiple of four
])
def test_only_base64_the_website_takes_as_it_stands_is_streamed_as_written(text, kept):
    from torokiki_pipe.stages.s5_understand.mime import Base64Text

    raw = b"x" + text + b"y"   # the run sits inside a bigger mail
    found = Base64Text.if_canonical(raw, 1, 1 + len(text))
    assert (found is not None) == kept
    if kept:
        assert b"".join(found.chunks()) == text.replace(b"\r", b"").replace(b"\n", b"")
