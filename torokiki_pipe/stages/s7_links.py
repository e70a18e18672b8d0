"""The mailto: links of the replies: one tap opens the next mail, ready to send.

Pure.  A link is an RFC 6068 ``mailto:`` URI: the gateway's address, then
``?subject=...&body=...``, every value percent-encoded as RFC 3986 says, in
UTF-8, line breaks in the body as ``%0D%0A``.  The same URI is the ``href`` of
the HTML part (escaped there as any attribute is) and a plain line in the text
part, which mail apps make tappable.  `torokiki-pipe link` prints the link of
the website's "Answer by email" button from here, so the site and the gateway
agree on one format.
"""

from __future__ import annotations

from urllib.parse import quote

# The address keeps "@" and "+" (a sub-address): both are RFC 6068 `some-delims`, literal in
# a URI's path.  A header value keeps only ":" and "@", which read well in "get: 'URL'" and
# which no linkifier, form decoder or HTML attribute treats specially; everything else is
# percent-encoded, which RFC 6068 always allows: "&", "=", "#", "%" and "?" must be, "+" is
# read as a space by form decoders (urllib's parse_qs among them), and "'", "(", ")" and "!"
# end a link early in some mail apps' linkifiers.
ADDRESS_SAFE = "@+"
VALUE_SAFE = ":@"


def mailto(address: str, subject: str = "", body: str = "") -> str:
    """The mailto: URI of a mail to `address` with this subject and body (either may be empty)."""
    fields = []
    if subject:
        fields.append("subject=" + quote(subject, safe=VALUE_SAFE))
    if body:
        # RFC 6068, section 5: a line break in the body is written CRLF, as %0D%0A.
        crlf = body.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\r\n")
        fields.append("body=" + quote(crlf, safe=VALUE_SAFE))
    return "mailto:" + quote(address, safe=ADDRESS_SAFE) + ("?" + "&".join(fields) if fields else "")
