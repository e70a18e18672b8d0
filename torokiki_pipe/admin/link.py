"""``torokiki-pipe link [--config FILE] [--html] URL``: the website's "Answer by email" link.

Prints, on one line, the ``mailto:`` URI of the mail that answers the content
at URL: to TOROKIKI_GATEWAY_ADDRESS, subject ``create-response-to: 'URL'`` with
URL in its canonical form on TOROKIKI_SITE_URL.  It is the very link of a
content reply's "Answer it with a photo or words" (templates/mailto-answer.txt,
encoded by stages/s7_links.py), so the website's button and the gateway's
mails agree on one format.  ``--html`` prints a small HTML snippet instead
(templates/answer-button.html), the URI escaped for the attribute.

Exits 0; EX_DATAERR (65) when URL is not content on the site, with the reason
on stderr; EX_CONFIG (78) when the configuration does not load.
"""

from __future__ import annotations

import os
import sys

from torokiki_pipe.arguments import UsageParser


def parse_args(argv):
    parser = UsageParser(prog="torokiki-pipe link",
                         description="Print the mailto: link that answers a piece of Torokiki content by "
                                     "email, for the website's \"Answer by email\" button.")
    parser.add_argument("url", metavar="URL", help="the content's address, e.g. http://torokiki.net/image/1/response")
    parser.add_argument("--html", action="store_true", help="print an HTML snippet (<a href=...>) instead")
    return parser.parse_args(argv)


def main(argv) -> int:
    args = parse_args(argv)
    from torokiki_pipe import config as configuration
    from torokiki_pipe.stages.s5_understand.urls import BadUrl, parse_content_url
    from torokiki_pipe.stages.s7_reply import html_escaped, link, render

    try:
        settings = configuration.load(args.config)
    except configuration.ConfigError as error:
        print(f"torokiki-pipe link: configuration: {error}", file=sys.stderr)
        return os.EX_CONFIG
    try:
        url = parse_content_url(args.url, settings.site_url).canonical(settings.site_url)
    except BadUrl as error:
        print(f"torokiki-pipe link: {error}", file=sys.stderr)
        return os.EX_DATAERR
    answer = link("mailto-answer.txt", {"url": url, "site": settings.site_url}, settings.gateway_address)
    if args.html:
        answer = render("answer-button.html", html_escaped({"answer_link": answer}))[1].rstrip("\n")
    print(answer)
    return os.EX_OK
