"""Content URLs, as the API contract defines them.

Pure: checks a URL someone wrote against the configured site before any
request is made (another host, userinfo tricks, IP addresses and other schemes
are refused, so the gateway can never be turned against another server), and
gives its canonical form.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

_PATH = re.compile(r"^/(image)/([0-9]{1,18})/(?:response|respond)(?:/([0-9]{1,18}))?/?$")


class BadUrl(ValueError):
    """str() says, in plain words, what is wrong with the URL."""


@dataclass(frozen=True)
class ContentUrl:
    """A piece of content on the website: a seed image or one of its responses."""
    kind: str               # the seed's content type: only "image" exists
    seed: int
    response: int | None    # None: the seed itself

    @property
    def path(self) -> str:
        tail = f"/{self.response}" if self.response is not None else ""
        return f"/{self.kind}/{self.seed}/response{tail}"

    @property
    def collection_path(self) -> str:
        """Where responses to this content are POSTed: always the seed's collection."""
        return f"/{self.kind}/{self.seed}/response"

    def canonical(self, site_url: str) -> str:
        return site_url.rstrip("/") + self.path


def _bare_host(host: str) -> str:
    return host[4:] if host.startswith("www.") else host


def parse_content_url(text: str, site_url: str) -> ContentUrl:
    example = f"{site_url.rstrip('/')}/image/123/response"
    text = text.strip()
    if text.startswith("<") and text.endswith(">"):   # how mail clients wrap links
        text = text[1:-1].strip()
    if not text:
        raise BadUrl(f"no URL was given; write one like {example}")
    if any(c.isspace() for c in text):
        raise BadUrl(f"the URL {text!r} contains spaces; write one like {example}")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise BadUrl(f"{text!r} is not a URL; write one like {example}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise BadUrl(f"{text!r} is not a Torokiki web address; write one like {example}")
    site = urlsplit(site_url)
    host = (parts.hostname or "").lower()
    if "@" in parts.netloc or _bare_host(host) != _bare_host((site.hostname or "").lower()) \
            or port != site.port \
            or (not parts.netloc.isascii() and site.netloc.isascii()):  # U+212A (Kelvin) lower-cases to "k"
        raise BadUrl(f"{text!r} is not on {site.hostname}; only Torokiki content can be used, "
                     f"like {example}")
    if parts.query or parts.fragment:
        raise BadUrl(f"{text!r} has extra parts after the address (? or #); write it like {example}")
    found = _PATH.match(parts.path)
    if not found:
        raise BadUrl(f"{text!r} does not name Torokiki content; content addresses look like "
                     f"{example} or {example}/456")
    kind, seed, response = found.groups()
    return ContentUrl(kind=kind, seed=int(seed), response=int(response) if response else None)


# What a writer puts around or after an address that is not part of it: quotes (also the
# curly ones phones make), angle brackets, and the punctuation that ends a sentence.
_AROUND = "'\"\u2018\u2019\u201c\u201d\u00ab\u00bb<>"
_AFTER = ".,;:!?)"
MAX_SUGGESTED_CHARS = 1000   # a longer "URL" is no slip of the thumb
_LOOSE_PATH = re.compile(r"^/(image)/([0-9]{1,18})(?:/(?:response|respond)(?:/([0-9]{1,18}))?)?/?$")


def suggested_url(text: str, site_url: str) -> str | None:
    """The canonical content URL `text` most likely means, when it is not one and the fix is plain.

    Plain fixes: a missing or stray quote, spaces, a full stop after it, another host (or none)
    in front of a content path, extra ? or # parts, a seed without "/response".  None when the
    path names no content: then only the writer knows what was meant.
    """
    if len(text) > MAX_SUGGESTED_CHARS:
        return None
    candidate = "".join(text.split()).lstrip(_AROUND).rstrip(_AROUND + _AFTER)
    if "://" not in candidate:
        candidate = "http://" + candidate
    try:
        found = _LOOSE_PATH.match(urlsplit(candidate).path)
    except ValueError:
        return None
    if not found:
        return None
    kind, seed, response = found.groups()
    return ContentUrl(kind=kind, seed=int(seed), response=int(response) if response else None).canonical(site_url)


# The Message-ID of a reply about content names the content: a reply to that
# reply (In-Reply-To, References) says what it answers, on any host and after
# the journal has expired, with no state kept.
_OUR_MESSAGE_ID = re.compile(r"<torokiki\.(image)\.([0-9]{1,18})(?:\.([0-9]{1,18}))?\.[0-9a-f]{16}@([^<>@\s]+)>")


def message_id_about(url: ContentUrl, domain: str, unique: str) -> str:
    """Our Message-ID for a reply about `url`; `unique` is 16 hex digits."""
    tail = f".{url.response}" if url.response is not None else ""
    return f"<torokiki.{url.kind}.{url.seed}{tail}.{unique}@{domain}>"


def content_of_message_ids(text: str, domain: str) -> ContentUrl | None:
    """The content named by the last of our Message-IDs in `text` (an In-Reply-To or References value)."""
    found = None
    for match in _OUR_MESSAGE_ID.finditer(text):
        if match[4].lower() == domain.lower():
            kind, seed, response = match[1], match[2], match[3]
            found = ContentUrl(kind=kind, seed=int(seed), response=int(response) if response else None)
    return found


# With TOROKIKI_REPLY_SUBADDRESS, a reply about content says Reply-To:
# gateway+image.123.response.4@domain: the content's path with "." for "/", a
# dot-atom local part (RFC 5322) that names the content as the Message-ID does.
def subaddress_about(url: ContentUrl, gateway_address: str, delimiter: str) -> str:
    """The gateway's sub-address for answers to `url`: gateway+image.123.response.4@domain."""
    local, _, domain = gateway_address.rpartition("@")
    return f"{local}{delimiter}{url.path.strip('/').replace('/', '.')}@{domain}"


def content_of_subaddress(address: str, gateway_address: str, delimiter: str) -> ContentUrl | None:
    """The content a mail to one of the gateway's sub-addresses answers, or None.

    The local part decides, whatever the domain: a virtual alias (postfix/virtual)
    delivers gateway+image.1.response@torokiki.net as gateway+image.1.response@
    torokiki-pipe.invalid, and a sub-address only says which content is answered,
    as the subject's create-response-to would.
    """
    if not delimiter:
        return None
    extension = _extension(address, gateway_address, delimiter)
    found = _PATH.match("/" + extension.replace(".", "/")) if extension and "/" not in extension else None
    if not found:
        return None
    kind, seed, response = found.groups()
    return ContentUrl(kind=kind, seed=int(seed), response=int(response) if response else None)


def is_gateway_local_part(address: str, gateway_address: str, delimiter: str) -> bool:
    """gateway@ (any domain), or gateway+anything@ when sub-addresses are on."""
    local = address.strip().strip("<>").rpartition("@")[0].lower()
    ours = gateway_address.rpartition("@")[0].lower()
    return local == ours or _extension(address, gateway_address, delimiter) is not None


def _extension(address: str, gateway_address: str, delimiter: str) -> str | None:
    local = address.strip().strip("<>").rpartition("@")[0].lower()
    prefix = gateway_address.rpartition("@")[0].lower() + delimiter
    return local[len(prefix):] if delimiter and local.startswith(prefix) else None
