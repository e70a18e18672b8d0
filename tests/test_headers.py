from torokiki_pipe.headers import read_head
from torokiki_pipe.read import RawMail, read_mail
import io


def test_rfc2047_subject_and_raw_utf8_headers():
    head = read_head(b"From: =?utf-8?b?S2lyaSBUxIFuZQ==?= <k@x.net>\nSubject: =?iso-8859-1?q?caf=E9?=\n"
                     b"Message-ID: <a@b>\n\nbody")
    assert head.subject == "caf\u00e9"
    assert head.from_ == "Kiri T\u0101ne <k@x.net>"
    raw = read_head("Subject: Kia ora \u0101\n\nx".encode())
    assert raw.subject == "Kia ora \u0101"


def test_line_endings_crlf_and_cr_only():
    for sep in (b"\r\n", b"\r"):
        head = read_head(sep.join([b"From: k@x.net", b"Subject: help", b"", b"body"]))
        assert head.subject == "help" and head.from_ == "k@x.net"


def test_mbox_from_line_is_dropped_and_oversize_detected():
    raw = read_mail(io.BytesIO(b"From k@x.net Mon Jan  1 00:00:00 2024\nSubject: help\n\nhi"), 1000)
    assert raw == RawMail(b"Subject: help\n\nhi", oversize=False)
    big = read_mail(io.BytesIO(b"Subject: x\n\n" + b"y" * 5000), 100)
    assert big.oversize and len(big.data) == 101


def test_key_is_the_message_id_digest_else_the_content_digest():
    a = read_head(b"Message-ID: <1@x>\n\none")
    b = read_head(b"Message-ID: <1@x>\n\ntwo")
    c = read_head(b"Subject: none\n\none")
    assert a.key == b.key and a.key != c.key and len(c.key) == 32


def test_no_header_block_at_all():
    head = read_head(b"just some text\nand more\n")
    assert head.subject == "" and head.from_ == ""
