"""Adapter: the Torokiki website's API, over HTTP with requests.

Every exchange ends as a `WebsiteAnswer` value, never an exception: the
contract's statuses are sorted into saved / found / not-found / refused
(4xx: retrying will not help) / unavailable (5xx, timeouts, network errors,
anything unexpected: retrying may help).  Requests go to the API URL; only its
scheme, host and port replace the public site's.  `requests` is imported on
first use, so mail decided from its headers never pays for it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit

from . import __version__

if TYPE_CHECKING:
    from .urls import ContentUrl

SAVED_STATUSES = (301, 302, 303, 201)
USER_AGENT = f"torokiki-pipe/{__version__}"


@dataclass(frozen=True)
class WebsiteAnswer:
    """The website's answer, sorted into what the gateway does next."""
    status: str                 # "saved" | "found" | "not-found" | "refused" | "unavailable"
    detail: str = ""            # one line for people and logs
    location: str | None = None # the new response's URL, when saved
    content: dict | None = None # the content object, when found
    exchange: str = ""          # request and response as text, API key redacted

    @property
    def temporary(self) -> bool:
        return self.status == "unavailable"


class Website:
    def __init__(self, api_url: str, api_key: str, timeout: float, site_url: str):
        self.api_url = api_url.rstrip("/")
        self.site_url = site_url.rstrip("/")
        self._api_key = api_key
        # Connect fails fast; the read may take the rest of the budget.
        self.timeout = (min(10.0, timeout), timeout)
        self._session = None

    def _http(self):
        if self._session is None:
            import requests

            self._session = requests.Session()
            self._session.headers["User-Agent"] = USER_AGENT
            self._session.trust_env = False   # no proxy from the MTA's environment
        return self._session

    def fetch(self, url: ContentUrl) -> WebsiteAnswer:
        return self._exchange("GET", url.path, headers={"Accept": "application/json"})

    def submit(self, url: ContentUrl, content: dict, idempotency_key: str) -> WebsiteAnswer:
        body = JsonBody.of(content)
        headers = {"Content-Type": "application/json", "Accept": "application/json",
                   "X-API-Key": self._api_key, "Idempotency-Key": idempotency_key}
        return self._exchange("POST", url.collection_path, headers=headers, body=body)

    def describe_request(self, method: str, path: str, headers: dict, body: JsonBody | None) -> str:
        lines = [f"{method} {self.api_url}{path}"]
        lines += [f"{k}: {self.redact(v)}" for k, v in headers.items()]
        if body is not None:
            # Only the start of the body: a 25 MB attachment has no place in a log.
            shown = self.redact(body.start(4000).decode("utf-8", "replace"))
            lines += ["", shown + (f"\n… ({len(body) - 4000} more bytes)" if len(body) > 4000 else "")]
        return "\n".join(lines)

    def redact(self, text: str) -> str:
        return text.replace(self._api_key, "<redacted>") if self._api_key else text

    def _exchange(self, method: str, path: str, headers: dict, body: JsonBody | None = None) -> WebsiteAnswer:
        import requests

        request_text = self.describe_request(method, path, headers, body)
        try:
            response = self._http().request(method, self.api_url + path, headers=headers, data=body,
                                            timeout=self.timeout, allow_redirects=False)
        except requests.Timeout:
            return WebsiteAnswer("unavailable", f"no answer within {self.timeout[1]:g} s",
                                 exchange=request_text + "\n\n(timed out)")
        except requests.RequestException as error:
            detail = _network_detail(error)
            return WebsiteAnswer("unavailable", detail, exchange=f"{request_text}\n\n({detail})")
        exchange = request_text + "\n\n" + self._describe_response(response)
        return self._classify(method, response, exchange)

    def _describe_response(self, response) -> str:
        lines = [f"HTTP {response.status_code} {response.reason}"]
        lines += [f"{k}: {v}" for k, v in response.headers.items()]
        lines += ["", _shorten(self.redact(response.content[:8000].decode("utf-8", "replace")))]
        return "\n".join(lines)

    def _classify(self, method: str, response, exchange: str) -> WebsiteAnswer:
        code = response.status_code
        if method == "POST" and code in SAVED_STATUSES and response.headers.get("Location"):
            location = urljoin(self.site_url + "/", response.headers["Location"])
            return WebsiteAnswer("saved", f"saved as {location}", location=self._public(location),
                                 exchange=exchange)
        if method == "GET" and code == 200:
            try:
                content = response.json()
            except ValueError:
                return WebsiteAnswer("unavailable", "the website sent content that is not JSON",
                                     exchange=exchange)
            if not isinstance(content, dict):
                return WebsiteAnswer("unavailable", "the website sent an unexpected answer",
                                     exchange=exchange)
            return WebsiteAnswer("found", "found", content=content, exchange=exchange)
        if method == "GET" and code == 404:
            return WebsiteAnswer("not-found", "no such content", exchange=exchange)
        if 400 <= code < 500:
            return WebsiteAnswer("refused", f"the website refused it (HTTP {code}){_reason(response)}",
                                 exchange=exchange)
        return WebsiteAnswer("unavailable", f"the website answered HTTP {code}", exchange=exchange)

    def _public(self, location: str) -> str:
        """A Location naming the API host is shown to people under the public site's host."""
        parts, api = urlsplit(location), urlsplit(self.api_url)
        if (parts.scheme, parts.netloc) == (api.scheme, api.netloc):
            return self.site_url + parts.path
        return location


class JsonBody:
    """The content object as JSON, streamed: the attachment is never copied into one big string.

    The content holds the attachment as bytes, or as the mail's own base64 text
    (`mime.Base64Text`: anything with ``len()`` and ``chunks()``); on the wire it
    becomes the contract's base64 string.  Iterable with a known length, so
    requests sends it chunk by chunk with a Content-Length.
    """

    CHUNK = 1 << 20

    def __init__(self, parts: list):
        self._parts = parts            # bytes, or objects with len() and chunks()
        self._length = sum(len(p) for p in parts)

    @classmethod
    def of(cls, content: dict) -> "JsonBody":
        attachment = content.get("Attachment")
        data = attachment.get("data") if isinstance(attachment, dict) else None
        if data is None or isinstance(data, str):
            return cls([json.dumps(content, ensure_ascii=False).encode("utf-8")])
        if isinstance(data, bytes):
            import base64

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


def _reason(response) -> str:
    try:
        message = response.json().get("error")
    except (ValueError, AttributeError):
        message = None
    return f": {' '.join(str(message).split())[:200]}" if message else ""


def _network_detail(error) -> str:
    text = str(error)
    for known in ("Name or service not known", "Connection refused", "Connection reset",
                  "Temporary failure in name resolution", "No route to host"):
        if known in text:
            return known.lower()
    return type(error).__name__


def _shorten(text: str, limit: int = 4000) -> str:
    return text if len(text) <= limit else text[:limit] + f"\n… ({len(text) - limit} more characters)"
