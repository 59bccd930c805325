"""Links that reach people: a join link goes into an `href` on our pages and in emails.

Nothing that arrives is trusted: a provider's answer or an event could carry
`javascript:` or `data:` "links". Only what `checked_join_url` passes is shown.
"""

from __future__ import annotations

from urllib.parse import urlsplit


def checked_join_url(url: object, *, allow_http: bool) -> str | None:
    """A join link a provider sent, if it is one a student may be sent to; else None.

    Nothing that arrives is trusted: the link ends up in an `href` on our
    pages and in emails, so only `https://` links with a host pass (`http://`
    too when the client talks to a local simulator over http, `allow_http`).
    A provider answer without a usable link is handled as one without a link.
    """
    if not isinstance(url, str) or not url or len(url) > 2048:
        return None
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme.lower() not in schemes or not parts.hostname:
        return None
    return url
