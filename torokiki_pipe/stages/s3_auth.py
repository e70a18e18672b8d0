"""Stage 3, who really sent it: the receiving MTA's verdict from ``Authentication-Results``.

Anyone can write any From address, and any header.  What can be trusted is
what the host's own MTA or milters (OpenDKIM, OpenDMARC, rspamd) wrote, under
the authserv-id the administrator names (``TOROKIKI_AUTHSERV_ID``); every
other header is ignored.  The MTA ought to remove incoming headers that claim
its id (RFC 8601, section 5); not every filter does, hence the topmost rule
below.  `parse` reads one header value as RFC 8601 writes it (comments,
quoted strings, several results); `verdict` weighs all the trusted ones:

- a ``dmarc=fail`` is FORGED, whatever else claims ``pass``: a header the
  sender wrote with our id cannot hide the MTA's real fail;
- a ``dmarc=pass`` for the From domain is AUTHENTICATED;
- else a ``dkim=pass`` whose signing domain is the From domain or a parent of
  it is AUTHENTICATED: that domain signed this From (stricter than DMARC's
  relaxed alignment, which needs the public suffix list, never looser);
- anything else is UNKNOWN: ``none``, ``temperror``, ``permerror``, a failed or
  foreign DKIM signature, no trusted header at all.

A pass counts only from the topmost trusted header that holds a result of its
method: the MTA's milters prepend their headers, so a sender's copy sits below
them, and OpenDMARC removes none of a sender's headers (OpenDKIM only those
claiming a dkim result).  So a sender's ``dmarc=pass`` under our id cannot turn
the MTA's ``dmarc=none`` into a pass; it could only where the MTA writes no
DMARC result at all, which `check` warns about.

SPF counts only through DMARC.  It vouches for the envelope sender's server,
which need not be the From's domain, and forwarding breaks it; a domain that
wants SPF to speak for its From publishes DMARC, and the DMARC result already
weighs it.  So ``spf=pass`` alone proves nothing and ``spf=fail`` alone forges
nothing.

`held` says what a verdict means for the mail: forged mail is held and goes
no further; with TOROKIKI_REQUIRE_AUTH=create a response from a sender who
is not AUTHENTICATED is held and answered so; ``replay --force`` (a person
looked at it) lets either through, and the log says so.

Pure: header values in, a `Verdict` and a `Held` out.
"""

from __future__ import annotations

import re
from typing import NamedTuple

AUTHENTICATED, FORGED, UNKNOWN = "authenticated", "forged", "unknown"
MAX_HEADERS = 50        # trusted or not, more is hostile: each is parsed
MAX_RESULTS = 50        # per header, empty ones counted
MAX_VALUE_CHARS = 8192  # an MTA's own header is a few hundred characters; the rest is a sender's padding


class Result(NamedTuple):
    """One ``method=result`` with its reason and properties (``header.d`` -> ``example.com``)."""
    method: str
    result: str
    reason: str = ""
    properties: tuple[tuple[str, str], ...] = ()
    comment: str = ""           # its comments, e.g. OpenDMARC's "p=reject dis=none"

    def get(self, name: str) -> str:
        return next((value for key, value in self.properties if key == name), "")


class AuthResults(NamedTuple):
    authserv_id: str            # lower case, without a "/job-id" tail
    results: tuple[Result, ...]


class Verdict(NamedTuple):
    kind: str                   # AUTHENTICATED, FORGED or UNKNOWN
    reason: str                 # for the log: what decided, and by whom


# --------------------------------------------------------------------------- the parser

_TSPECIALS = set('()<>@,;:\\"/[]?=')


class _Reader:
    """A cursor over one header value that skips CFWS (white space and nested comments)."""

    def __init__(self, text: str):
        self.text, self.at = text, 0
        self.comments: list[str] = []

    def skip(self) -> None:
        text = self.text
        while self.at < len(text):
            char = text[self.at]
            if char in " \t\r\n":
                self.at += 1
            elif char == "(":
                self.comments.append(self._comment())
            else:
                return

    def _comment(self) -> str:
        depth, start, text = 0, self.at + 1, self.text
        while self.at < len(text):
            char = text[self.at]
            if char == "\\":
                self.at += 2
                continue
            depth += char == "("
            depth -= char == ")"
            self.at += 1
            if depth == 0:
                return text[start:self.at - 1].strip()
        return text[start:].strip()          # an unclosed comment runs to the end

    def peek(self) -> str:
        self.skip()
        return self.text[self.at] if self.at < len(self.text) else ""

    def take(self, char: str) -> bool:
        if self.peek() == char:
            self.at += 1
            return True
        return False

    def token(self) -> str:
        """A token (RFC 2045), or "" when none starts here."""
        self.skip()
        start, text = self.at, self.text
        while self.at < len(text) and text[self.at] > " " and text[self.at] not in _TSPECIALS \
                and text[self.at] != "\x7f":
            self.at += 1
        return text[start:self.at]

    def value(self) -> str:
        """A token or a quoted string (RFC 2045's value), unquoted."""
        if self.peek() != '"':
            return self.token()
        self.at += 1
        out, text = [], self.text
        while self.at < len(text) and text[self.at] != '"':
            if text[self.at] == "\\" and self.at + 1 < len(text):
                self.at += 1
            out.append(text[self.at])
            self.at += 1
        self.at += 1
        return "".join(out)

    def property_value(self) -> str:
        """A pvalue: a value, or an address or domain (``@example.com``, ``a.b@c.d``)."""
        if self.peek() == '"':
            return self.value()
        start, text = self.at, self.text
        while self.at < len(text) and text[self.at] not in ' \t\r\n;()"':
            self.at += 1
        return text[start:self.at]

    def skip_to_next_result(self) -> None:
        """Past anything not understood, up to the next ";" (never inside a comment or quotes)."""
        while (char := self.peek()) and char != ";":
            if char == '"':
                self.value()
            else:
                self.at += 1


def parse(value: str) -> AuthResults | None:
    """One Authentication-Results value, or None when it does not start with an authserv-id.

    Lenient where senders' MTAs are sloppy: what is not understood is skipped
    up to the next ";", and properties without a ``ptype.`` (Microsoft's
    ``action=none``) are kept under their bare name.
    """
    reader = _Reader(value)
    authserv_id = reader.value()
    if not authserv_id:
        return None
    while reader.peek() == "/":            # AuthservIDWithJobID: "mx.example.org/4ZK2p"
        reader.at += 1
        reader.token()
    if reader.peek() == "=":               # "spf=pass ...": Microsoft 365 writes no authserv-id
        return None
    if reader.peek().isdigit():            # the version, "example.org 1; ..."
        reader.token()
    results: list[Result] = []
    for _ in range(MAX_RESULTS):
        if not reader.take(";"):
            break
        result = _result(reader)
        if result is not None:
            results.append(result)
        reader.skip_to_next_result()
    return AuthResults(authserv_id.lower(), tuple(results))


def _result(reader: _Reader) -> Result | None:
    method = reader.token().lower()
    if not method or method == "none":
        return None
    if reader.take("/"):                   # a method version, "dkim/1=pass"
        reader.token()
    if not reader.take("="):
        return None
    del reader.comments[:]
    result = reader.token().lower()
    reason, properties = "", []
    while (name := reader.token().lower()):
        if reader.take("."):
            name = f"{name}.{reader.token().lower()}"
        if not reader.take("="):
            break
        found = reader.value() if name == "reason" else reader.property_value()
        if name == "reason" and not reason:
            reason = found
        else:
            properties.append((name, found))
    reader.peek()          # a comment after the last property is this result's too (rspamd's "(policy=reject)")
    return Result(method, result, reason, tuple(properties), "; ".join(filter(None, reader.comments)))


# --------------------------------------------------------------------------- the verdict

def trusted(values, authserv_ids) -> tuple[AuthResults, ...]:
    """The parsed headers among `values` that carry one of `authserv_ids`; the rest is ignored."""
    wanted = {one.lower() for one in authserv_ids}
    found = []
    for value in list(values)[:MAX_HEADERS]:
        if not any(one in value[:MAX_VALUE_CHARS].lower() for one in wanted):
            continue                       # cheap: most are another host's, or a sender's
        parsed = parse(value[:MAX_VALUE_CHARS])
        if parsed is not None and parsed.authserv_id in wanted:
            found.append(parsed)
    return tuple(found)


def verdict(values, from_domain: str, authserv_ids) -> Verdict:
    """What the trusted Authentication-Results (of `values`, topmost first) say about mail From `from_domain`."""
    headers = trusted(values, authserv_ids)
    if not headers:
        return Verdict(UNKNOWN, f"no Authentication-Results by {' or '.join(authserv_ids)}")
    from_domain = from_domain.lower().rstrip(".")
    forged = next(((result, header.authserv_id) for header in headers for result in header.results
                   if result.method == "dmarc" and result.result == "fail"), None)
    if forged:
        return Verdict(FORGED, _said(*forged))
    # Only the topmost header that speaks of a method speaks for the MTA: milters prepend theirs,
    # and OpenDMARC strips none of a sender's (OpenDKIM only those claiming dkim).
    dmarc, by_dmarc = _topmost(headers, "dmarc")
    dkim, by_dkim = _topmost(headers, "dkim")
    passed = next((r for r in dmarc if r.result == "pass" and
                   (r.get("header.from") or from_domain).lower().rstrip(".") == from_domain), None)
    if passed:
        return Verdict(AUTHENTICATED, _said(passed, by_dmarc))
    signed = next((r for r in dkim if r.result == "pass" and _signs_for(_signing_domain(r), from_domain)), None)
    if signed:
        return Verdict(AUTHENTICATED, _said(signed, by_dkim))
    if dmarc or dkim:
        return Verdict(UNKNOWN, _said(dmarc[0], by_dmarc) if dmarc else _said(dkim[0], by_dkim))
    return Verdict(UNKNOWN, f"no dmarc or dkim result by {headers[0].authserv_id}")


def _topmost(headers: tuple[AuthResults, ...], method: str) -> tuple[list[Result], str]:
    """The `method` results of the first header that has any, and its authserv-id."""
    for header in headers:
        found = [result for result in header.results if result.method == method]
        if found:
            return found, header.authserv_id
    return [], ""


class Held(NamedTuple):
    """What the verdict on the From means for this mail."""
    forged: bool = False     # keep it in held/; neither post nor answer
    unproven: str = ""       # why a response is held and answered so (TOROKIKI_REQUIRE_AUTH=create)
    note: str = ""           # for the log: a held mail submitted all the same (replay --force)


def held(verdict: Verdict, require_auth: str, force: bool) -> Held:
    if verdict.kind == AUTHENTICATED:
        return Held()
    if force:
        return Held(note=f"submitted although {verdict.kind} (replay --force): {verdict.reason}")
    if verdict.kind == FORGED:
        return Held(forged=True)
    return Held(unproven=verdict.reason) if require_auth == "create" else Held()


def _said(result: Result, by: str) -> str:
    """"dmarc=fail (p=reject dis=none) header.from=example.com by mx.torokiki.net"."""
    comment = f" ({result.comment})" if result.comment else ""
    detail = "".join(f" {key}={result.get(key)}" for key in ("header.from", "header.d") if result.get(key))
    return f"{result.method}={result.result}{comment}{detail} by {by}"


def _signing_domain(result: Result) -> str:
    """header.d, else the domain of header.i (Gmail writes only header.i=@gmail.com)."""
    return (result.get("header.d") or result.get("header.i").rpartition("@")[2]).lower().rstrip(".")


def _signs_for(signer: str, from_domain: str) -> bool:
    """The signer is the From domain or one of its parents, and not a bare top-level name."""
    return "." in signer and bool(from_domain) and (from_domain == signer or from_domain.endswith("." + signer))


_DOMAIN = re.compile(r"[^@\s]+@([^@\s>]+)$")


def domain_of(address: str) -> str:
    found = _DOMAIN.search(address.strip().strip("<>"))
    return found[1].lower().rstrip(".") if found else ""
