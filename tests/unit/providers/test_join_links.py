"""Join links from providers are checked before anyone is sent to them (issue #18)."""

from __future__ import annotations

import pytest

from services.core.links import checked_join_url
from services.providers._google import meet_link


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(document.cookie)",
        "JAVASCRIPT:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "https://",
        "https:///path-without-host",
        "//evil.example/phish",
        "https://meet.google.com/abc\r\nSet-Cookie: x=1",
        "https://zoom.us/j/1 onmouseover=alert(1)",
        "ftp://zoom.us/j/1",
        "",
        None,
        42,
        "https://zoom.us/" + "a" * 3000,
    ],
)
def test_what_is_not_a_web_link_is_refused(url: object) -> None:
    assert checked_join_url(url, allow_http=True) is None


def test_https_passes_and_http_only_against_a_local_simulator() -> None:
    assert checked_join_url("https://zoom.us/j/123?pwd=x", allow_http=False) == (
        "https://zoom.us/j/123?pwd=x"
    )
    assert checked_join_url("http://127.0.0.1:18090/zoom/j/1", allow_http=False) is None
    assert checked_join_url("http://127.0.0.1:18090/zoom/j/1", allow_http=True) == (
        "http://127.0.0.1:18090/zoom/j/1"
    )


def test_a_meet_event_with_a_hostile_link_has_no_link() -> None:
    hostile = {"hangoutLink": "javascript:alert(1)"}
    assert meet_link(hostile) is None
    entry = {"conferenceData": {"entryPoints": [{"entryPointType": "video", "uri": "data:x"}]}}
    assert meet_link(entry) is None
    good = {"hangoutLink": "https://meet.google.com/abc-defg-hij"}
    assert meet_link(good) == "https://meet.google.com/abc-defg-hij"
