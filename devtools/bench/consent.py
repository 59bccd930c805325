"""A tutor's browser at the simulator's consent page: allow, and follow back to the callback."""

from __future__ import annotations

import re
from html import unescape
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx


class ConsentError(RuntimeError):
    """The consent page or its answer did not look like the simulator's."""


async def allow_consent(http: httpx.AsyncClient, authorize_url: str, *, email: str) -> str:
    """Submit the consent form as `email`; the callback's path and query (with a fresh code)."""
    page = await http.get(authorize_url)
    action = re.search(r'<form method="post" action="([^"]+)"', page.text)
    if action is None:
        raise ConsentError(f"no consent form at {authorize_url}: {page.text[:300]}")
    fields = {
        name: unescape(value)
        for name, value in re.findall(
            r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page.text
        )
    }
    fields |= {"email": email, "decision": "allow"}
    # Google's consent lists each scope with a checkbox, ticked by default: send
    # the ticked ones, as a browser does (devtools/provider_sim/oauth.py).
    ticked = [
        unescape(v)
        for v in re.findall(
            r'<input type="checkbox" name="granted_scope" value="([^"]*)" checked>', page.text
        )
    ]
    answer = await http.post(
        urljoin(authorize_url, unescape(action.group(1))),
        data={**fields, "granted_scope": ticked},
    )
    back = urlsplit(answer.headers.get("location", ""))
    if "code" not in parse_qs(back.query):
        raise ConsentError(f"consent answered without a code: {back.query[:200]}")
    return f"{back.path}?{back.query}"
