"""The content API of torokiki-api.md, as the reference website enforces it.

Each rule names the section of torokiki-api.md it carries out.  Only the website's side is
here: which URLs in mail the gateway accepts, how it normalises them and how it reads the
answers are the gateway's own.

"Content URLs"
    CONTENT_PATH is the path of a seed or of a response (decimal ids, segment ``image``,
    then ``response``, an optional trailing ``/``); ``content_url`` is its canonical form
    (the site URL, the path, no trailing slash), the one ``validate`` accepts in
    ``InspiredBy`` and the one a saved response's Location gives.
"The content object (JSON)"
    CONTENT_FIELDS, and ``validate``: ``Text`` or ``Attachment``, never both; ``Tags`` a
    list of strings; ``Attachment.data`` base64 without line breaks (``is_base64``).
"Submitting a response"
    ``validate``: ``InspiredBy`` names the seed whose collection the POST went to, or a
    stored response of that seed.  SAVED_STATUSES are the answers that mean "saved".

Where the page is silent the website is strict (``InspiredBy`` required; ``Text``,
``Submitter``, ``Objective``, ``Location`` and each tag non-empty; ``APICaller`` an object;
``Attachment.name`` a file name, not a path; no field the page does not name), so that a
gateway which passes here sends what any reading of the page allows.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torokiki_pipe.reference_site.store import Store

# "Content URLs": the path of seed `seed`, or (with `id`) of its response `id`.
CONTENT_PATH = re.compile(r"^/image/(?P<seed>[0-9]+)/response(?:/(?P<id>[0-9]+))?/?$")
# "The content object (JSON)": every field the object may have.
CONTENT_FIELDS = {"Submitter", "InspiredBy", "Text", "Tags", "Objective", "Location",
                  "Attachment", "APICaller"}
# "Submitting a response": the statuses (with a Location) that mean the response was saved.
SAVED_STATUSES = (201, 301, 302, 303)


class Invalid(Exception):
    """The submitted content breaks the contract; str() says how (the 400 answer's error)."""


def content_url(site_url: str, seed: int, response: int | None = None) -> str:
    """The canonical URL of seed `seed`, or of its response `response`; `site_url` ends without "/"."""
    return f"{site_url}/image/{seed}/response" + ("" if response is None else f"/{response}")


def validate(content: Any, seed: int, store: Store) -> None:
    """Raise Invalid unless `content` may be stored as a response POSTed to seed `seed`.

    `store` says the site URL and which responses exist; nothing is written.
    """
    if not isinstance(content, dict):
        raise Invalid("the body must be a JSON object")
    unknown = sorted(set(content) - CONTENT_FIELDS)
    if unknown:
        raise Invalid(f"unknown field(s): {', '.join(unknown)}")

    # "Content URLs" (the canonical form) and "Submitting a response" (the seed posted to).
    inspired = content.get("InspiredBy")
    if not isinstance(inspired, str) or not inspired:
        raise Invalid("InspiredBy is required")
    prefix = content_url(store.site_url, seed)
    rest = inspired[len(prefix):] if inspired.startswith(prefix) else None
    if rest == "":
        pass                                                 # the seed itself
    elif rest is not None and re.fullmatch(r"/[0-9]+", rest):
        if store.response(seed, int(rest[1:])) is None:
            raise Invalid(f"InspiredBy names no response of seed {seed}: {inspired}")
    else:
        raise Invalid(f"InspiredBy must be {prefix} or {prefix}/ID (canonical, no trailing slash), "
                      f"not {inspired!r}")

    # "The content object (JSON)".
    has_text, has_attachment = "Text" in content, "Attachment" in content
    if has_text == has_attachment:
        raise Invalid("exactly one of Text and Attachment is required")
    if has_text and (not isinstance(content["Text"], str) or not content["Text"].strip()):
        raise Invalid("Text must be a non-empty string")
    if has_attachment:
        attachment = content["Attachment"]
        if not isinstance(attachment, dict) or set(attachment) != {"name", "data"}:
            raise Invalid("Attachment must be an object with exactly name and data")
        if not isinstance(attachment["name"], str) or not attachment["name"].strip():
            raise Invalid("Attachment.name must be a non-empty string")
        if "/" in attachment["name"] or "\\" in attachment["name"]:
            raise Invalid("Attachment.name must be a file name, not a path")
        data = attachment["data"]
        if not isinstance(data, str):
            raise Invalid("Attachment.data must be a base64 string")
        if not data.strip("="):
            raise Invalid("Attachment.data is empty")
        if not is_base64(data):
            raise Invalid("Attachment.data is not valid base64 (no line breaks allowed)")

    if "Tags" in content:
        tags = content["Tags"]
        if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
            raise Invalid("Tags must be a list of non-empty strings")
    for field in ("Submitter", "Objective", "Location"):
        if field in content and (not isinstance(content[field], str) or not content[field].strip()):
            raise Invalid(f"{field} must be a non-empty string")
    if "APICaller" in content and not isinstance(content["APICaller"], dict):
        raise Invalid("APICaller must be an object")


_BASE64_LETTERS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def is_base64(text: str) -> bool:
    """Canonical base64 (RFC 4648, padded, no line breaks), checked without decoding it."""
    try:
        data = text.encode("ascii")
    except UnicodeEncodeError:
        return False
    rest = data.translate(None, _BASE64_LETTERS)      # what is not a letter: at most "==", at the end
    return len(data) % 4 == 0 and rest in (b"", b"=", b"==") and data.endswith(rest)
