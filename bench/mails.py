"""The mails the benchmark pipes into the gateway, built with the standard library only.

Every builder returns the bytes of one mail carrying fixed-width placeholders for its
Message-ID and its sender; `with_fresh_id` replaces them before each run, because the
gateway keeps an exactly-once journal per Message-ID and a reply budget per sender.
The mails are the same on every run of the benchmark (the random bytes of the media
come from the seeded generator the caller passes).
"""

from __future__ import annotations

import email.policy
import os
import random
import threading
from email.message import EmailMessage

SITE_URL = "http://torokiki.net"
GATEWAY = "gateway@torokiki.net"
KB, MB = 1024, 1024 * 1024
# Fixed-width placeholders, replaced in every run by a fresh Message-ID and a fresh sender.
PLACEHOLDER_ID = b"<bench-0000000000000000-0000000000@bench.example.net>"
PLACEHOLDER_SENDER = b"bench-0000000000-0000000000@example.net"
SMALL_REPLY = (b"From: Torokiki <gateway@torokiki.net>\nTo: bench@example.net\nSubject: bench\n"
               b"Auto-Submitted: auto-replied\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\n"
               + b"Kia ora, this stands for a short reply of the gateway.\n" * 18)
HOSTILE_SIZE = 25 * MB             # the default TOROKIKI_MAX_MESSAGE_BYTES: the most a hostile mail gets in


def _base(subject: str, message_id: bytes = PLACEHOLDER_ID) -> EmailMessage:
    message = EmailMessage(policy=email.policy.SMTP.clone(linesep="\n"))
    message["From"] = f"Bench Sender <{PLACEHOLDER_SENDER.decode('ascii')}>"
    message["To"] = GATEWAY
    message["Subject"] = subject
    message["Date"] = "Tue, 14 May 2024 08:02:05 +1200"
    message["Message-ID"] = message_id.decode("ascii")
    message["MIME-Version"] = "1.0"
    return message


def _bytes(message: EmailMessage) -> bytes:
    raw = message.as_bytes(policy=message.policy)
    assert PLACEHOLDER_ID in raw and PLACEHOLDER_SENDER in raw, "a placeholder was folded or lost"
    return raw


def text_mail(seed: int = 1) -> bytes:
    message = _base(f"create-response-to: '{SITE_URL}/image/{seed}/response'")
    message.set_content("Kia ora,\n\n"
                        "text: 'These routes are now plied by a petrol based bus service. "
                        "My nana still remembers catching the tram to work along here.'\n"
                        "tags: 'bench, transport'\n\nSent from the benchmark\n")
    return _bytes(message)


def media_mail(size: int, rng: random.Random) -> bytes:
    message = _base(f"create-response-to: '{SITE_URL}/image/3/response'")
    message.set_content("tags: 'bench'\n")
    message.add_attachment(rng.randbytes(size), maintype="image", subtype="jpeg", filename="bench.jpg")
    return _bytes(message)


def help_mail() -> bytes:
    message = _base("help")
    message.set_content("\nSent from the benchmark\n")
    return _bytes(message)


def invalid_mail() -> bytes:
    message = _base(f"create-response-to: '{SITE_URL}/image/2/response'")
    message.set_content("Hi,\n\ncolour: 'sepia'\n"
                        "text: 'The tram shelter outside the Bank of New Zealand is still there\n"
                        "tags: 'cubastreet'\n\nKiri\n")
    return _bytes(message)


def get_mail(seed: int) -> bytes:
    message = _base(f"get: '{SITE_URL}/image/{seed}/response'")
    message.set_content("\nSent from the benchmark\n")
    return _bytes(message)


def ignored_mail() -> bytes:
    message = _base("Automatic reply: Your response was saved")
    message["Auto-Submitted"] = "auto-replied"
    message["X-Autoreply"] = "yes"
    message.set_content("I am away until Monday with limited access to email.\n")
    return _bytes(message)


def _raw_head(subject: str, content_type: str, *extra: str) -> bytes:
    """The header block `_base` writes, as bytes, for mails too big or too broken to build with it."""
    return "".join(f"{line}\n" for line in (
        f"From: Bench Sender <{PLACEHOLDER_SENDER.decode('ascii')}>", f"To: {GATEWAY}", f"Subject: {subject}",
        "Date: Tue, 14 May 2024 08:02:05 +1200", f"Message-ID: {PLACEHOLDER_ID.decode('ascii')}",
        "MIME-Version: 1.0", *extra, f"Content-Type: {content_type}")).encode("utf-8")


def _fill(start: bytes, unit: bytes, end: bytes = b"", size: int = HOSTILE_SIZE) -> bytes:
    """start + unit repeated + end, as close to `size` bytes as whole units allow."""
    return start + unit * ((size - len(start) - len(end)) // len(unit)) + end


_CREATE = f"create-response-to: '{SITE_URL}/image/1/response'"


def hostile_mails() -> list[tuple[str, bytes, list, str]]:
    """(name, mail, API requests expected, what it is) for each hostile mail, HOSTILE_SIZE each.

    The first five are the ones issue 12 reports (item 10: nesting that crashed the
    email package; item 11: memory past a GB); the others attack the bounds that
    answer those.  All but the last are answered as invalid, without a request.
    """
    mixed = 'multipart/mixed; boundary="b"'
    deep = b"".join(b'--b%d\nContent-Type: multipart/mixed; boundary="b%d"\n\n' % (i - 1, i) for i in range(1, 1000))
    cyrillic = "Кия ора, это длинная строка текста по-русски.\n".encode("utf-8")
    return [
        ("tiny parts", _fill(_raw_head(_CREATE, mixed) + b"\n", b"--b\n\nx\n", b"--b--\n"), [],
         "3.2 million parts of one line"),
        ("nested 1000 deep", _fill(_raw_head(_CREATE, 'multipart/mixed; boundary="b0"') + b"\n" + deep
                                  + b"--b999\nContent-Type: text/plain\n\n", b"text: 'deep'\n"), [],
         "multipart in multipart 1000 deep, then text"),
        ("forwarded 3000 deep", _fill(_raw_head(_CREATE, "message/rfc822") + b"\n"
                                     + b"Content-Type: message/rfc822\n\n" * 3000, b"text: 'deep'\n"), [],
         "message/rfc822 in message/rfc822 3000 deep, then text"),
        ("short lines", _fill(_raw_head(_CREATE, "text/plain") + b"\ntext: 'x'\n", b"x\n"), [],
         "12 million lines of one letter"),
        ("folded header", _fill(_raw_head(_CREATE, "text/plain") + b"X-Folded: x\n", b" x\n", b"\ntext: 'x'\n"), [],
         "8 million folded lines in the mail's header"),
        ("folded part header", _fill(_raw_head(_CREATE, mixed) + b"\n--b\nContent-Type: text/plain;\n", b" x\n",
                                     b"\ntext: 'x'\n--b--\n"), [],
         "8 million folded lines in a part's header"),
        ("header fields", _fill(_raw_head(_CREATE, mixed) + b"\n--b\nContent-Type: text/plain\n", b"a:b\n",
                                b"\ntext: 'x'\n--b--\n"), [],
         "6 million header fields in a part"),
        ("parameters", _fill(_raw_head(_CREATE, mixed) + b'\n--b\nContent-Type: multipart/mixed; boundary="c"',
                             b";\n a=b", b"\n\n--c\n\ntext: 'x'\n--c--\n--b--\n"), [],
         "4 million Content-Type parameters in a part"),
        ("blank lines", _fill(_raw_head(_CREATE, "text/plain") + b"\ntext: 'x'\n", b"x!\n\n"), [],
         "text and blank lines by turns: nothing for the parser to join"),
        ("8-bit text", _fill(_raw_head(_CREATE, "text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit")
                             + b"\ntext: 'x'\n", cyrillic), [],
         "UTF-8 Cyrillic text (two bytes a letter, four in a Python str of its bytes)"),
        ("7bit attachment", _fill(_raw_head(_CREATE, mixed) + b"\n--b\nContent-Type: text/plain\n\ntags: 'bench'\n"
                                  b'--b\nContent-Type: text/csv; name="data.csv"\n'
                                  b'Content-Disposition: attachment; filename="data.csv"\n\n',
                                  b"1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20\n", b"--b--\n"),
         [("POST", 201)], "not hostile: a 25 MB CSV file sent as 7bit text, saved"),
    ]


_counter = 0
_counter_lock = threading.Lock()


def with_fresh_id(template: bytes) -> bytes:
    """The mail with a Message-ID and a sender no earlier run used (same lengths as the placeholders)."""
    global _counter
    with _counter_lock:
        _counter += 1
        number = _counter
    new_id = f"<bench-{os.getpid():016d}-{number:010d}@bench.example.net>".encode("ascii")
    new_sender = f"bench-{os.getpid():010d}-{number:010d}@example.net".encode("ascii")
    assert len(new_id) == len(PLACEHOLDER_ID) and len(new_sender) == len(PLACEHOLDER_SENDER)
    return template.replace(PLACEHOLDER_ID, new_id, 1).replace(PLACEHOLDER_SENDER, new_sender, 1)
