"""Adapter: the Torokiki website's API, over HTTP (the standard library's http.client).

Every exchange ends as a `WebsiteAnswer` value, never an exception.  `classify`
(pure) sorts what came back into what the gateway does next:

    saved        POST 201/301/302/303 whose Location is content on the configured site;
                 a 201 without such a Location is saved too, with no address (maybe_saved)
    found        GET 200: the content object
    too-large    GET 200 whose content is over MAX_CONTENT_BYTES: not read; the sender gets its link
    withheld     GET 200 whose file holds the API key: not mailed; the sender gets its link
    not-found    GET 404
    refused      any other 4xx: the sender's submission; retrying will not help
    key-refused  401, 403, 407: the website refused the gateway itself, an administrator's
                 mistake (TOROKIKI_API_KEY); temporary, so the MTA keeps the mail
    unavailable  5xx, 408, 429, any other status, a redirect elsewhere, timeouts, network
                 errors, an answer not complete within the deadline: temporary

`maybe_saved` says whether a POST may have been stored although its answer is not
a clean "saved": true once the whole request reached the website and the answer
was 5xx (but 503), 2xx/3xx without a usable Location, a timeout or a broken
connection; false for a clean "saved", a 503, a refused connection, DNS failure,
any 4xx, and GETs.

Bounded, whatever the website does:

- One deadline for the whole exchange (connect, send, headers, body):
  TOROKIKI_HTTP_TIMEOUT, of which connecting takes at most CONNECT_TIMEOUT.
  Every blocking socket operation gets a timeout of what remains, the deadline
  is checked between chunks, and a watchdog thread shuts the socket down when
  it passes: a website trickling its headers a byte at a time would otherwise
  never let a per-operation timeout expire.  (Name resolution cannot be
  interrupted; the resolver's own timeouts and the run's alarm bound it.)
- The answer is read as a stream, up to MAX_CONTENT_BYTES for a GET's content
  and MAX_ANSWER_BYTES for anything else; compressed answers (asked for
  identity) are decoded within the same cap.
- Nothing the website sends reaches the sender, the log, the journal or logs/
  with the API key in it: every string an answer carries passes through
  `Redactor.answer`, once, at the end of `_exchange`.

Requests go to the API URL; only its scheme, host and port replace the public
site's.  http.client is imported on first use, so mail decided from its
headers never pays for it.
"""

from __future__ import annotations

import base64
import binascii
import http.client
import json
import os
import re
import socket
import threading
import time
import zlib
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import urljoin, urlsplit

from torokiki_pipe.stages.s5_understand.urls import BadUrl, ContentUrl, parse_content_url
from torokiki_pipe.stages.s8_record import one_line
from torokiki_pipe.version import __version__

if TYPE_CHECKING:
    from typing import Any, Literal

    # The website's answer, sorted (`classify`).
    AnswerStatus = Literal["saved", "found", "too-large", "withheld", "not-found", "refused",
                           "key-refused", "unavailable"]
SAVED_STATUSES = (301, 302, 303, 201)
# The website refusing the gateway's credentials (407: a proxy in front of it).
KEY_REFUSED_STATUSES = (401, 403, 407)
# 4xx that say "not now" rather than "not this": the request timed out, too many requests.
TEMPORARY_STATUSES = (408, 429)
USER_AGENT = f"torokiki-pipe/{__version__}"
CONNECT_TIMEOUT = 10.0
# A GET's content is mailed back.  Its JSON carries the file as base64 and the
# reply carries it as base64 again (plus 2.6 % of line breaks), so the reply is
# about as large as the JSON: 15 MB keeps it below the 20 MB that common mailbox
# providers accept (Outlook.com 20 MB, Gmail 25 MB), with room for the text.
MAX_CONTENT_BYTES = 15 * 1024 * 1024
# Anything else (a POST's answer, an error page) is read for a status, a Location
# and a short error text only.
MAX_ANSWER_BYTES = 64 * 1024
READ_CHUNK = 64 * 1024
EXCERPT_CHARS = 8000          # of a body, kept in the exchange for logs/failed_https/


@dataclass(frozen=True)
class WebsiteAnswer:
    """The website's answer, sorted into what the gateway does next; every string redacted."""
    status: AnswerStatus
    detail: str = ""            # one line for people and logs
    location: str | None = None # the new response's public URL, when saved and known
    content: dict | None = None # the content object, when found
    exchange: str = ""          # request and response as text, for logs/failed_https/
    maybe_saved: bool = False   # a POST may be stored although the answer is not a clean "saved"

    @property
    def temporary(self) -> bool:
        return self.status in ("unavailable", "key-refused")


@dataclass(frozen=True)
class Received:
    """An HTTP answer as it arrived, before it is judged: the input of `classify`."""
    code: int
    reason: str = ""
    headers: tuple = ()         # ((name, value), ...) as sent
    body: bytes = b""           # at most the cap (+ 1 byte), decoded from any Content-Encoding
    ending: str = "complete"    # "complete" | "over-cap" | "overrun" (deadline) | "broken" | "undecodable"
    cap: int = MAX_ANSWER_BYTES # the most that was to be read

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)


@dataclass(frozen=True)
class Place:
    """Where an exchange went, for judging its answer."""
    site_url: str               # the public site
    api_url: str                # where requests go
    request_url: str            # this request's URL (a relative Location is resolved against it)
    timeout: float              # the whole exchange's deadline, in seconds


# --------------------------------------------------------------------------- judging (pure)

def classify(method: str, received: Received, place: Place, redactor: Redactor) -> WebsiteAnswer:
    """What an HTTP answer means, per the contract (torokiki-api.md)."""
    code, post = received.code, method == "POST"
    if post and code in SAVED_STATUSES:
        given = received.header("Location")
        location = public_location(given, place)
        if location:
            return WebsiteAnswer("saved", f"saved as {location}", location=location)
        if code == 201:
            # Created: the contract's "saved", only the address is missing or not the site's.
            # Quoting a foreign Location would hand the sender another site's link.
            why = "no Location" if not given else "a Location that is not on the site"
            return WebsiteAnswer("saved", f"saved, but the website gave {why}", maybe_saved=True)
        where = "to another site" if given else "without a Location"
        return WebsiteAnswer("unavailable", f"the website redirected (HTTP {code}) {where}", maybe_saved=True)
    if not post and code == 200:
        if received.ending == "over-cap":
            return WebsiteAnswer("too-large", f"content larger than {_megabytes(MAX_CONTENT_BYTES)}: link sent")
        if received.ending != "complete":
            return WebsiteAnswer("unavailable", _unfinished(received, place))
        content = _json(received.body)
        if content is None:
            return WebsiteAnswer("unavailable", "the website sent content that is not JSON")
        if not isinstance(content, dict):
            return WebsiteAnswer("unavailable", "the website sent an unexpected answer")
        return WebsiteAnswer("found", "found", content=content)
    if not post and code == 404:
        return WebsiteAnswer("not-found", "no such content")
    reason = _reason(received, redactor)
    if code in KEY_REFUSED_STATUSES:
        if post:
            return WebsiteAnswer("key-refused", f"the website refused the gateway's API key (HTTP {code}{reason}); "
                                                f"fix TOROKIKI_API_KEY")
        return WebsiteAnswer("key-refused", f"the website refused the gateway (HTTP {code}{reason}); "
                                            f"check TOROKIKI_API_URL and TOROKIKI_API_KEY")
    if code in TEMPORARY_STATUSES:
        return WebsiteAnswer("unavailable", f"the website asked to try later (HTTP {code}{reason})")
    if 400 <= code < 500:
        return WebsiteAnswer("refused", f"the website refused it (HTTP {code}){reason}")
    # 5xx, and anything the contract does not name: the website's error, maybe after storing.
    # 503 is the one that says the request was not taken on (RFC 9110 15.6.4: "currently
    # unable to handle"), which is how a website down for maintenance answers.
    return WebsiteAnswer("unavailable", f"the website answered HTTP {code}",
                         maybe_saved=post and 200 <= code and code != 503)


def failure(method: str, phase: str, error: BaseException | None, place: Place, overrun: bool) -> WebsiteAnswer:
    """An exchange that broke before an answer's head arrived, in `phase` (connect, send, headers)."""

    if isinstance(error, _BadHeader):     # configuration, like a refused key: nothing was sent
        return WebsiteAnswer("key-refused", f"the {error} header holds a character HTTP does not allow; "
                                            f"check TOROKIKI_API_KEY")
    if isinstance(error, socket.timeout) and not overrun and phase == "connect":
        detail = f"no connection within {min(CONNECT_TIMEOUT, place.timeout):g} s"
    elif overrun or isinstance(error, socket.timeout):
        detail = f"no complete answer within {place.timeout:g} s"
    else:
        detail = network_detail(error)
    # Only a request that reached the website whole can have been stored.
    return WebsiteAnswer("unavailable", detail, maybe_saved=method == "POST" and phase == "headers")


class KeyProbe(NamedTuple):
    """What the key probe (`Website.probe_key`) found; `detail` is one redacted line."""
    verdict: str        # "accepted" | "refused" | "unavailable" | "untested" | "unexpected"
    detail: str
    code: int = 0       # the HTTP status, 0 when none came


# The probe's target: the first seed's collection, which every website of the contract has.
KEY_PROBE_PATH = "/image/1/response"
# What a website that checks the key before the body answers an empty object (README, The website's API).
KEY_ACCEPTED_STATUSES = (400, 422)


def judge_key_probe(received: Received, redactor: Redactor) -> KeyProbe:
    """The key probe's answer, sorted (pure)."""
    code = received.code
    said = f"HTTP {code}{_reason(received, redactor)}"
    if code in KEY_ACCEPTED_STATUSES:
        return KeyProbe("accepted", f"an empty object was refused as content ({said}), not the key", code)
    if code in KEY_REFUSED_STATUSES:
        return KeyProbe("refused", f"the website refused the API key ({said})", code)
    if code in TEMPORARY_STATUSES or code >= 500:
        return KeyProbe("unavailable", f"the website is unavailable ({said})", code)
    if 200 <= code < 400:
        # A website that takes {} as a response does not check what the contract asks for.
        return KeyProbe("unexpected", f"the website answered {said} to an empty object: it may have saved it", code)
    return KeyProbe("untested", f"the website answered {said}, which says nothing about the key", code)


def public_location(location: str | None, place: Place) -> str | None:
    """The Location as content on the configured site, rebuilt from its ids; None when it is not.

    A Location is quoted to people as "saved at", so only the site's own content
    qualifies: on the site's or the API's host and port (http or https: the URL
    is rebuilt on the site's own scheme), naming a response; userinfo, other
    hosts, other schemes (javascript:, ftp:), scheme-relative //host and
    anything added after the path (?query, #fragment) never reach the sender.
    """

    if not location or not location.isprintable() or len(location) > 2000:
        return None
    try:
        parts = urlsplit(urljoin(place.request_url, location.strip()))
    except ValueError:
        return None
    hosts = {urlsplit(place.site_url).netloc.lower(), urlsplit(place.api_url).netloc.lower()}
    if parts.scheme.lower() not in ("http", "https") or parts.netloc.lower() not in hosts:
        return None
    try:
        url = parse_content_url(place.site_url.rstrip("/") + parts.path, place.site_url)
    except BadUrl:
        return None
    return url.canonical(place.site_url) if url.response is not None else None


def _unfinished(received: Received, place: Place) -> str:
    if received.ending == "overrun":
        return f"no complete answer within {place.timeout:g} s"
    if received.ending == "undecodable":
        return f"the website sent an answer in an encoding it was not asked for ({received.header('Content-Encoding')})"
    return "the website broke off its answer"


def _json(body: bytes):
    try:
        return json.loads(body)
    except (ValueError, RecursionError):   # RecursionError: a hostile [[[[...]]]] nesting
        return None


def _reason(received: Received, redactor: Redactor) -> str:
    """': the website's error text', cut short, or ''."""
    if received.ending != "complete" or len(received.body) > MAX_ANSWER_BYTES:
        return ""
    value = _json(received.body)
    message = value.get("error") if isinstance(value, dict) else None
    if not isinstance(message, str) or not message.strip():
        return ""
    # Redacted before it is cut, so that a cut cannot leave half a key behind.
    return ": " + redactor.cut(one_line(message), 200)


def network_detail(error) -> str:
    """A network error in a few plain words, for people and logs."""
    text = str(error)
    for known in ("Name or service not known", "Connection refused", "Connection reset",
                  "Temporary failure in name resolution", "No route to host", "Broken pipe"):
        if known in text:
            return known.lower()
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    return type(error).__name__


def _megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):g} MB"


# --------------------------------------------------------------------------- redaction (pure)

class Redactor:
    """Takes the API key out of text, in every form a website is cheaply caught echoing it.

    Recognised (one regular expression, plus literal searches):
    - the key itself, in any letter case;
    - each character also as a %XX URL escape (any hex case; whole or partly encoded),
      a JSON \\uXXXX or Python \\xXX escape, an HTML &#NN; / &#xHH; entity;
    - up to 8 white-space characters (or JSON \\n \\r \\t escapes) between any two
      characters: a key folded into a header or wrapped in a text (keys of 8
      characters and more; shorter keys would match ordinary words);
    - the key in hex (any case), and in base64 (standard and URL-safe, at each
      of the three byte alignments inside a longer base64 text, so a key
      echoed inside "Basic ..." is found too).
    A fetched content's file is not rewritten but decoded and searched
    (`holds_secret`): one that holds the key is not mailed at all.
    Not recognised: double encodings, a key cut across two separately echoed
    strings, forms split by more than 8 white-space characters.
    """

    MARK = "<redacted>"

    def __init__(self, secret: str):
        self.secret = secret
        self._pattern = _key_pattern(secret) if secret else None
        self._base64 = _base64_cores(secret.encode("utf-8")) if secret else ()
        # Long enough to hold the key in its longest recognised form.
        self.margin = 40 * len(secret)

    def text(self, text: str) -> str:
        # Every recognised form takes at least a character per character of the key:
        # a shorter string (most of a big JSON's) cannot hold it.
        if self._pattern is None or len(text) < len(self.secret):
            return text
        text = self._pattern.sub(self.MARK, text)
        for core in self._base64:
            if core in text:
                text = text.replace(core, self.MARK)
        return text

    def cut(self, text: str, limit: int) -> str:
        """The first `limit` characters of the redacted text; a key across the cut is redacted whole."""
        if len(text) <= limit:
            return self.text(text)
        return self.text(text[:limit + self.margin])[:limit]

    def holds_secret(self, base64_text: str) -> bool:
        """Whether the file this base64 text decodes to holds the key (in any letter case).

        Decoded as the reply will decode it (characters outside the alphabet
        skipped), so line breaks or junk put between the letters hide nothing."""
        if not self.secret:
            return False
        try:
            data = base64.b64decode(base64_text, validate=False)
        except (binascii.Error, ValueError):
            return False                     # not a file the reply can attach either
        secret = self.secret.encode("utf-8")
        return secret in data or secret.lower() in data.lower()

    def answer(self, answer: WebsiteAnswer) -> WebsiteAnswer:
        """The one redaction point: every string the answer carries, content included."""
        content = answer.content
        if content is not None:
            attachment: Any = content.get("Attachment")
            data = attachment.get("data") if isinstance(attachment, dict) else None
            if isinstance(data, str):
                if self.holds_secret(data):
                    # Mailing the file would hand the key to whoever asked for it;
                    # rewriting it would corrupt it.  The sender gets the link.
                    return WebsiteAnswer("withheld", "the content's file holds the gateway's API key: link sent",
                                         exchange=self.text(answer.exchange))
                content = {**content, "Attachment": {**attachment, "data": ""}}
            content = self._strings(content)
            if isinstance(data, str):        # checked above, as a file: not a text to rewrite
                content["Attachment"]["data"] = data
        return replace(answer, detail=self.text(answer.detail), exchange=self.text(answer.exchange),
                       location=self.text(answer.location) if answer.location else answer.location,
                       content=content)

    def _strings(self, value):
        """`value` with every string in it redacted, keys too: iterative, since JSON can
        nest deeper than the stack."""
        def clean(item):
            if isinstance(item, str):
                return self.text(item)
            if isinstance(item, dict):
                copy: dict | list = {}
                work.append((item, copy))
                return copy
            if isinstance(item, list):
                copy = []
                work.append((item, copy))
                return copy
            return item

        work: list = []
        top = clean(value)
        while work:
            source, target = work.pop()
            if isinstance(source, dict):
                for key, item in source.items():
                    target[self.text(key) if isinstance(key, str) else key] = clean(item)
            else:
                target.extend(clean(item) for item in source)
        return top


def _key_pattern(secret: str):
    def hexdigits(number: int, width: int) -> str:
        return "".join(f"[{d}{d.upper()}]" if d.isalpha() else d for d in f"{number:0{width}x}")

    def forms(char: str) -> str:
        cased = {char, char.lower(), char.upper()}
        alternatives = ["[" + "".join(re.escape(c) for c in sorted(cased)) + "]"]
        alternatives.append("".join("%" + hexdigits(byte, 2) for byte in char.encode("utf-8")))
        alternatives.append(r"\\[uU]" + hexdigits(ord(char), 4))
        if ord(char) < 256:
            alternatives.append(r"\\[xX]" + hexdigits(ord(char), 2))
        alternatives.append(f"&#0*{ord(char)};")
        alternatives.append("&#[xX]0*" + hexdigits(ord(char), 0) + ";")
        return "(?:" + "|".join(alternatives) + ")"

    gap = r"(?:\s|\\[nrt]){0,8}" if len(secret) >= 8 else ""
    whole_hex = "".join(hexdigits(byte, 2) for byte in secret.encode("utf-8"))
    return re.compile(gap.join(forms(c) for c in secret) + "|" + whole_hex)


def _base64_cores(secret: bytes) -> tuple[str, ...]:
    """The parts of base64 text that only the key's bytes decide, at each of the three
    alignments the key can have inside longer data; standard and URL-safe alphabets."""

    cores = set()
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + secret).decode("ascii")
        start = (offset * 8 + 5) // 6                 # the first character holding no filler bits
        end = (offset + len(secret)) * 8 // 6         # the last one holding only the key's bits
        core = encoded[start:end]
        if len(core) >= 8:                            # shorter would turn up in any large file
            cores.add(core)
            cores.add(core.translate(str.maketrans("+/", "-_")))
    return tuple(sorted(cores))


# --------------------------------------------------------------------------- the exchange (effects)

class Website:
    def __init__(self, api_url: str, api_key: str, timeout: float, site_url: str):
        self.api_url = api_url.rstrip("/")
        self.site_url = site_url.rstrip("/")
        self._api_key = api_key
        self.redactor = Redactor(api_key)
        self.timeout = float(timeout)      # the whole exchange, connect included

    def fetch(self, url: ContentUrl) -> WebsiteAnswer:
        return self._exchange("GET", url.path, headers={"Accept": "application/json"})

    def submit(self, url: ContentUrl, content: dict, idempotency_key: str) -> WebsiteAnswer:
        body = JsonBody.of(content)
        headers = {"Content-Type": "application/json", "Accept": "application/json",
                   "X-API-Key": self._api_key, "Idempotency-Key": idempotency_key}
        return self._exchange("POST", url.collection_path, headers=headers, body=body)

    def probe_key(self) -> KeyProbe:
        """POST an empty object to the first seed's collection: does the website take the key?

        Nothing can be saved (the object has no InspiredBy, no Text, no
        Attachment), and no Idempotency-Key is sent, so nothing is remembered
        either; the same deadline and redaction as every exchange.
        """
        headers = {"Content-Type": "application/json", "Accept": "application/json", "X-API-Key": self._api_key}
        place = Place(self.site_url, self.api_url, self.api_url + KEY_PROBE_PATH, self.timeout)
        received, broken = self._talk("POST", KEY_PROBE_PATH, headers, JsonBody([b"{}"]))
        if received is None:
            answer = failure("POST", broken[0], broken[1], place, broken[2])
            verdict = "refused" if answer.status == "key-refused" else "unavailable"
            return KeyProbe(verdict, self.redact(answer.detail))
        return judge_key_probe(received, self.redactor)

    def describe_request(self, method: str, path: str, headers: dict, body: JsonBody | None) -> str:
        lines = [f"{method} {self.api_url}{path}"]
        lines += [f"{k}: {self.redact(v)}" for k, v in headers.items()]
        if body is not None:
            # Only the start of the body: a 25 MB attachment has no place in a log.
            shown = self.redactor.cut(body.start(4000 + self.redactor.margin).decode("utf-8", "replace"), 4000)
            lines += ["", shown + (f"\n… ({len(body) - 4000} more bytes)" if len(body) > 4000 else "")]
        return "\n".join(lines)

    def redact(self, text: str) -> str:
        return self.redactor.text(text)

    def _exchange(self, method: str, path: str, headers: dict, body: JsonBody | None = None) -> WebsiteAnswer:
        place = Place(self.site_url, self.api_url, self.api_url + path, self.timeout)
        request_text = self.describe_request(method, path, headers, body)
        received, broken = self._talk(method, path, headers, body)
        if received is None:
            phase, error, overrun = broken
            answer = failure(method, phase, error, place, overrun)
            exchange = f"{request_text}\n\n({answer.detail})"
        else:
            answer = classify(method, received, place, self.redactor)
            exchange = request_text + "\n\n" + self._describe_response(received, place)
        return self.redactor.answer(replace(answer, exchange=exchange))

    def _talk(self, method: str, path: str, headers: dict, body: JsonBody | None):
        """(Received, None), or (None, (phase, error, overrun)) when no answer's head arrived."""

        deadline = time.monotonic() + self.timeout
        api = urlsplit(self.api_url)
        target = (api.path.rstrip("/") + path) or "/"
        https = api.scheme == "https"
        host: str = api.hostname   # type: ignore[assignment]  # config.load refuses an API URL without one
        connection = http.client.HTTPConnection(host, api.port or (443 if https else 80),
                                                timeout=min(CONNECT_TIMEOUT, self.timeout))
        if https:
            connection.default_port = 443       # no ":443" in the Host header
        watchdog = _Watchdog(self.timeout)
        phase, sock = "connect", None
        try:
            connection.connect()                # TCP; TLS below, under the watchdog too
            sock = connection.sock
            watchdog.watch(sock)
            if https:
                import ssl

                _remaining(sock, deadline)
                # Connecting includes TLS.  The socket's timeout is never None: the connection set one.
                sock.settimeout(min(CONNECT_TIMEOUT, sock.gettimeout()))   # type: ignore[type-var]
                sock = connection.sock = ssl.create_default_context().wrap_socket(
                    sock, server_hostname=api.hostname)
            phase = "send"
            broke = _send(connection, sock, method, target, headers, body, deadline)
            if broke is None:
                phase = "headers"       # the whole request reached the website
            _remaining(sock, deadline)
            try:
                response = connection.getresponse()
            except (OSError, http.client.HTTPException) as error:
                # A website that answered early and hung up would be heard here; when it
                # did not answer, the error that broke the sending is the one to tell.
                return None, (phase, broke or error, watchdog.fired)
            if watchdog.fired:
                # http.client takes the end of the stream for the end of the head: the
                # watchdog's shutdown may have cut it, a Location with it.
                return None, (phase, None, True)
            return _read(response, sock, method, deadline, watchdog), None
        except (OSError, http.client.HTTPException, _Overrun, _BadHeader) as error:
            return None, (phase, error, isinstance(error, _Overrun) or watchdog.fired)
        finally:
            watchdog.stop()
            connection.close()
            if sock is not None:
                sock.close()

    def _describe_response(self, received: Received, place: Place) -> str:
        redactor = self.redactor
        lines = [f"HTTP {received.code} {redactor.cut(received.reason, 200)}"]
        lines += [f"{k}: {redactor.cut(str(v), 1000)}" for k, v in received.headers]
        text = received.body[:EXCERPT_CHARS + redactor.margin].decode("utf-8", "replace")
        lines += ["", redactor.cut(text, EXCERPT_CHARS)]
        if len(text) > EXCERPT_CHARS:
            lines.append(f"… ({len(received.body)} bytes read in all)")
        if received.ending == "over-cap":
            lines.append(f"(stopped reading: more than the {received.cap} bytes the gateway reads)")
        elif received.ending != "complete":
            lines.append(f"({_unfinished(received, place)}; {len(received.body)} bytes read)")
        return "\n".join(lines)


class _Overrun(Exception):
    """The exchange's deadline passed between two chunks."""


class _BadHeader(Exception):
    """A request header's value holds a character HTTP forbids; str() is the header's name."""


def _remaining(sock, deadline: float) -> None:
    """Give the socket's next operation no more time than the exchange has left."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise _Overrun()
    sock.settimeout(left)


def _send(connection, sock, method: str, target: str, headers: dict, body, deadline: float):
    """Send the request: None when all of it went, else the error that broke it off."""
    connection.putrequest(method, target, skip_accept_encoding=True)
    for name, value in headers.items():
        try:
            connection.putheader(name, value)
        except ValueError as error:     # a line break in a value (the key comes from configuration)
            raise _BadHeader(name) from error
    connection.putheader("User-Agent", USER_AGENT)
    connection.putheader("Accept-Encoding", "identity")   # sizes are capped as they come
    connection.putheader("Connection", "close")           # one exchange per process
    if body is not None:
        connection.putheader("Content-Length", str(len(body)))
    try:
        _remaining(sock, deadline)
        connection.endheaders()
        for chunk in body if body is not None else ():
            _remaining(sock, deadline)
            sock.sendall(chunk)
    except (BrokenPipeError, ConnectionResetError) as error:
        return error            # perhaps the website answered before reading it all: hear it out
    return None


def _read(response, sock, method: str, deadline: float, watchdog) -> Received:
    """Read the answer's body as a stream, within the cap and the deadline."""
    code = response.status
    cap = MAX_CONTENT_BYTES if method == "GET" and code == 200 else MAX_ANSWER_BYTES
    head = Received(code, response.reason or "", tuple(response.getheaders()), cap=cap)
    try:
        declared = int(response.getheader("Content-Length") or -1)
    except ValueError:
        declared = -1
    if cap == MAX_CONTENT_BYTES and declared > cap:
        return replace(head, ending="over-cap")      # not worth reading only to throw it away
    encoding = (response.getheader("Content-Encoding") or "identity").strip().lower()
    broken: tuple[type[Exception], ...]
    decoder, broken = None, (OSError, http.client.HTTPException)
    if encoding in ("gzip", "x-gzip", "deflate"):
        decoder = zlib.decompressobj(32 + 15)        # gzip or zlib framing
        broken += (zlib.error,)
    elif encoding not in ("identity", ""):
        return replace(head, ending="undecodable")
    body, ending = bytearray(), "complete"
    try:
        while True:
            _remaining(sock, deadline)
            chunk = response.read1(READ_CHUNK)
            if not chunk:
                break
            if decoder is not None:
                # At most what still fits (one byte more says "over"): a small
                # compressed bomb must not inflate past the cap.
                chunk = decoder.decompress(chunk, cap + 1 - len(body))
            body += chunk
            if len(body) > cap:
                ending = "over-cap"
                break
    except (_Overrun, socket.timeout):
        ending = "overrun"
    except broken:
        ending = "broken"
    if watchdog.fired:
        ending = "overrun"        # what looked like an end was the watchdog closing the socket
    elif ending == "complete" and ((response.length or 0) > 0 or (decoder is not None and not decoder.eof)):
        ending = "broken"         # closed before Content-Length bytes, or inside the compressed stream
    del body[cap + 1:]
    return replace(head, body=bytes(body), ending=ending)


class _Watchdog:
    """Shuts the exchange's connection down when the deadline passes, whatever it is blocked in.

    It keeps the descriptor's number, not the socket object: wrapping the socket
    in TLS moves the descriptor to a new object while the handshake runs."""

    def __init__(self, seconds: float):
        self.fired = False
        self._fd = -1
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def watch(self, sock) -> None:
        with self._lock:
            self._fd = sock.fileno()
            if self.fired:
                _shut(self._fd)

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            if self._fd >= 0:
                _shut(self._fd)

    def stop(self) -> None:
        """Before the connection is closed, so that a reused descriptor number is never touched."""
        self._timer.cancel()
        with self._lock:
            self._fd = -1


def _shut(fd: int) -> None:
    """Shut the connection on descriptor `fd` down both ways (through a duplicate: its owner closes it)."""
    try:
        duplicate = socket.socket(fileno=os.dup(fd))
    except OSError:
        return
    try:
        duplicate.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        duplicate.close()


class JsonBody:
    """The content object as JSON, streamed: the attachment is never copied into one big string.

    The content holds the attachment as bytes, or as the mail's own base64 text
    (`mime.Base64Text`: anything with ``len()`` and ``chunks()``); on the wire it
    becomes the contract's base64 string.  Iterable with a known length, so it
    is sent chunk by chunk with a Content-Length, the deadline checked between chunks.
    """

    CHUNK = 1 << 20

    def __init__(self, parts: list):
        self._parts = parts            # bytes, or objects with len() and chunks()
        self._length = sum(len(p) for p in parts)

    @classmethod
    def of(cls, content: dict) -> "JsonBody":
        attachment: Any = content.get("Attachment")
        data = attachment.get("data") if isinstance(attachment, dict) else None
        if data is None or isinstance(data, str):
            return cls([json.dumps(content, ensure_ascii=False).encode("utf-8")])
        if isinstance(data, bytes):
            data = base64.b64encode(data)
        rest = {k: v for k, v in content.items() if k != "Attachment"}
        head = json.dumps(rest, ensure_ascii=False)[:-1] + (", " if rest else "")
        head += f'"Attachment": {{"name": {json.dumps(attachment.get("name", ""), ensure_ascii=False)}, "data": "'
        return cls([head.encode("utf-8"), data, b'"}}'])

    def __len__(self) -> int:
        return self._length

    def __iter__(self):
        for part in self._parts:
            if isinstance(part, bytes):
                view = memoryview(part)
                for offset in range(0, len(view), self.CHUNK):
                    yield view[offset:offset + self.CHUNK]
            else:
                yield from part.chunks()

    def start(self, size: int) -> bytes:
        """The first `size` bytes, for logs: read no more of a big attachment than that."""
        taken = b""
        for part in self._parts:
            for chunk in ([part] if isinstance(part, bytes) else part.chunks(size)):
                taken += chunk[:size - len(taken)]
                if len(taken) >= size:
                    return taken
        return taken
