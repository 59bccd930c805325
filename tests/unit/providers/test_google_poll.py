"""The re-reads of a pending Meet conference: soon at first, then further apart (issue 21)."""

from __future__ import annotations

from services.providers._google import conference_poll_waits


def test_the_first_re_read_comes_soon_then_the_waits_double_up_to_the_interval() -> None:
    assert conference_poll_waits(first_s=0.1, cap_s=0.5, attempts=5) == [0.1, 0.2, 0.4, 0.5, 0.5]
    # a first wait above the interval is the interval; no attempts, no waits
    assert conference_poll_waits(first_s=2.0, cap_s=0.5, attempts=2) == [0.5, 0.5]
    assert conference_poll_waits(first_s=0.1, cap_s=0.5, attempts=0) == []
