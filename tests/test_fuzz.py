"""A bounded fuzz run over the in-process stages, seeded with the real-mail corpus.

Every corpus mail goes through once as it is, then mutated copies (byte flips,
truncation, two mails spliced, a boundary line duplicated or deleted, NULs, CR
line endings, random charset names and transfer encodings, a megabyte header
line, broken encoded-words and parameters, ...) go through

    read_head -> reason_to_ignore -> reply_sender -> read_subject -> parse_mail -> understand

until the time budget is spent.  No stage may raise and no case may take more
than a few seconds.  The run is deterministic: case ``i`` is made by
``random.Random(f"{SEED}/{i}")`` alone, so a failure can be replayed with
``mutated_case(i)``; how many cases run depends only on the machine's speed.

FUZZ_SECONDS (default 20) and FUZZ_SEED change the budget and the seed.
"""
from __future__ import annotations

import os
import random
import re
import signal
import threading
import time
import traceback
from pathlib import Path

import pytest

from torokiki_pipe.stages.s5_understand.command import SubjectLine, read_subject, understand
from torokiki_pipe.stages.s3_guard import reason_to_ignore, reply_sender
from torokiki_pipe.stages.s2_headers import read_head
from torokiki_pipe.stages.s5_understand.mime import parse_mail

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
BUDGET = float(os.environ.get("FUZZ_SECONDS", "20"))
SEED = int(os.environ.get("FUZZ_SEED", "20240514"))
CASE_LIMIT = 5.0      # seconds one case may take; each stage is linear, so this is generous
MIN_CASES = 20       # mutated cases run even when the corpus alone used up the budget
HANG_ALARM = 30.0     # a case still running after this is interrupted and reported as a hang
SITE = "http://torokiki.net"
GATEWAY = "gateway@torokiki.net"


def corpus_files():
    return sorted(CORPUS.glob("*.eml")) if CORPUS.is_dir() else []


pytestmark = [
    pytest.mark.integration,        # slow: it runs for FUZZ_SECONDS
    pytest.mark.skipif(not corpus_files(), reason=f"{CORPUS} is absent (as in a user's clone): "
                                                  "the fuzz run is seeded with its mails"),
]

# --------------------------------------------------------------------------- mutations

BOUNDARY_LINE = re.compile(rb"(?m)^--[^\r\n]{1,200}\r?$")
CHARSETS = [b"utf-8", b"latin-1", b"x-unknown", b"utf-7", b"utf-16", b"utf-32", b"idna", b"punycode",
            b"rot13", b"base64", b"hex", b"zlib", b"uu", b"undefined", b"unicode_escape", b"mbcs",
            b"\xff\xfe", b"", b"utf-8\x00", b"iso-2022-jp", b"big5hkscs", b"unicode-1-1-utf-7",
            b"x-mac-cyrillic", b"ks_c_5601-1987", b"charmap", b"utf-16-be", b"..", b"a" * 300]
ENCODINGS = [b"base64", b"quoted-printable", b"x-uuencode", b"uuencode", b"8bit", b"binary", b"bogus", b""]
CONTENT_TYPES = [b"multipart/mixed", b"multipart/alternative", b"message/rfc822", b"text/html",
                 b"multipart/related; boundary=", b"message/partial", b"message/external-body",
                 b"text/plain; charset=utf-16", b"multipart/digest; boundary=x",
                 b"application/pgp-signature", b"/", b""]
PARAMETERS = [b"; filename*0*=utf-8''%E2%82; filename*1*=%AC", b"; filename*=''",
              b"; filename*0=a; filename*2=c", b"; name*=x-unknown'en'%FF%00", b'; boundary=""',
              b"; charset*=utf-8''%00", b'; filename="\\\\"', b";;;=;="]


def _flip(rng, data, mails):
    b = bytearray(data)
    for _ in range(rng.randint(1, 20) if b else 0):
        i = rng.randrange(len(b))
        b[i] ^= 1 << rng.randrange(8)
    return bytes(b)


def _truncate(rng, data, mails):
    return data[:rng.randrange(len(data) + 1)]


def _splice(rng, data, mails):
    other = rng.choice(mails)
    return data[:rng.randrange(len(data) + 1)] + other[rng.randrange(len(other) + 1):]


def _duplicate_boundary(rng, data, mails):
    lines = list(BOUNDARY_LINE.finditer(data))
    if not lines:
        return data
    m = rng.choice(lines)
    return data[:m.end()] + b"\n" + m.group() + data[m.end():]


def _delete_boundary(rng, data, mails):
    lines = list(BOUNDARY_LINE.finditer(data))
    if not lines:
        return data
    m = rng.choice(lines)
    return data[:m.start()] + data[m.end():]


def _nuls(rng, data, mails):
    b = bytearray(data)
    for _ in range(rng.randint(1, 10)):
        b.insert(rng.randrange(len(b) + 1), 0)
    return bytes(b)


def _cr_only(rng, data, mails):
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r")


def _charset(rng, data, mails):
    charset = rng.choice(CHARSETS)
    return re.sub(rb'(?i)charset="?[^";\s]*"?', lambda m: b'charset="' + charset + b'"', data,
                  count=rng.randint(0, 5))


def _transfer_encoding(rng, data, mails):
    cte = rng.choice(ENCODINGS)
    return re.sub(rb"(?im)^content-transfer-encoding:[^\r\n]*", b"Content-Transfer-Encoding: " + cte, data)


def _megabyte_header(rng, data, mails):
    line = bytes(rng.choice(b"ab =?:<>,;\t") for _ in range(1 << 20))
    return (b"X-Big: " + line + b"\n" + data) if rng.random() < 0.5 else (b"Subject: " + line + b"\n" + data)


def _nest(rng, data, mails):
    return b"MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=zz\n\n--zz\n" + data + b"\n--zz--\n"


def _encoded_word(rng, data, mails):
    charset = rng.choice(CHARSETS).decode("latin-1")
    junk = bytes(rng.choice(b"=?_AZaz09+/\x00\xff\n") for _ in range(rng.randint(0, 30))).decode("latin-1")
    word = f"=?{charset}?{rng.choice('bBqQx')}?{junk}?=".encode("latin-1")
    where = rng.choice([rb"(?im)^subject:", rb"(?im)^from:", rb'(?i)filename="?', rb'(?i)name="?',
                        rb"(?im)^to:"])
    return re.sub(where, lambda m: m.group() + b" " + word + b" ", data, count=1)


def _parameter(rng, data, mails):
    extra = rng.choice(PARAMETERS)
    return re.sub(rb"(?im)^content-(type|disposition):[^\r\n]*", lambda m: m.group() + extra, data,
                  count=rng.randint(1, 3))


def _content_type(rng, data, mails):
    ctype = rng.choice(CONTENT_TYPES)
    return re.sub(rb"(?im)^content-type:[^\r\n]*", b"Content-Type: " + ctype, data, count=1)


MUTATIONS = {f.__name__.lstrip("_"): f for f in (
    _flip, _truncate, _splice, _duplicate_boundary, _delete_boundary, _nuls, _cr_only, _charset,
    _transfer_encoding, _megabyte_header, _nest, _encoded_word, _parameter, _content_type)}


def mutated_case(i: int, mails: list[bytes], names: list[str]) -> tuple[bytes, str]:
    """Case ``i`` of the run and how it was made; depends on SEED and i only."""
    rng = random.Random(f"{SEED}/{i}")
    base = rng.randrange(len(mails))
    data, done = mails[base], []
    for _ in range(rng.randint(1, 3)):
        name = rng.choice(sorted(MUTATIONS))
        data = MUTATIONS[name](rng, data, mails)
        done.append(name)
    return data, f"{names[base]} + {', '.join(done)}"


# --------------------------------------------------------------------------- the stages

# Subject lines that make `understand` read the body whatever the mail's own subject says.
FORCED_LINES = (SubjectLine("create-response-to", f"{SITE}/image/1/response", ""),
                SubjectLine("get", f"{SITE}/image/1/response", ""),
                SubjectLine("", "", ""))


class Hang(Exception):
    pass


def _on_alarm(signum, frame):
    raise Hang(f"still running after {HANG_ALARM:g} s")


def run_stages(data: bytes) -> None:
    """The pipeline's in-process stages on one message; raises what a stage raises, tagged."""
    stage = "read_head"
    try:
        head = read_head(data)
        stage = "reason_to_ignore"
        reason_to_ignore(head, None, GATEWAY)
        reason_to_ignore(head, "kiri@example.net", GATEWAY)
        stage = "reply_sender"
        reply_sender(head.from_raw)
        stage = "read_subject"
        line = read_subject(head.subject)
        stage = "parse_mail"
        mail = parse_mail(data)
        stage = "understand"
        for each in (line, *FORCED_LINES):
            understand(each, mail, SITE)
    except Exception as error:
        error.stage = stage
        raise


def _guarded(data: bytes) -> None:
    alarm = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if alarm:
        previous = signal.signal(signal.SIGALRM, _on_alarm)
        signal.setitimer(signal.ITIMER_REAL, HANG_ALARM)
    try:
        run_stages(data)
    finally:
        if alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)


def _signature(error: BaseException) -> tuple[str, str, str]:
    frame = traceback.extract_tb(error.__traceback__)[-1]
    return getattr(error, "stage", "?"), type(error).__name__, f"{Path(frame.filename).name}:{frame.lineno}"


def _fails_alike(data: bytes, signature) -> bool:
    try:
        run_stages(data)
    except Exception as error:
        return _signature(error) == signature
    return False


def minimise(data: bytes, signature, seconds: float = 10.0) -> bytes:
    """Drop chunks while the same failure remains (a bounded ddmin): a short reproducer."""
    deadline = time.monotonic() + seconds
    chunk = max(1, len(data) // 2)
    while chunk >= 1 and time.monotonic() < deadline:
        i, shrunk = 0, False
        while i < len(data) and time.monotonic() < deadline:
            candidate = data[:i] + data[i + chunk:]
            if _fails_alike(candidate, signature):
                data, shrunk = candidate, True
            else:
                i += chunk
        if not shrunk:
            chunk //= 2
    return data


def test_fuzz_the_in_process_stages(tmp_path):
    files = corpus_files()
    mails = [p.read_bytes() for p in files]
    names = [p.name for p in files]
    failures: dict[tuple, tuple[str, bytes, str]] = {}
    slow: list[tuple[float, str]] = []

    def one(data: bytes, label: str) -> None:
        started = time.monotonic()
        try:
            _guarded(data)
        except Exception as error:
            signature = _signature(error)
            if signature not in failures:
                failures[signature] = (label, data, f"{type(error).__name__}: {str(error)[:200]}")
        took = time.monotonic() - started
        if took > CASE_LIMIT:
            slow.append((round(took, 2), label))

    deadline = time.monotonic() + BUDGET
    for data, name in zip(mails, names):       # the corpus as it is, first
        one(data, name)
    cases = 0
    while time.monotonic() < deadline or cases < MIN_CASES:
        data, how = mutated_case(cases, mails, names)
        one(data, f"case {cases} ({how})")
        cases += 1

    report = []
    for n, (signature, (label, data, message)) in enumerate(failures.items()):
        small = minimise(data, signature)
        kept = tmp_path / f"failure-{n}.eml"
        kept.write_bytes(data)
        report.append(f"{signature} {message}\n    from {label}, kept as {kept}\n"
                      f"    reproducer ({len(small)} bytes): {small[:400]!r}")
    print(f"fuzz: {len(mails)} corpus mails + {cases} mutated cases in {BUDGET:g} s (seed {SEED})")
    assert not report, "\n".join(report)
    assert not slow, f"cases slower than {CASE_LIMIT} s: {slow}"
