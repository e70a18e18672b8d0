from torokiki_pipe.stages.s2_headers import MAX_HEADER_FIELDS, _parse_head, read_head
from torokiki_pipe.stages.s1_read import RawMail, read_mail
import io

import pytest


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


# Bounded: a megabyte of hostile headers costs a few megabytes and milliseconds.

@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_the_header_block_is_read_to_its_first_thousand_fields(newline):
    junk = b"".join(b"X-%d: junk\n folded\n" % i for i in range(1500))
    before = read_head((b"From: k@x.net\nSubject: help\n" + junk + b"\nbody").replace(b"\n", newline))
    after = read_head((b"From: k@x.net\n" + junk + b"Subject: help\n\nbody").replace(b"\n", newline))
    assert before.subject == "help" and after.subject == ""
    items = _parse_head((b"From: k@x.net\nSubject: help\n" + junk).replace(b"\n", newline)).raw_items()
    items = list(items)
    assert len(items) == MAX_HEADER_FIELDS
    assert items[-1] == (f"X-{MAX_HEADER_FIELDS - 3}", "junk" + newline.decode() + " folded")


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
def test_a_big_header_block_is_read_as_the_email_package_reads_it(newline):
    from email.parser import BytesHeaderParser

    block = (b"From: k@x.net\nReferences: " + b"\n ".join(b"<%d@example.net>" % i for i in range(5000))
             + b"\nSubject: help\n" + b"".join(b"X-%d: v\n" % i for i in range(500))).replace(b"\n", newline)
    head = read_head(block + newline + b"body")
    assert len(block) > 64 * 1024
    assert head.subject == "help"
    assert tuple(_parse_head(block).raw_items()) == tuple(BytesHeaderParser().parsebytes(block).raw_items())


def test_a_megabyte_of_folded_header_is_read():
    head = read_head(b"From: k@x.net\nX-Folded: start\n" + b" x\n" * 300_000 + b"Subject: help\n\nbody")
    assert head.subject == "help" and head.from_ == "k@x.net"
